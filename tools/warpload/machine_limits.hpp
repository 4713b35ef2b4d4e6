// What this machine can do with a set of files, measured without warpload's code paths, so
// that `bench` can say how close each backend gets:
//
//   cold limit  sequential O_DIRECT reads of 1 MiB, one at a time, of every byte of every
//               file, into one reused aligned buffer: the device's streaming rate with the
//               simplest possible reader (fio --ioengine=psync --direct=1 --bs=1M).
//   warm limit  the files already in the page cache; two threads pread() alternate 8 MiB
//               chunks of each file into freshly mapped anonymous memory (no madvise, no
//               MAP_POPULATE), so the figure includes the page faults a real load pays.
//
// Plus the page-cache control the cold measurements need: residency via mincore() on a
// mapping of each file, and dropping via posix_fadvise(POSIX_FADV_DONTNEED).
//
// All functions throw warpload::IoError / NotFoundError naming the file on failure, and
// UnsupportedError when the file system refuses O_DIRECT. Not thread-safe with respect to
// each other (they use the page cache state of the same files).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

namespace warpload::cli {

struct Throughput {
  std::uint64_t bytes = 0;
  double seconds = 0;
  [[nodiscard]] double gbps() const noexcept {
    return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
  }
};

// One pass of the cold limit over whole files.
[[nodiscard]] Throughput measure_cold_limit(std::span<const std::filesystem::path> files);

// One pass of the warm limit over whole files. Call read_into_page_cache() first.
[[nodiscard]] Throughput measure_warm_limit(std::span<const std::filesystem::path> files);

// Reads every file once through the page cache.
void read_into_page_cache(std::span<const std::filesystem::path> files);

// Fraction (0..1) of the files' bytes resident in the page cache, from mincore().
[[nodiscard]] double page_cache_resident_fraction(std::span<const std::filesystem::path> files);

enum class CacheDrop : std::uint8_t {
  kFadvise,           // posix_fadvise(DONTNEED) emptied the cache for the files
  kFadviseAfterSync,  // it did once fdatasync() had written back pages still dirty
  kDropCaches,        // writing 1 to /proc/sys/vm/drop_caches did
  kFailed,            // nothing did: the files are still (partly) cached
};

[[nodiscard]] std::string_view cache_drop_name(CacheDrop drop) noexcept;

// Evicts the files from the page cache, trying the methods in CacheDrop's order and
// verifying each with page_cache_resident_fraction(). Files on tmpfs or ramfs live only in
// the page cache: for them it gives up after fadvise (kFailed) rather than write drop_caches.
[[nodiscard]] CacheDrop drop_page_cache(std::span<const std::filesystem::path> files);

}  // namespace warpload::cli
