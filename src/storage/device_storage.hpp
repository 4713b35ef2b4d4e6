// Which storage backend a device load ("cuda:N") reads with: GPUDirect Storage straight into
// device memory, or a host backend feeding the staged pipeline (src/core/staged_pipeline.*).
//
//   backend "gds"   GdsStorage in whatever mode cuFile offers (GDS or compatibility mode)
//   backend "auto"  GdsStorage when cuFile runs in GDS mode (nvidia-fs loaded), else staged:
//                   in compatibility mode cuFile is itself a bounce-buffer pipeline, and ours
//                   overlaps reads and copies at least as well
//   any other name  staged through that host backend
//
// Everything that can rule GDS out is checked before a byte is read, in this order: the CUDA
// device (its failure is the load's error, not a fallback: the staged pipeline needs it too),
// the cuFile library, cuFileDriverOpen (src/device/cufile_shim.hpp says why in that order),
// cuFileHandleRegister of every file, and the placement of every tensor (reading the aligned
// superset of a file leaves its data section `data_offset % 4096` bytes into a device buffer;
// a tensor that would then be misaligned for its dtype rules GDS out for the load). On any of
// them the load falls back to the staged pipeline through "auto" and, unless the fallback is
// the expected outcome of "auto" (no cuFile library, compatibility mode), writes exactly one
// line to stderr saying why. Handles registered before the failure are deregistered first.
//
// Thread safety: one call per load; no shared state.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "warpload/device.hpp"
#include "warpload/plan.hpp"
#include "warpload/storage.hpp"

namespace warpload::detail {

struct DeviceStorage {
  std::shared_ptr<Storage> storage;
  // Opened (and registered) by GdsStorage, one per planned file in plan order; empty when the
  // load goes through the staged pipeline, whose backend opens files itself.
  std::vector<std::unique_ptr<StorageFile>> files;
  bool gds_compat_mode = false;  // GdsStorage chosen and cuFile runs in compatibility mode
  std::string gds_fallback;      // why GDS was tried and not used; empty otherwise
};

// Chooses and creates the backend for a device load of `files` onto `device` (see the top of
// this file). `backend` is the resolved name ("auto", "gds", or a host backend); `options`
// are the backend options (cuda_device is set here). Throws what make_storage() throws for a
// host backend, UnsupportedError when the device itself is unusable, and NotFoundError /
// IoError when a file cannot be opened.
[[nodiscard]] DeviceStorage choose_device_storage(std::string_view backend, StorageOptions options,
                                                  Device device,
                                                  std::span<const PlannedFile> files);

}  // namespace warpload::detail
