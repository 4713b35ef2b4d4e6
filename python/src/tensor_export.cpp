#include "tensor_export.hpp"

#include <optional>
#include <stdexcept>
#include <utility>

namespace warpload::python {
namespace {

std::optional<dlpack::DataType> native_type(DType dtype) {
  using enum dlpack::DataTypeCode;
  auto t = [](dlpack::DataTypeCode code, int bits) {
    return dlpack::DataType{static_cast<std::uint8_t>(code), static_cast<std::uint8_t>(bits), 1};
  };
  switch (dtype) {
    case DType::kBool: return t(kDLBool, 8);
    case DType::kU8: return t(kDLUInt, 8);
    case DType::kI8: return t(kDLInt, 8);
    case DType::kI16: return t(kDLInt, 16);
    case DType::kU16: return t(kDLUInt, 16);
    case DType::kF16: return t(kDLFloat, 16);
    case DType::kBF16: return t(kDLBfloat, 16);
    case DType::kI32: return t(kDLInt, 32);
    case DType::kU32: return t(kDLUInt, 32);
    case DType::kF32: return t(kDLFloat, 32);
    case DType::kF64: return t(kDLFloat, 64);
    case DType::kI64: return t(kDLInt, 64);
    case DType::kU64: return t(kDLUInt, 64);
    case DType::kC64: return t(kDLComplex, 64);
    default: return std::nullopt;  // F8_*, F4, F6_*: no DLPack type every consumer knows
  }
}

// The bookkeeping a capsule owns: its own reference to the buffer and the arrays DLTensor
// points at. Deleted by the DLPack deleter, which needs no GIL.
struct CapsuleContext {
  dlpack::ManagedTensor managed{};
  std::shared_ptr<const Buffer> owner;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;
};

void delete_managed(dlpack::ManagedTensor* self) {
  delete static_cast<CapsuleContext*>(self->manager_ctx);
}

// Called when the capsule object dies. A consumer that took the tensor renamed the capsule to
// "used_dltensor" and owns the deleter call; otherwise nobody took it and we free it here.
void destroy_capsule(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, dlpack::kCapsuleName) == 0) return;
  auto* managed =
      static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, dlpack::kCapsuleName));
  if (managed != nullptr && managed->deleter != nullptr) managed->deleter(managed);
}

std::vector<std::int64_t> row_major(const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> strides(shape.size(), 1);
  for (std::size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

}  // namespace

ExportedTensor::ExportedTensor(TensorView view, int device_index) : view_(std::move(view)) {
  if (view_.memory == MemoryKind::kDevice) {
    device_ = {dlpack::kDLCUDA, device_index};
  } else {
    device_ = {dlpack::kDLCPU, 0};
  }
  set_mode(supports(ExportMode::kNative) ? ExportMode::kNative : ExportMode::kRawBytes);
}

ExportedTensor::ExportedTensor(const ExportedTensor& base, ExportMode mode)
    : view_(base.view_), device_(base.device_) {
  set_mode(mode);
}

bool ExportedTensor::supports(ExportMode mode) const noexcept {
  switch (mode) {
    case ExportMode::kNative: return native_type(view_.dtype).has_value();
    case ExportMode::kCarrier: return dtype_bits(view_.dtype) % 8 == 0;
    case ExportMode::kRawBytes: return true;
  }
  return false;
}

ExportedTensor ExportedTensor::as(ExportMode mode) const {
  if (!supports(mode)) {
    throw std::invalid_argument("tensor '" + view_.name + "' of dtype " +
                                std::string(dtype_name(view_.dtype)) +
                                " cannot be exported in this mode");
  }
  return ExportedTensor(*this, mode);
}

void ExportedTensor::set_mode(ExportMode mode) {
  mode_ = mode;
  const std::uint32_t bits = dtype_bits(view_.dtype);
  const auto u8 = dlpack::DataType{dlpack::kDLUInt, 8, 1};
  switch (mode) {
    case ExportMode::kNative:
      dl_dtype_ = *native_type(view_.dtype);
      shape_ = view_.shape;
      strides_ = view_.strides;
      return;
    case ExportMode::kCarrier:
      dl_dtype_ = bits == 8 ? u8
                            : dlpack::DataType{dlpack::kDLInt, static_cast<std::uint8_t>(bits), 1};
      shape_ = view_.shape;
      strides_ = view_.strides;
      return;
    case ExportMode::kRawBytes:
      dl_dtype_ = u8;
      break;
  }
  // Raw bytes: the last dimension counts bytes.
  if (bits % 8 == 0) {
    const auto size = static_cast<std::int64_t>(bits / 8);
    if (view_.shape.empty()) {
      shape_ = {size};
      strides_ = {1};
      return;
    }
    shape_ = view_.shape;
    strides_.resize(view_.strides.size());
    for (std::size_t d = 0; d < shape_.size(); ++d) strides_[d] = view_.strides[d] * size;
    // Views have unit stride along the last dimension (shards split other dims only).
    shape_.back() *= size;
    strides_.back() = 1;
    return;
  }
  // Sub-byte types: whole views only (Loader::shard refuses anything else), so row-major.
  const auto last = view_.shape.empty() ? 0 : view_.shape.back();
  if (!view_.shape.empty() && (static_cast<std::uint64_t>(last) * bits) % 8 == 0) {
    shape_ = view_.shape;
    shape_.back() = static_cast<std::int64_t>(static_cast<std::uint64_t>(last) * bits / 8);
  } else {
    shape_ = {static_cast<std::int64_t>(view_.nbytes)};
  }
  strides_ = row_major(shape_);
}

PyObject* ExportedTensor::to_capsule() const {
  auto ctx = std::make_unique<CapsuleContext>();
  ctx->owner = view_.owner;
  ctx->shape = shape_;
  ctx->strides = strides_;
  dlpack::Tensor& t = ctx->managed.dl_tensor;
  t.data = view_.data;
  t.device = device_;
  t.ndim = static_cast<std::int32_t>(ctx->shape.size());
  t.dtype = dl_dtype_;
  t.shape = ctx->shape.empty() ? nullptr : ctx->shape.data();
  t.strides = ctx->strides.empty() ? nullptr : ctx->strides.data();
  t.byte_offset = 0;
  ctx->managed.manager_ctx = ctx.get();
  ctx->managed.deleter = delete_managed;
  PyObject* capsule = PyCapsule_New(&ctx->managed, dlpack::kCapsuleName, destroy_capsule);
  if (capsule == nullptr) return nullptr;  // ctx freed by unique_ptr
  ctx.release();
  return capsule;
}

}  // namespace warpload::python
