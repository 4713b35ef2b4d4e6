#include "storage/hf3fs_shim.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr const char* kLibraryName = "libhf3fs_api_shared.so";

template <typename Fn>
void bind(void* handle, const std::string& library, const char* symbol, Fn* slot) {
  dlerror();  // clear a stale message
  void* address = dlsym(handle, symbol);
  if (address == nullptr) {
    throw UnsupportedError("3FS USRBIO library '" + library + "' has no symbol '" + symbol +
                           "' (not a libhf3fs_api_shared.so, or too old for warpload)");
  }
  *slot = reinterpret_cast<Fn>(address);
}

std::unique_ptr<Hf3fsApi> load(const std::string& library) {
  // RTLD_LOCAL: the library's own symbols must not satisfy other libraries' lookups.
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* reason = dlerror();
    throw NotFoundError("cannot load the 3FS USRBIO library '" + library +
                        "': " + (reason != nullptr ? reason : "unknown reason") +
                        " (set WARPLOAD_HF3FS_LIB to its full path, or HF3FS_LIB_DIR to its "
                        "folder)");
  }
  auto api = std::make_unique<Hf3fsApi>();
  api->library = library;
  try {
    bind(handle, library, "hf3fs_is_hf3fs", &api->is_hf3fs);
    bind(handle, library, "hf3fs_extract_mount_point", &api->extract_mount_point);
    bind(handle, library, "hf3fs_iovcreate", &api->iovcreate);
    bind(handle, library, "hf3fs_iovdestroy", &api->iovdestroy);
    bind(handle, library, "hf3fs_iorcreate4", &api->iorcreate4);
    bind(handle, library, "hf3fs_iordestroy", &api->iordestroy);
    bind(handle, library, "hf3fs_reg_fd", &api->reg_fd);
    bind(handle, library, "hf3fs_dereg_fd", &api->dereg_fd);
    bind(handle, library, "hf3fs_prep_io", &api->prep_io);
    bind(handle, library, "hf3fs_submit_ios", &api->submit_ios);
    bind(handle, library, "hf3fs_wait_for_ios", &api->wait_for_ios);
  } catch (...) {
    dlclose(handle);  // nothing from it is in use yet
    throw;
  }
  return api;
}

}  // namespace

std::string hf3fs_library_path() {
  const char* explicit_path = std::getenv("WARPLOAD_HF3FS_LIB");
  if (explicit_path != nullptr && *explicit_path != '\0') return explicit_path;
  const char* folder = std::getenv("HF3FS_LIB_DIR");
  if (folder != nullptr && *folder != '\0') return std::string(folder) + "/" + kLibraryName;
  return kLibraryName;
}

const Hf3fsApi& hf3fs_api() {
  // Leaked on purpose: tables must stay valid through static destruction (buffers may die late).
  static auto* const mutex = new std::mutex;
  static auto* const loaded = new std::map<std::string, std::unique_ptr<Hf3fsApi>>;
  const std::string library = hf3fs_library_path();
  const std::lock_guard<std::mutex> lock(*mutex);
  auto found = loaded->find(library);
  if (found == loaded->end()) found = loaded->emplace(library, load(library)).first;
  return *found->second;
}

bool hf3fs_available() noexcept {
  try {
    static_cast<void>(hf3fs_api());
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace warpload::detail
