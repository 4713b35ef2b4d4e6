// TensorView: what every loader hands out for a tensor (Loader, DistributedLoader,
// ChunkedReader): a pointer into memory a loader placed, with dtype, shape and strides, and a
// reference that keeps that memory alive.
//
// Ownership: `owner` keeps `data` valid; a view outlives the loader that made it. Shape and
// strides are in elements (row-major for a whole tensor; a shard along a dimension other than
// 0 keeps the parent's strides). For sub-byte dtypes strides are only meaningful for whole
// tensors. `memory == kDevice` means `data` is a device address, not dereferenceable on the
// host. Thread safety: a view is a plain value; copies may be used from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "warpload/dtype.hpp"
#include "warpload/memory.hpp"

namespace warpload {

struct TensorView {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;
  std::byte* data = nullptr;  // first element
  std::uint64_t nbytes = 0;   // bytes the view spans: numel * element size when contiguous
  bool contiguous = true;
  MemoryKind memory = MemoryKind::kHost;
  std::shared_ptr<const Buffer> owner;  // keeps `data` valid

  [[nodiscard]] std::uint64_t numel() const noexcept;
};

}  // namespace warpload
