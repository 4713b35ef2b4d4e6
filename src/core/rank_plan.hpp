// Internals of the multi-rank plan (include/warpload/distributed.hpp): where a tensor lies in
// the plan's stream, which slot owns a stream byte, and the byte geometry of a shard block.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "warpload/distributed.hpp"
#include "warpload/format.hpp"
#include "warpload/tensor_view.hpp"

namespace warpload::detail {

// One rank's block of a tensor split along a dimension, as byte ranges relative to the
// tensor's first byte: for o in [0, rows): [o * row_stride + offset, ... + length).
// rows is 1 whenever the block is one contiguous byte range.
struct BlockBytes {
  std::uint64_t rows = 0;
  std::uint64_t row_stride = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::int64_t begin = 0;  // indices along the split dimension
  std::int64_t end = 0;
  std::size_t dim = 0;
  [[nodiscard]] std::uint64_t bytes() const noexcept { return rows * length; }
  [[nodiscard]] bool contiguous() const noexcept { return rows <= 1; }
};

// Loader::shard's rule (blocks of ceil(size / world), last ranks fewer or none). Throws
// std::invalid_argument (bad rank/world/dim, 0-d tensor) and UnsupportedError (a sub-byte
// block that does not start and end on whole bytes), naming `file` and the tensor.
[[nodiscard]] BlockBytes block_bytes(const TensorInfo& tensor, int rank, int world, int dim,
                                     const std::string& file);

// Calls fn(tensor_offset, block_offset, length) for every byte range of `block` that lies in
// [lo, hi) (tensor-relative offsets), in order; block_offset counts bytes of the block.
void for_each_overlap(const BlockBytes& block, std::uint64_t lo, std::uint64_t hi,
                      const std::function<void(std::uint64_t, std::uint64_t, std::uint64_t)>& fn);

// The view of `block` inside `whole`, the whole tensor's view (same memory, zero copy): the
// split dimension shortened, the data moved to the block's first byte, strides kept (so a
// block of several rows is strided).
[[nodiscard]] TensorView block_view(TensorView whole, const BlockBytes& block);

}  // namespace warpload::detail
