#include "device/nccl_shim.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr const char* kLibraryName = "libnccl.so.2";

template <typename Fn>
void bind(void* handle, const std::string& library, const char* symbol, Fn* slot) {
  dlerror();
  void* address = dlsym(handle, symbol);
  if (address == nullptr) {
    throw UnsupportedError("NCCL library '" + library + "' has no symbol '" + symbol +
                           "' (not a libnccl.so.2, or one older than NCCL 2.7)");
  }
  *slot = reinterpret_cast<Fn>(address);
}

}  // namespace

std::string nccl_library_name() {
  const char* explicit_path = std::getenv("WARPLOAD_NCCL_LIB");
  return explicit_path != nullptr && *explicit_path != '\0' ? explicit_path : kLibraryName;
}

std::unique_ptr<NcclApi> load_nccl_api(const std::string& library) {
  // RTLD_LOCAL: keep NCCL's symbols out of other libraries' lookups (torch may bring its own
  // NCCL). Never dlclosed: communicators may outlive everything else.
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* reason = dlerror();
    throw UnsupportedError("cannot load the NCCL library '" + library +
                           "': " + (reason != nullptr ? reason : "unknown reason") +
                           " (NCCL is not installed; set WARPLOAD_NCCL_LIB to the full path of "
                           "libnccl.so.2)");
  }
  auto api = std::make_unique<NcclApi>();
  api->library = library;
  bind(handle, library, "ncclGetVersion", &api->get_version);
  bind(handle, library, "ncclGetUniqueId", &api->get_unique_id);
  bind(handle, library, "ncclCommInitRank", &api->comm_init_rank);
  bind(handle, library, "ncclCommDestroy", &api->comm_destroy);
  bind(handle, library, "ncclCommAbort", &api->comm_abort);
  bind(handle, library, "ncclCommGetAsyncError", &api->comm_get_async_error);
  bind(handle, library, "ncclGetErrorString", &api->get_error_string);
  bind(handle, library, "ncclAllGather", &api->all_gather);
  bind(handle, library, "ncclBroadcast", &api->broadcast);
  bind(handle, library, "ncclSend", &api->send);
  bind(handle, library, "ncclRecv", &api->recv);
  bind(handle, library, "ncclGroupStart", &api->group_start);
  bind(handle, library, "ncclGroupEnd", &api->group_end);
  if (api->get_version(&api->version) != WARPLOAD_NCCL_SUCCESS) api->version = 0;
  return api;
}

const NcclApi& nccl_api() {
  // Leaked on purpose (tables stay valid through static destruction); guarded by the mutex.
  // Failures are not cached: a later call with another $WARPLOAD_NCCL_LIB may succeed.
  static auto* const mutex = new std::mutex;
  static auto* const loaded = new std::map<std::string, std::unique_ptr<NcclApi>>;
  const std::string library = nccl_library_name();
  const std::lock_guard<std::mutex> lock(*mutex);
  auto it = loaded->find(library);
  if (it == loaded->end()) it = loaded->emplace(library, load_nccl_api(library)).first;
  return *it->second;
}

}  // namespace warpload::detail
