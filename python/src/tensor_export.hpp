// ExportedTensor: one loaded tensor (or shard) as Python sees it, and its DLPack export.
//
// An ExportedTensor is a TensorView (pointer into a loader-owned Buffer plus a shared_ptr that
// keeps the Buffer alive) together with the element type it is exported as:
//   kNative  the safetensors dtype's own DLPack type (BOOL -> kDLBool, BF16 -> kDLBfloat, ...);
//            only for dtypes DLPack has (not F8_*, F4, F6_*).
//   kCarrier an unsigned/signed integer of the same width (U8, I16, I32, I64), for a framework
//            that has the dtype but cannot import it through DLPack: the caller re-views it.
//   kRawBytes uint8 holding the tensor's raw bytes, last dimension counted in bytes: what a
//            framework that lacks the dtype gets. Sub-byte dtypes (F4, F6_*) whose last
//            dimension is not a whole number of bytes become one dimension of nbytes.
// Nothing is ever converted: every mode exports the same bytes at the same address.
//
// Ownership: every DLPack capsule made from an ExportedTensor holds its own reference to the
// Buffer, released by the DLPack deleter (any thread, no GIL needed) whenever the consumer
// frees its tensor, so a tensor outlives the loader, close() and the ExportedTensor.
// Thread safety: immutable after construction.
#pragma once

#include <Python.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dlpack_abi.h"
#include "warpload/dtype.hpp"
#include "warpload/tensor_view.hpp"

namespace warpload::python {

enum class ExportMode : std::uint8_t { kNative, kCarrier, kRawBytes };

class ExportedTensor {
 public:
  // `device_index` is the CUDA ordinal for device views (ignored for host ones).
  ExportedTensor(TensorView view, int device_index);

  // Whether `mode` can express this tensor (kNative needs a DLPack type for the dtype, kCarrier
  // a whole-byte element).
  [[nodiscard]] bool supports(ExportMode mode) const noexcept;
  // The same bytes exported another way. Throws std::invalid_argument if !supports(mode).
  [[nodiscard]] ExportedTensor as(ExportMode mode) const;

  [[nodiscard]] const std::string& name() const noexcept { return view_.name; }
  [[nodiscard]] DType stored_dtype() const noexcept { return view_.dtype; }
  [[nodiscard]] ExportMode mode() const noexcept { return mode_; }
  // Element shape and strides in the export mode's units (bytes for kRawBytes).
  [[nodiscard]] const std::vector<std::int64_t>& shape() const noexcept { return shape_; }
  [[nodiscard]] const std::vector<std::int64_t>& strides() const noexcept { return strides_; }
  [[nodiscard]] const std::vector<std::int64_t>& stored_shape() const noexcept {
    return view_.shape;
  }
  [[nodiscard]] std::uint64_t nbytes() const noexcept { return view_.nbytes; }
  [[nodiscard]] std::uintptr_t data_ptr() const noexcept {
    return reinterpret_cast<std::uintptr_t>(view_.data);
  }
  [[nodiscard]] bool contiguous() const noexcept { return view_.contiguous; }
  [[nodiscard]] dlpack::Device device() const noexcept { return device_; }
  [[nodiscard]] dlpack::DataType dl_dtype() const noexcept { return dl_dtype_; }

  // A new "dltensor" capsule (a new reference) that owns a reference to the buffer. Throws
  // std::bad_alloc; returns nullptr with a Python error set if the capsule cannot be made.
  [[nodiscard]] PyObject* to_capsule() const;

 private:
  ExportedTensor(const ExportedTensor& base, ExportMode mode);
  void set_mode(ExportMode mode);

  TensorView view_;
  dlpack::Device device_{};
  ExportMode mode_ = ExportMode::kNative;
  dlpack::DataType dl_dtype_{};
  std::vector<std::int64_t> shape_;
  std::vector<std::int64_t> strides_;
};

}  // namespace warpload::python
