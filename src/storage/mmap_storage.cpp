// MmapStorage: the reference safetensors' way, kept as the baseline every other backend is
// measured against. open() maps the whole file read-only; read() memcpys each request out of
// the mapping on the calling thread, one after the other, as safe_open copies each tensor.
// The copy is MappedFile::read_some(), so files of other backends (decorators) read as well.
//
// Out of scope, as in the reference: a file truncated after open() makes the copy touch pages
// past its end, and the process gets SIGBUS.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "storage/backends.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

// Requests are copied in slices of this size so that cancel and progress stay responsive.
constexpr std::uint64_t kCopySlice = 64ULL << 20;

class MappedFile final : public StorageFile {
 public:
  MappedFile(const std::filesystem::path& path, int fd, std::uint64_t size, const std::byte* map)
      : StorageFile(path, fd, size, 1), map_(map) {}
  ~MappedFile() override {
    if (map_ != nullptr) ::munmap(const_cast<std::byte*>(map_), size());
  }

  // Copies out of the mapping, so read() needs no cast to tell a mapped file from another.
  [[nodiscard]] std::int64_t read_some(std::byte* dest, std::size_t size,
                                       std::uint64_t offset) noexcept override {
    if (offset >= this->size()) return 0;
    const std::uint64_t n = std::min<std::uint64_t>(size, this->size() - offset);
    std::memcpy(dest, map_ + offset, n);
    return static_cast<std::int64_t>(n);
  }

 private:
  const std::byte* map_;  // null for an empty file
};

class MmapStorage final : public Storage {
 public:
  MmapStorage() {
    capabilities_.name = "mmap";
    capabilities_.owns_buffers = true;
  }

  [[nodiscard]] const StorageCapabilities& capabilities() const noexcept override {
    return capabilities_;
  }

  // The baseline copies into memory the way the reference's callers get it: plain pages (a
  // framework's allocator does not ask for huge pages), so it measures what users have today.
  [[nodiscard]] std::shared_ptr<Allocator> preferred_allocator() override {
    return make_host_allocator(HostAllocatorOptions{.huge_pages = false});
  }

  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    const OpenedFile opened = open_file(path, /*direct=*/false);
    UniqueFd fd(opened.fd);
    const std::byte* map = nullptr;
    if (opened.size > 0) {
      void* address = ::mmap(nullptr, opened.size, PROT_READ, MAP_PRIVATE, opened.fd, 0);
      if (address == MAP_FAILED) {
        const int error_number = errno;
        throw IoError(path.string() + ": cannot map " + std::to_string(opened.size) +
                          " bytes: " + std::strerror(error_number),
                      error_number, 0);
      }
      map = static_cast<const std::byte*>(address);
    }
    try {
      auto file = std::make_unique<MappedFile>(path, opened.fd, opened.size, map);
      static_cast<void>(fd.release());
      return file;
    } catch (...) {
      if (map != nullptr) ::munmap(const_cast<std::byte*>(map), opened.size);
      throw;
    }
  }

  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    // One thread, requests in order; the tracker supplies slicing, progress and cancel.
    ReadTracker tracker(requests, kCopySlice, control);
    ReadOperation op;
    while (tracker.next(&op)) tracker.run_blocking(op);
    tracker.finish();
  }

 private:
  StorageCapabilities capabilities_;
};

}  // namespace

std::unique_ptr<Storage> make_mmap_storage(const StorageOptions& /*options*/) {
  return std::make_unique<MmapStorage>();
}

}  // namespace warpload::detail
