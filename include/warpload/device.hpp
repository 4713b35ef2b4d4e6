// Devices and their memory: where a load puts tensors.
//
// Devices are named "cpu" or "cuda:N" (N the local ordinal, as CUDA_VISIBLE_DEVICES numbers
// them). CUDA is reached through the driver API loaded at run time (libcuda.so.1, or the
// path in $WARPLOAD_CUDA_LIB): nothing CUDA is needed to build, and on a machine without a
// GPU every host feature works while "cuda:N" fails with UnsupportedError naming what is
// missing. warpload uses the device's primary context (so it shares PyTorch's) and never
// touches a device it was not asked for.
//
// Thread safety: all functions may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "warpload/memory.hpp"

namespace warpload {

struct Device {
  enum class Kind : std::uint8_t { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;  // CUDA ordinal; 0 for the CPU

  // "cpu", "cuda" (= cuda:0), "cuda:N". Throws std::invalid_argument for anything else.
  [[nodiscard]] static Device parse(std::string_view name);
  [[nodiscard]] std::string name() const;  // "cpu" or "cuda:N"
  [[nodiscard]] bool is_cuda() const noexcept { return kind == Kind::kCuda; }
};

// Whether the CUDA driver can be loaded and reports at least one device. noexcept: a missing
// driver is an answer, not an error.
[[nodiscard]] bool cuda_available() noexcept;

// Device memory of `device` (cuMemAlloc in its primary context), MemoryKind::kDevice; buffers
// are aligned to at least 256 bytes. Throws UnsupportedError when CUDA or the device is
// missing, OutOfMemoryError when an allocation fails.
[[nodiscard]] std::shared_ptr<Allocator> make_cuda_allocator(Device device);

// Page-locked host memory usable for asynchronous copies to `device`
// (MemoryKind::kPinnedHost). Same errors as make_cuda_allocator().
[[nodiscard]] std::shared_ptr<Allocator> make_pinned_allocator(Device device);

// Host memory from `source` (a host allocator: anonymous huge pages, 3FS iovs, ...) page-locked
// for `device` with cuMemHostRegister when each buffer is made, and unregistered before the
// source's buffer is freed (MemoryKind::kPinnedHost; `data()` is the source buffer's; the
// pages are faulted in before registration, so a new buffer's contents are unspecified). Same
// errors as make_cuda_allocator(); a refused registration is an Error naming the device and
// the byte count. Thread safety: allocate() from any thread.
[[nodiscard]] std::shared_ptr<Allocator> make_registered_allocator(
    Device device, std::shared_ptr<Allocator> source);

// Device loads through a backend whose own memory can be the staging ring (3FS: iovs) keep
// that ring's page-locked slots in a process-wide pool and reuse them in every later load
// (docs/architecture.md, "Ring memory"). This frees every idle slot now (unregistered, then
// released to its source: for 3FS the iov and its /dev/shm segment); slots a running load
// holds are freed when it drops them. It also runs at exit. Returns the bytes freed now.
// Thread safety: any thread, any time.
std::uint64_t release_staging_pools() noexcept;

// Bytes of slot memory the pools hold now (idle or lent to a running load).
[[nodiscard]] std::uint64_t staging_pool_bytes() noexcept;

// Free and total memory of `device` in bytes, as the driver reports them (cuMemGetInfo in the
// device's primary context, retained for the call only). Memory other processes hold counts
// as used. Same errors as make_cuda_allocator().
struct DeviceMemoryInfo {
  std::uint64_t free_bytes = 0;
  std::uint64_t total_bytes = 0;
};
[[nodiscard]] DeviceMemoryInfo cuda_memory_info(Device device);

// The pinned host-to-device copy rate of `device`, the ceiling of any load into it from host
// memory: `bytes` of page-locked memory (make_pinned_allocator) copied into one device buffer
// with cuMemcpyHtoDAsync on one stream and waited for, `runs` times (after one untimed warm-up
// copy); returns the best rate in GB/s (1e9 bytes per second). Same errors as
// make_cuda_allocator().
[[nodiscard]] double measure_pinned_copy_gbps(Device device,
                                              std::uint64_t bytes = std::uint64_t{256} << 20,
                                              unsigned runs = 5);

}  // namespace warpload
