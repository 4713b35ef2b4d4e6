#include "device/nccl_shim.hpp"

#include <cstdlib>
#include <map>
#include <mutex>

#include "common/shared_library.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

const LibrarySpec& nccl_library() {
  static const LibrarySpec spec{.what = "NCCL",
                                .soname = "libnccl.so.2",
                                .env_var = "WARPLOAD_NCCL_LIB",
                                .defaults = {},
                                .missing_hint = "NCCL is not installed",
                                .env_hint = "",
                                .symbol_hint = "not a libnccl.so.2, or one older than NCCL 2.7"};
  return spec;
}

}  // namespace

std::string nccl_library_name() { return nccl_library().candidates().front(); }

std::unique_ptr<NcclApi> load_nccl_api(const std::string& library) {
  // Never unloaded: communicators may outlive everything else. (RTLD_LOCAL, as every shim:
  // torch may bring its own NCCL.)
  SharedLibrary opened = SharedLibrary::open_path(nccl_library(), library);
  auto api = std::make_unique<NcclApi>();
  api->library = library;
  opened.bind({
      {"ncclGetVersion", &api->get_version},
      {"ncclGetUniqueId", &api->get_unique_id},
      {"ncclCommInitRank", &api->comm_init_rank},
      {"ncclCommDestroy", &api->comm_destroy},
      {"ncclCommAbort", &api->comm_abort},
      {"ncclCommGetAsyncError", &api->comm_get_async_error},
      {"ncclGetErrorString", &api->get_error_string},
      {"ncclAllGather", &api->all_gather},
      {"ncclBroadcast", &api->broadcast},
      {"ncclSend", &api->send},
      {"ncclRecv", &api->recv},
      {"ncclGroupStart", &api->group_start},
      {"ncclGroupEnd", &api->group_end},
  });
  static_cast<void>(opened.release());
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
