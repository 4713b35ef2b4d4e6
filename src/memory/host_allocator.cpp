// Host memory from anonymous mmap.
//
// Reading a checkpoint into fresh memory is dominated by the kernel faulting in and zeroing
// the destination pages, not by the copy. Big buffers therefore start on a 2 MiB boundary,
// span whole 2 MiB pages and are madvise(MADV_HUGEPAGE)d, so that with THP in "madvise" mode
// each fault maps (and zeroes) 2 MiB at once. Faulting is left to the reading threads, which
// spreads it over every core instead of one thread pre-faulting (MAP_POPULATE) in front of the
// reads.
//
// Measured on the 2-core development VM (Firecracker, free page reporting to the host):
// touching 2 GiB of fresh memory from two threads runs at ~11.8 GB/s with THP against ~3.6
// GB/s with 4 KiB pages when the guest recycles recently freed memory, but at ~1.3 GB/s (THP,
// serialised in the host) against ~2.5 GB/s (4 KiB) once freed memory has been reported back
// to the host. Bare-metal machines have no such second cost and gain from THP throughout.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "warpload/error.hpp"
#include "warpload/memory.hpp"

namespace warpload {
namespace {

constexpr std::size_t kHugePageSize = 2U << 20;
// Below this a buffer is not worth a huge page: it would mostly be zeroing memory no one uses.
constexpr std::size_t kHugePageThreshold = 4U << 20;

std::size_t round_up(std::size_t value, std::size_t alignment) noexcept {
  return (value + alignment - 1) & ~(alignment - 1);
}

std::atomic<std::uint64_t> g_bytes_in_use{0};

class MappedBuffer final : public Buffer {
 public:
  MappedBuffer(std::byte* data, std::size_t size, std::size_t mapped) noexcept
      : Buffer(data, size, MemoryKind::kHost), mapped_(mapped) {
    g_bytes_in_use.fetch_add(size, std::memory_order_relaxed);
  }
  ~MappedBuffer() override {
    ::munmap(data(), mapped_);
    g_bytes_in_use.fetch_sub(size(), std::memory_order_relaxed);
  }

 private:
  std::size_t mapped_;  // bytes mapped at data(): size() rounded up to whole pages
};

class HostAllocator final : public Allocator {
 public:
  explicit HostAllocator(HostAllocatorOptions options) noexcept
      : options_(options), page_(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))) {}

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::kHost; }

  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      throw std::invalid_argument("host allocator: alignment " + std::to_string(alignment) +
                                  " is not a power of two");
    }
    const bool huge = options_.huge_pages && size >= kHugePageThreshold;
    std::size_t align = std::max(alignment, page_);
    if (huge) align = std::max(align, kHugePageSize);
    // A whole number of (huge) pages, so the tail is not left on small pages.
    const std::size_t length =
        round_up(std::max<std::size_t>(size, 1), huge ? kHugePageSize : page_);
    const std::size_t slack = align - page_;  // mmap returns page-aligned addresses
    if (length < size || length + slack < length) throw_out_of_memory(size, ENOMEM);

    void* base =
        ::mmap(nullptr, length + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw_out_of_memory(size, errno);

    // Trim the mapping to the aligned window.
    auto* start = static_cast<std::byte*>(base);
    const auto address = reinterpret_cast<std::uintptr_t>(start);
    auto* data = start + (round_up(address, align) - address);
    if (data != start) ::munmap(start, static_cast<std::size_t>(data - start));
    std::byte* end = start + length + slack;
    if (data + length != end)
      ::munmap(data + length, static_cast<std::size_t>(end - (data + length)));

    if (huge) ::madvise(data, length, MADV_HUGEPAGE);  // advisory: fine if THP is off
    try {
      return std::make_shared<MappedBuffer>(data, size, length);
    } catch (...) {
      ::munmap(data, length);
      throw;
    }
  }

 private:
  [[noreturn]] static void throw_out_of_memory(std::size_t size, int error_number) {
    throw OutOfMemoryError("host allocator: cannot map " + std::to_string(size) +
                           " bytes: " + std::strerror(error_number));
  }

  HostAllocatorOptions options_;
  std::size_t page_;
};

}  // namespace

std::shared_ptr<Allocator> make_host_allocator(HostAllocatorOptions options) {
  return std::make_shared<HostAllocator>(options);
}

std::uint64_t host_bytes_in_use() noexcept {
  return g_bytes_in_use.load(std::memory_order_relaxed);
}

}  // namespace warpload
