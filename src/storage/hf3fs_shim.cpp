#include "storage/hf3fs_shim.hpp"

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "common/shared_library.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr const char* kLibraryName = "libhf3fs_api_shared.so";

// The defaults depend on HF3FS_LIB_DIR, so the spec is built per call.
LibrarySpec hf3fs_library() {
  LibrarySpec spec{.what = "3FS USRBIO",
                   .soname = kLibraryName,
                   .env_var = "WARPLOAD_HF3FS_LIB",
                   .defaults = {},
                   .missing_hint = "",
                   .env_hint = "or HF3FS_LIB_DIR to its folder",
                   .symbol_hint = "not a libhf3fs_api_shared.so, or too old for warpload"};
  const char* folder = std::getenv("HF3FS_LIB_DIR");
  if (folder != nullptr && *folder != '\0') {
    spec.defaults = {std::string(folder) + "/" + kLibraryName};
  }
  return spec;
}

// Never unloaded once bound: iovs made through it may outlive every warpload object. A
// library without the symbols is closed again (nothing from it is in use yet).
std::unique_ptr<Hf3fsApi> load(const std::string& library) {
  SharedLibrary opened = SharedLibrary::open_path(hf3fs_library(), library);
  auto api = std::make_unique<Hf3fsApi>();
  api->library = library;
  opened.bind({
      {"hf3fs_is_hf3fs", &api->is_hf3fs},
      {"hf3fs_extract_mount_point", &api->extract_mount_point},
      {"hf3fs_iovcreate", &api->iovcreate},
      {"hf3fs_iovdestroy", &api->iovdestroy},
      {"hf3fs_iorcreate4", &api->iorcreate4},
      {"hf3fs_iordestroy", &api->iordestroy},
      {"hf3fs_reg_fd", &api->reg_fd},
      {"hf3fs_dereg_fd", &api->dereg_fd},
      {"hf3fs_prep_io", &api->prep_io},
      {"hf3fs_submit_ios", &api->submit_ios},
      {"hf3fs_wait_for_ios", &api->wait_for_ios},
  });
  static_cast<void>(opened.release());
  return api;
}

}  // namespace

std::string hf3fs_library_path() { return hf3fs_library().candidates().front(); }

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
