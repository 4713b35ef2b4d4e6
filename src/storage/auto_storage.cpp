// AutoStorage: picks, per file at open(), the way that file reads fastest.
//
// - Small files (< kAutoDirectMinSize) and files mostly in the page cache: buffered, served by
//   the thread-pool engine (memory-bound: two threads copying out of the page cache).
// - Large cold files: O_DIRECT, served by io_uring with many reads in flight (the thread-pool
//   engine when io_uring is unavailable); no page cache copy and no page cache pollution. A
//   filesystem that refuses O_DIRECT leaves the file buffered.
//
// The choice is visible as StorageFile::direct(), and read() routes on exactly that, so it
// also routes files it did not open (decorators) correctly. When one read() has files of both
// kinds, the O_DIRECT group runs on a helper thread (it mostly waits on the device) while the
// calling thread and the pool copy the buffered group.
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "storage/backends.hpp"

namespace warpload::detail {
namespace {

// cachestat(2) (Linux 6.5); defined here because older kernel headers lack it.
constexpr long kCachestatSyscall = 451;
struct CachestatRange {
  std::uint64_t offset;
  std::uint64_t length;  // 0: to the end of the file
};
struct Cachestat {
  std::uint64_t nr_cache;
  std::uint64_t nr_dirty;
  std::uint64_t nr_writeback;
  std::uint64_t nr_evicted;
  std::uint64_t nr_recently_evicted;
};

// Resident fraction by mincore() over a temporary shared mapping; touches no page.
double mincore_fraction(int fd, std::uint64_t size) noexcept {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return 0.0;
  constexpr std::uint64_t kWindow = 1ULL << 30;  // bounds the vector for huge files
  std::uint64_t resident = 0;
  std::uint64_t pages = 0;
  try {
    std::vector<unsigned char> present;
    for (std::uint64_t at = 0; at < size; at += kWindow) {
      const std::uint64_t length = std::min(kWindow, size - at);
      present.assign((length + page - 1) / page, 0);
      if (::mincore(static_cast<char*>(map) + at, length, present.data()) != 0) break;
      for (const unsigned char bits : present) resident += bits & 1U;
      pages += present.size();
    }
  } catch (...) {
    pages = 0;  // no memory for the vector: say "cold"
  }
  ::munmap(map, size);
  return pages == 0 ? 0.0 : static_cast<double>(resident) / static_cast<double>(pages);
}

class AutoStorage final : public Storage {
 public:
  explicit AutoStorage(const StorageOptions& options)
      : threads_(options.threads != 0 ? options.threads : default_posix_threads()),
        direct_threads_(options.threads != 0 ? options.threads : kUringThreads),
        queue_depth_(options.queue_depth != 0 ? std::min(options.queue_depth, 4096U)
                                              : kUringQueueDepth),
        buffered_block_(options.block_size != 0 ? options.block_size : kBufferedBlockSize),
        direct_block_(options.block_size != 0 ? options.block_size : kDirectBlockSize) {
    capabilities_.name = "auto";
  }

  [[nodiscard]] const StorageCapabilities& capabilities() const noexcept override {
    return capabilities_;
  }

  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    const OpenedFile opened = open_file(path, /*direct=*/false);
    UniqueFd fd(opened.fd);
    std::size_t alignment = 1;
    if (opened.size >= kAutoDirectMinSize && page_cache_fraction(fd.get(), opened.size) < 0.5) {
      alignment = enable_direct(fd.get());  // stays buffered (1) if the filesystem refuses
    }
    auto file = std::make_unique<StorageFile>(path, fd.get(), opened.size, alignment);
    static_cast<void>(fd.release());
    return file;
  }

  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    std::vector<ReadRequest> buffered;
    std::vector<ReadRequest> direct;
    for (const ReadRequest& request : requests) {
      (request.file->direct() ? direct : buffered).push_back(request);
    }

    std::atomic<bool> stop{false};
    ReadTracker buffered_tracker(buffered, buffered_block_, control, &stop);
    ReadTracker direct_tracker(direct, direct_block_, control, &stop);
    const auto run_direct = [&] {
      if (uring_available()) {
        run_uring_reads(direct_tracker, direct, direct_threads_, queue_depth_);
      } else {
        run_posix_reads(direct_tracker, direct_threads_);
      }
    };

    if (buffered.empty() || direct.empty()) {
      if (!direct.empty()) run_direct();
      if (!buffered.empty()) run_posix_reads(buffered_tracker, threads_);
    } else {
      std::thread helper;
      try {
        helper = std::thread(run_direct);
      } catch (...) {
        run_direct();  // no thread to overlap with: one group after the other
      }
      run_posix_reads(buffered_tracker, threads_);
      if (helper.joinable()) helper.join();
    }
    buffered_tracker.finish();
    direct_tracker.finish();
  }

 private:
  StorageCapabilities capabilities_;
  unsigned threads_;         // buffered group (thread pool)
  unsigned direct_threads_;  // O_DIRECT group (rings)
  unsigned queue_depth_;
  std::uint64_t buffered_block_;
  std::uint64_t direct_block_;
};

}  // namespace

double page_cache_fraction(int fd, std::uint64_t size) noexcept {
  if (size == 0) return 1.0;
  CachestatRange range{0, 0};
  Cachestat stat{};
  if (::syscall(kCachestatSyscall, fd, &range, &stat, 0U) == 0) {
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t pages = (size + page - 1) / page;
    return std::min(1.0, static_cast<double>(stat.nr_cache) / static_cast<double>(pages));
  }
  return mincore_fraction(fd, size);
}

std::unique_ptr<Storage> make_auto_storage(const StorageOptions& options) {
  return std::make_unique<AutoStorage>(options);
}

}  // namespace warpload::detail
