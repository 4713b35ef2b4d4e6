#include "core/tensor_view.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "common/printable.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {

TensorView make_tensor_view(const TensorInfo& t, std::byte* data,
                            std::shared_ptr<const Buffer> owner, const std::string& file) {
  TensorView v;
  v.name = t.name;
  v.dtype = t.dtype;
  v.nbytes = t.nbytes();
  bool fits = std::all_of(t.shape.begin(), t.shape.end(),
                          [](std::uint64_t dim) { return dim <= INT64_MAX; });
  v.shape.assign(t.shape.begin(), t.shape.end());
  v.strides.assign(t.shape.size(), 1);
  for (std::size_t d = t.shape.size(); fits && d-- > 1;) {
    fits = !__builtin_mul_overflow(v.strides[d], v.shape[d], &v.strides[d - 1]);
  }
  if (!fits) {
    throw UnsupportedError(file + ": tensor '" + printable(t.name) + "': shape " +
                           format_shape(t.shape) +
                           " or its strides exceed 2^63 - 1 elements, the limit of a TensorView");
  }
  v.data = data;
  v.memory = owner->kind();
  v.owner = std::move(owner);
  return v;
}

}  // namespace warpload::detail
