// Destination memory for loaded tensors.
//
// A Buffer is one owning allocation; the Loader places each file's data section in one
// Buffer and hands out tensor views into it. Buffers are reference-counted (shared_ptr) so a
// view may keep its buffer alive after the Loader is gone.
//
// An Allocator makes Buffers of one MemoryKind: host memory here, CUDA device memory and
// pinned staging memory in device.hpp, 3FS iovs from the 3fs backend. The Loader asks a
// Storage whether it can write into the allocator's kind and stages through pinned host
// memory when it cannot (src/core/staged_pipeline.*).
//
// Thread safety: allocate() may be called from any thread; a Buffer's bytes are written by
// the storage backend during a load and are read-only for callers afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace warpload {

enum class MemoryKind : std::uint8_t {
  kHost,        // pageable host memory
  kPinnedHost,  // page-locked host memory (staging for device copies)
  kDevice,      // accelerator memory
};

class Buffer {
 public:
  virtual ~Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] MemoryKind kind() const noexcept { return kind_; }

 protected:
  Buffer(std::byte* data, std::size_t size, MemoryKind kind) noexcept
      : data_(data), size_(size), kind_(kind) {}

 private:
  std::byte* data_;
  std::size_t size_;
  MemoryKind kind_;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  [[nodiscard]] virtual MemoryKind kind() const noexcept = 0;
  // Returns a buffer of at least `size` bytes whose data() is a multiple of `alignment`
  // (a power of two). Contents are unspecified. Throws OutOfMemoryError.
  [[nodiscard]] virtual std::shared_ptr<Buffer> allocate(std::size_t size,
                                                         std::size_t alignment) = 0;
};

struct HostAllocatorOptions {
  // Back large buffers with transparent huge pages (madvise MADV_HUGEPAGE): one page fault
  // per 2 MiB instead of per 4 KiB, which is most of the cost of reading into fresh memory.
  bool huge_pages = true;
};

// Anonymous-mmap host memory, released with munmap when the last reference goes.
[[nodiscard]] std::shared_ptr<Allocator> make_host_allocator(HostAllocatorOptions options = {});

// Bytes held right now by Buffers from make_host_allocator() allocators, process-wide (what
// tensors, a loader's buffers and reads in progress keep; for leak checks and memory bounds,
// e.g. Python's warpload.live_host_bytes()). Thread-safe.
[[nodiscard]] std::uint64_t host_bytes_in_use() noexcept;

}  // namespace warpload
