// Building a TensorView over bytes a loader placed: shared by Loader, DistributedLoader and the
// Python package's range reads.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

#include "warpload/format.hpp"
#include "warpload/memory.hpp"
#include "warpload/tensor_view.hpp"

namespace warpload::detail {

// A contiguous row-major view of tensor `t` whose first element is at `data`, kept alive by
// `owner` (its memory kind becomes the view's). Views hold int64 shapes and strides: a
// non-empty tensor always fits (its element count is bounded by the file's size), an empty one
// (a 0 among its dims) may not, and is then UnsupportedError naming `file` and the tensor.
[[nodiscard]] TensorView make_tensor_view(const TensorInfo& t, std::byte* data,
                                          std::shared_ptr<const Buffer> owner,
                                          const std::string& file);

// Views must be aligned to their element size. When tensor `t`'s bytes at `data` are not
// (files not from the reference writer, which orders tensors by alignment), returns an
// aligned copy in a buffer of its own from `allocator`: memcpy for host memory, cuMemcpyDtoD
// on CUDA device `device` when the allocator makes device memory. Returns null when `data` is
// aligned or the tensor is empty. Errors (OutOfMemoryError, a failed device copy) name `file`
// and the tensor.
[[nodiscard]] std::shared_ptr<Buffer> realigned_copy(Allocator& allocator, const TensorInfo& t,
                                                     const std::byte* data, int device,
                                                     const std::filesystem::path& file);

}  // namespace warpload::detail
