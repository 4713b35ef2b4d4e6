// Allocators the Python package hands to the Loader.
//
// - make_counted_host_allocator(): host memory (warpload's huge-page host allocator) whose
//   live bytes are counted process-wide, so tests and users can check that tensors, close()
//   and cancelled loads leave nothing behind (warpload.live_host_bytes()).
// - PythonAllocator: memory from a Python callable, e.g. one that allocates a torch uint8
//   tensor on "cuda:N" so device loads land in PyTorch's caching allocator. The callable gets
//   a byte count and returns (keepalive_object, data_address); the Buffer holds a reference
//   to the object until it is destroyed.
//
// Thread safety: allocate() may be called from any thread. PythonAllocator takes the GIL
// to call into Python and to drop its reference, so a Buffer from it may die on any thread
// (including a DLPack deleter running without the GIL).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "warpload/memory.hpp"

namespace warpload::python {

[[nodiscard]] std::shared_ptr<Allocator> make_counted_host_allocator();
// Bytes currently held by Buffers from make_counted_host_allocator().
[[nodiscard]] std::uint64_t live_host_bytes() noexcept;

class PythonAllocator final : public Allocator {
 public:
  PythonAllocator(pybind11::object allocate, MemoryKind kind)
      : allocate_(std::move(allocate)), kind_(kind) {}
  ~PythonAllocator() override;
  [[nodiscard]] MemoryKind kind() const noexcept override { return kind_; }
  // Calls the Python callable with size + alignment - 1 bytes and aligns the address it
  // returns. A Python exception becomes OutOfMemoryError carrying its message.
  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override;

 private:
  pybind11::object allocate_;
  MemoryKind kind_;
};

}  // namespace warpload::python
