// The CUDA driver shim: a table of typed function pointers filled from libcuda.so.1 with
// dlopen/dlsym, loaded once per process.
#pragma once

#include <string>
#include <string_view>

#include "device/cuda_abi.h"

namespace warpload::detail {

struct CudaApi {
  std::string library;  // path or soname that was loaded
  cuInit_fn init = nullptr;
  cuDriverGetVersion_fn driver_get_version = nullptr;
  cuDeviceGetCount_fn device_get_count = nullptr;
  cuDeviceGet_fn device_get = nullptr;
  cuDeviceGetName_fn device_get_name = nullptr;
  cuDeviceGetAttribute_fn device_get_attribute = nullptr;
  cuDeviceTotalMem_v2_fn device_total_mem = nullptr;
  cuDevicePrimaryCtxRetain_fn primary_ctx_retain = nullptr;
  cuDevicePrimaryCtxRelease_v2_fn primary_ctx_release = nullptr;
  cuCtxGetCurrent_fn ctx_get_current = nullptr;
  cuCtxSetCurrent_fn ctx_set_current = nullptr;
  cuMemAlloc_v2_fn mem_alloc = nullptr;
  cuMemFree_v2_fn mem_free = nullptr;
  cuMemHostAlloc_fn mem_host_alloc = nullptr;
  cuMemFreeHost_fn mem_free_host = nullptr;
  cuMemHostRegister_v2_fn mem_host_register = nullptr;
  cuMemHostUnregister_fn mem_host_unregister = nullptr;
  cuMemcpyHtoDAsync_v2_fn memcpy_htod_async = nullptr;
  cuMemcpyDtoH_v2_fn memcpy_dtoh = nullptr;
  cuStreamCreate_fn stream_create = nullptr;
  cuStreamDestroy_v2_fn stream_destroy = nullptr;
  cuStreamSynchronize_fn stream_synchronize = nullptr;
  cuEventCreate_fn event_create = nullptr;
  cuEventRecord_fn event_record = nullptr;
  cuEventQuery_fn event_query = nullptr;
  cuEventSynchronize_fn event_synchronize = nullptr;
  cuEventDestroy_v2_fn event_destroy = nullptr;
  cuGetErrorString_fn get_error_string = nullptr;
};

// The driver, loaded (and cuInit(0) called) on first use: $WARPLOAD_CUDA_LIB if set, else
// "libcuda.so.1". Throws UnsupportedError naming the library and the dlerror() / missing
// symbol / failing call.
[[nodiscard]] const CudaApi& cuda_api();

// Throws (UnsupportedError, or OutOfMemoryError for CUDA_ERROR_OUT_OF_MEMORY) when `result`
// is not CUDA_SUCCESS, with `what` and the driver's error string in the message.
void cuda_check(CUresult result, std::string_view what);

// Makes `device`'s primary context current on the calling thread for the object's lifetime
// (retained on construction, released and the previous context restored on destruction).
class CudaContextScope {
 public:
  explicit CudaContextScope(int device);
  ~CudaContextScope();
  CudaContextScope(const CudaContextScope&) = delete;
  CudaContextScope& operator=(const CudaContextScope&) = delete;

 private:
  int device_;
  CUcontext previous_ = nullptr;
};

}  // namespace warpload::detail
