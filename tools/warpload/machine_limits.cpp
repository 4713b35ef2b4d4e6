#include "machine_limits.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "warpload/error.hpp"

namespace warpload::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kColdBlock = std::size_t{1} << 20;
constexpr std::size_t kWarmChunk = std::size_t{8} << 20;
constexpr unsigned kWarmThreads = 2;
// At most this fraction of the bytes may stay resident for the files to count as cold.
constexpr double kColdEnough = 0.01;

std::string errno_text(int error_number) { return std::strerror(error_number); }

// An open descriptor, closed on destruction.
class FileDescriptor {
 public:
  FileDescriptor(const fs::path& path, int flags) : path_(path) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd_ >= 0) {
      return;
    }
    const int error_number = errno;
    if (error_number == ENOENT || error_number == ENOTDIR) {
      throw NotFoundError(path.string() + ": no such file");
    }
    if (error_number == EINVAL && (flags & O_DIRECT) != 0) {
      throw UnsupportedError(path.string() + ": the file system does not support O_DIRECT");
    }
    throw IoError(path.string() + ": open failed: " + errno_text(error_number), error_number, 0);
  }
  ~FileDescriptor() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;

  [[nodiscard]] int get() const noexcept { return fd_; }

  [[nodiscard]] std::uint64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int error_number = errno;
      throw IoError(path_.string() + ": fstat failed: " + errno_text(error_number), error_number,
                    0);
    }
    return static_cast<std::uint64_t>(st.st_size);
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

// Anonymous memory, unmapped on destruction.
class AnonymousMapping {
 public:
  explicit AnonymousMapping(std::size_t size) : size_(size) {
    if (size_ == 0) {
      return;
    }
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      throw OutOfMemoryError("cannot map " + std::to_string(size_) + " bytes of memory");
    }
    data_ = static_cast<std::byte*>(p);
  }
  ~AnonymousMapping() {
    if (data_ != nullptr) {
      ::munmap(data_, size_);
    }
  }
  AnonymousMapping(AnonymousMapping&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(other.size_) {}
  AnonymousMapping(const AnonymousMapping&) = delete;
  AnonymousMapping& operator=(const AnonymousMapping&) = delete;
  AnonymousMapping& operator=(AnonymousMapping&&) = delete;

  [[nodiscard]] std::byte* data() const noexcept { return data_; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_;
};

// Reads [offset, offset + length) of `fd` into `dest`, retrying short reads and EINTR.
void pread_fully(int fd, const fs::path& path, std::byte* dest, std::size_t length,
                 std::uint64_t offset) {
  while (length > 0) {
    const ssize_t n = ::pread(fd, dest, length, static_cast<off_t>(offset));
    if (n < 0) {
      const int error_number = errno;
      if (error_number == EINTR || error_number == EAGAIN) {
        continue;
      }
      throw IoError(path.string() + ": read at byte " + std::to_string(offset) +
                        " failed: " + errno_text(error_number),
                    error_number, offset);
    }
    if (n == 0) {
      throw IoError(path.string() + ": unexpected end of file at byte " + std::to_string(offset), 0,
                    offset);
    }
    dest += n;
    offset += static_cast<std::uint64_t>(n);
    length -= static_cast<std::size_t>(n);
  }
}

void fadvise_dontneed(std::span<const fs::path> files) {
  for (const fs::path& path : files) {
    const FileDescriptor file(path, O_RDONLY);
    (void)::posix_fadvise(file.get(), 0, 0, POSIX_FADV_DONTNEED);
  }
}

bool in_memory_file_system(std::span<const fs::path> files) {
  for (const fs::path& path : files) {
    struct statfs st {};
    if (::statfs(path.c_str(), &st) == 0 &&
        (st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC)) {
      return true;
    }
  }
  return false;
}

bool files_are_cold(std::span<const fs::path> files) {
  return page_cache_resident_fraction(files) <= kColdEnough;
}

}  // namespace

