#include "core/tensor_view.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "common/printable.hpp"
#include "device/cuda_shim.hpp"
#include "warpload/dtype.hpp"
#include "warpload/error.hpp"

namespace warpload {

std::uint64_t TensorView::numel() const noexcept {
  std::uint64_t n = 1;
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  return n;
}

namespace detail {

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

std::shared_ptr<Buffer> realigned_copy(Allocator& allocator, const TensorInfo& t,
                                       const std::byte* data, int device,
                                       const std::filesystem::path& file) {
  const std::size_t align = dtype_alignment(t.dtype);
  if (t.nbytes() == 0 || reinterpret_cast<std::uintptr_t>(data) % align == 0) return nullptr;
  const bool on_device = allocator.kind() == MemoryKind::kDevice;
  const std::string where = file.string() + ": tensor '" + printable(t.name) + "'";
  std::shared_ptr<Buffer> side;
  try {
    side = allocator.allocate(t.nbytes(), std::max<std::size_t>(align, on_device ? 256 : 64));
  } catch (const OutOfMemoryError& e) {
    throw OutOfMemoryError(where + ": cannot allocate " + std::to_string(t.nbytes()) +
                           " bytes to realign it: " + e.what());
  }
  if (!on_device) {
    std::memcpy(side->data(), data, t.nbytes());
    return side;
  }
  try {
    copy_on_device(side->data(), data, t.nbytes(), device);
  } catch (const Error& e) {
    throw UnsupportedError(where + ": realigning it on cuda:" + std::to_string(device) + ": " +
                           e.what());
  }
  return side;
}

}  // namespace detail
}  // namespace warpload
