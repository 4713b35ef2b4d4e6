// Building a TensorView over bytes a loader placed: shared by Loader and DistributedLoader.
#pragma once

#include <memory>
#include <string>

#include "warpload/format.hpp"
#include "warpload/loader.hpp"
#include "warpload/memory.hpp"

namespace warpload::detail {

// A contiguous row-major view of tensor `t` whose first element is at `data`, kept alive by
// `owner` (its memory kind becomes the view's). Views hold int64 shapes and strides: a
// non-empty tensor always fits (its element count is bounded by the file's size), an empty one
// (a 0 among its dims) may not, and is then UnsupportedError naming `file` and the tensor.
[[nodiscard]] TensorView make_tensor_view(const TensorInfo& t, std::byte* data,
                                          std::shared_ptr<const Buffer> owner,
                                          const std::string& file);

}  // namespace warpload::detail
