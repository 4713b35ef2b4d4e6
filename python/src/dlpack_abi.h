// The DLPack C ABI (unversioned, "dltensor" capsules), as every framework we hand tensors to
// reads it: PyTorch (torch.utils.dlpack), NumPy (np.from_dlpack), and any other consumer of a
// capsule. Only the declarations warpload produces are here; values are fixed by the DLPack
// specification (https://dmlc.github.io/dlpack/latest/c_api.html).
//
// Layout rules that matter: DLTensor::data points at the first element (we never use
// byte_offset: older consumers ignore it), shape and strides are in elements, and the
// manager's deleter may be called from any thread, with or without the Python GIL.
#pragma once

#include <cstdint>

namespace warpload::python::dlpack {

enum DeviceType : std::int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
};

enum DataTypeCode : std::uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLBfloat = 4,
  kDLComplex = 5,
  kDLBool = 6,
};

struct Device {
  std::int32_t device_type;
  std::int32_t device_id;
};

struct DataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  std::int32_t ndim;
  DataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;
  std::uint64_t byte_offset;
};

struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

// Capsule names of the protocol: a producer names it "dltensor"; a consumer that takes
// ownership renames it "used_dltensor" and becomes responsible for calling the deleter.
inline constexpr const char* kCapsuleName = "dltensor";
inline constexpr const char* kUsedCapsuleName = "used_dltensor";

}  // namespace warpload::python::dlpack