Throughput measure_cold_limit(std::span<const fs::path> files) {
  // Page-aligned, which satisfies every O_DIRECT memory alignment Linux asks for.
  const AnonymousMapping buffer(kColdBlock);
  Throughput result;
  const Clock::time_point start = Clock::now();
  for (const fs::path& path : files) {
    const FileDescriptor file(path, O_RDONLY | O_DIRECT);
    const std::uint64_t size = file.size();
    std::uint64_t offset = 0;
    while (offset < size) {
      const ssize_t n = ::pread(file.get(), buffer.data(), kColdBlock, static_cast<off_t>(offset));
      if (n < 0) {
        const int error_number = errno;
        if (error_number == EINTR || error_number == EAGAIN) {
          continue;
        }
        throw IoError(path.string() + ": O_DIRECT read at byte " + std::to_string(offset) +
                          " failed: " + errno_text(error_number),
                      error_number, offset);
      }
      if (n == 0) {
        throw IoError(path.string() + ": unexpected end of file at byte " + std::to_string(offset),
                      0, offset);
      }
      offset += static_cast<std::uint64_t>(n);
    }
    result.bytes += size;
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

Throughput measure_warm_limit(std::span<const fs::path> files) {
  std::vector<std::unique_ptr<FileDescriptor>> descriptors;
  std::vector<std::uint64_t> sizes;
  for (const fs::path& path : files) {
    descriptors.push_back(std::make_unique<FileDescriptor>(path, O_RDONLY));
    sizes.push_back(descriptors.back()->size());
  }

  Throughput result;
  std::vector<AnonymousMapping> destinations;
  destinations.reserve(files.size());
  const Clock::time_point start = Clock::now();
  for (const std::uint64_t size : sizes) {
    destinations.emplace_back(size);
  }

  std::mutex error_mutex;
  std::exception_ptr error;
  {
    std::vector<std::jthread> threads;
    for (unsigned t = 0; t < kWarmThreads; ++t) {
      threads.emplace_back([&, t] {
        try {
          for (std::size_t f = 0; f < files.size(); ++f) {
            for (std::uint64_t offset = std::uint64_t{t} * kWarmChunk; offset < sizes[f];
                 offset += std::uint64_t{kWarmThreads} * kWarmChunk) {
              const auto length =
                  static_cast<std::size_t>(std::min<std::uint64_t>(kWarmChunk, sizes[f] - offset));
              pread_fully(descriptors[f]->get(), files[f], destinations[f].data() + offset, length,
                          offset);
            }
          }
        } catch (...) {
          const std::lock_guard lock(error_mutex);
          if (!error) {
            error = std::current_exception();
          }
        }
      });
    }
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (error) {
    std::rethrow_exception(error);
  }
  for (const std::uint64_t size : sizes) {
    result.bytes += size;
  }
  return result;
}

void read_into_page_cache(std::span<const fs::path> files) {
  const AnonymousMapping buffer(kWarmChunk);
  for (const fs::path& path : files) {
    const FileDescriptor file(path, O_RDONLY);
    const std::uint64_t size = file.size();
    (void)::posix_fadvise(file.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
    for (std::uint64_t offset = 0; offset < size; offset += kWarmChunk) {
      const auto length =
          static_cast<std::size_t>(std::min<std::uint64_t>(kWarmChunk, size - offset));
      pread_fully(file.get(), path, buffer.data(), length, offset);
    }
  }
}

double page_cache_resident_fraction(std::span<const fs::path> files) {
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::uint64_t total = 0;
  std::uint64_t resident = 0;
  std::vector<unsigned char> pages;
  for (const fs::path& path : files) {
    const FileDescriptor file(path, O_RDONLY);
    const std::uint64_t size = file.size();
    if (size == 0) {
      continue;
    }
    total += size;
    // Mapping a file faults nothing in; mincore() then reports each page's residency.
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, file.get(), 0);
    if (mapping == MAP_FAILED) {
      const int error_number = errno;
      throw IoError(path.string() + ": mmap failed: " + errno_text(error_number), error_number, 0);
    }
    // In windows, so that the vector stays small for huge files.
    constexpr std::uint64_t kWindow = std::uint64_t{1} << 30;
    for (std::uint64_t at = 0; at < size; at += kWindow) {
      const std::uint64_t length = std::min(kWindow, size - at);
      pages.assign((length + page - 1) / page, 0);
      if (::mincore(static_cast<char*>(mapping) + at, length, pages.data()) != 0) {
        const int error_number = errno;
        ::munmap(mapping, size);
        throw IoError(path.string() + ": mincore failed: " + errno_text(error_number), error_number,
                      0);
      }
      const auto count = static_cast<std::uint64_t>(
          std::count_if(pages.begin(), pages.end(), [](unsigned char p) { return (p & 1) != 0; }));
      resident += std::min(length, count * page);
    }
    ::munmap(mapping, size);
  }
  return total == 0 ? 0.0 : static_cast<double>(resident) / static_cast<double>(total);
}

std::string_view cache_drop_name(CacheDrop drop) noexcept {
  switch (drop) {
    case CacheDrop::kFadvise:
      return "fadvise";
    case CacheDrop::kFadviseAfterSync:
      return "fdatasync+fadvise";
    case CacheDrop::kDropCaches:
      return "drop_caches";
    case CacheDrop::kFailed:
      break;
  }
  return "none";
}

CacheDrop drop_page_cache(std::span<const fs::path> files) {
  fadvise_dontneed(files);
  if (files_are_cold(files)) {
    return CacheDrop::kFadvise;
  }
  // tmpfs and ramfs keep files only in the page cache: nothing below can evict them, and
  // drop_caches would only disturb everything else on the machine.
  if (in_memory_file_system(files)) {
    return CacheDrop::kFailed;
  }

  // DONTNEED skips dirty pages, e.g. of a checkpoint written moments ago: write them back.
  for (const fs::path& path : files) {
    const FileDescriptor file(path, O_RDONLY);
    (void)::fdatasync(file.get());
  }
  fadvise_dontneed(files);
  if (files_are_cold(files)) {
    return CacheDrop::kFadviseAfterSync;
  }

  const int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::write(fd, "1", 1);
    ::close(fd);
    if (files_are_cold(files)) {
      return CacheDrop::kDropCaches;
    }
  }
  return CacheDrop::kFailed;
}

}  // namespace warpload::cli
