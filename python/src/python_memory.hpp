// The framework allocator the Python package hands to loads (host memory is the engine's own,
// counted by host_bytes_in_use(), warpload.live_host_bytes()).
//
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
