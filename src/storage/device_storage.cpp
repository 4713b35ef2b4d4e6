#include "storage/device_storage.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "device/cuda_shim.hpp"
#include "device/cufile_shim.hpp"
#include "storage/backends.hpp"
#include "warpload/dtype.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

// Why the files cannot be read straight into device buffers by GDS, or "" when they can.
std::string placement_problem(std::span<const PlannedFile> files,
                              std::span<const std::unique_ptr<StorageFile>> opened) {
  for (std::size_t i = 0; i < files.size(); ++i) {
    const Header& h = files[i].header;
    const std::uint64_t a = opened[i]->alignment();
    // The loader reads [align_down(data_offset, a), ...) into a buffer aligned to max(a, 256),
    // so the data section starts `data_offset % a` bytes in.
    const std::uint64_t shift = h.data_offset() % a;
    for (const TensorInfo& t : h.tensors) {
      if (t.nbytes() == 0 || (shift + t.begin) % dtype_alignment(t.dtype) == 0) continue;
      return files[i].path.string() + ": tensor '" + t.name +
             "' would not be aligned to its element size in a buffer read with O_DIRECT (data "
             "section at file offset " +
             std::to_string(h.data_offset()) + ")";
    }
  }
  return {};
}

// Whether the nvidia-fs kernel module is loaded ($WARPLOAD_NVIDIA_FS_PATH, for tests: the path
// whose existence says so). Without it cuFile can only run in compatibility mode, which
// "auto" never picks, so auto skips loading cuFile and opening its driver (about 0.5 s per
// load on the H200 machine, docs/performance.md).
bool nvidia_fs_loaded() {
  std::error_code ec;
  const char* path = std::getenv("WARPLOAD_NVIDIA_FS_PATH");
  if (path != nullptr && *path != '\0') return std::filesystem::exists(path, ec);
  return std::filesystem::exists("/proc/driver/nvidia-fs", ec) ||
         std::filesystem::exists("/sys/module/nvidia_fs", ec);
}

}  // namespace

DeviceStorage choose_device_storage(std::string_view backend, StorageOptions options, Device device,
                                    std::span<const PlannedFile> files) {
  options.cuda_device = device.index;
  DeviceStorage chosen;
  if (backend != "gds" && backend != "auto") {
    chosen.storage = make_storage(backend, options);
    return chosen;
  }
  // The device first: without it neither path can run, and its error is the load's.
  check_cuda_device(device.index);

  bool quiet = false;  // the fallback is what "auto" expects on this machine: say nothing
  std::string reason;
  try {
    if (backend == "auto") {
      if (!nvidia_fs_loaded()) {
        quiet = true;
        throw UnsupportedError(
            "the nvidia-fs kernel module is not loaded, so cuFile could only run in "
            "compatibility mode: staged pipeline preferred");
      }
      try {
        (void)cufile_api();
      } catch (const UnsupportedError&) {
        quiet = true;
        throw;
      }
    }
    CufileMode mode = CufileMode::kCompat;
    std::shared_ptr<Storage> gds = make_gds_storage(options, &mode);
    if (backend == "auto" && mode == CufileMode::kCompat) {
      quiet = true;
      throw UnsupportedError(
          "cuFile runs in compatibility mode (no nvidia-fs): staged pipeline preferred");
    }
    chosen.files.reserve(files.size());
    for (const PlannedFile& planned : files) chosen.files.push_back(gds->open(planned.path));
    reason = placement_problem(files, chosen.files);
    if (reason.empty()) {
      chosen.storage = std::move(gds);
      chosen.gds_compat_mode = mode == CufileMode::kCompat;
      return chosen;
    }
  } catch (const UnsupportedError& e) {
    reason = e.what();
  }
  chosen.files.clear();  // deregisters every handle registered so far
  chosen.gds_fallback = reason;
  if (!quiet) {
    std::fprintf(stderr, "warpload: gds not used for %s, staged pipeline instead: %s\n",
                 device.name().c_str(), reason.c_str());
  }
  chosen.storage = make_storage("auto", options);
  return chosen;
}

}  // namespace warpload::detail
