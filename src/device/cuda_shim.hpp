// The CUDA driver shim: a table of typed function pointers filled from libcuda.so.1 with
// dlopen/dlsym, loaded once per process, plus small RAII wrappers for the driver objects the
// loader uses (primary context scope, stream, event).
//
// Which library: $WARPLOAD_CUDA_LIB if set and non-empty, else "libcuda.so.1" through the
// normal loader path. The variable is read once, at the first cuda_api() call in the process;
// the result (the table, or the error) is cached for the rest of the process, and the library
// is never unloaded (device buffers may outlive everything else). Tests that want another
// path either set the variable before the first call or use load_cuda_api().
//
// Device pointers: warpload carries a CUdeviceptr in a std::byte* (Buffer::data() of a
// MemoryKind::kDevice buffer). Such a pointer is NOT dereferenceable on the host; convert
// with to_device_ptr() and move bytes with the copy functions below.
//
// Thread safety: every function and every const member may be called from any thread.
// CudaStream / CudaEvent objects may be used from several threads as the driver allows
// (enqueueing on one stream from two threads has no defined order between them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
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
  cuDeviceGetPCIBusId_fn device_get_pci_bus_id = nullptr;
  cuDeviceTotalMem_v2_fn device_total_mem = nullptr;
  cuDevicePrimaryCtxRetain_fn primary_ctx_retain = nullptr;
  cuDevicePrimaryCtxRelease_v2_fn primary_ctx_release = nullptr;
  cuCtxGetCurrent_fn ctx_get_current = nullptr;
  cuCtxSetCurrent_fn ctx_set_current = nullptr;
  cuMemAlloc_v2_fn mem_alloc = nullptr;
  cuMemFree_v2_fn mem_free = nullptr;
  cuMemGetInfo_v2_fn mem_get_info = nullptr;
  cuMemHostAlloc_fn mem_host_alloc = nullptr;
  cuMemFreeHost_fn mem_free_host = nullptr;
  cuMemHostRegister_v2_fn mem_host_register = nullptr;
  cuMemHostUnregister_fn mem_host_unregister = nullptr;
  cuMemcpyHtoDAsync_v2_fn memcpy_htod_async = nullptr;
  cuMemcpyDtoH_v2_fn memcpy_dtoh = nullptr;
  cuMemcpyDtoD_v2_fn memcpy_dtod = nullptr;
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

// Loads `library` afresh (not cached, never unloaded) and calls cuInit(0): the uncached core
// of cuda_api(), for tests of the error paths. Same errors as cuda_api().
[[nodiscard]] std::unique_ptr<CudaApi> load_cuda_api(const std::string& library);

// Throws (UnsupportedError, or OutOfMemoryError for CUDA_ERROR_OUT_OF_MEMORY) when `result`
// is not CUDA_SUCCESS, with `what` and the driver's error string in the message.
void cuda_check(CUresult result, std::string_view what);

// The number of CUDA devices the driver reports (cuDeviceGetCount). Throws like cuda_api().
[[nodiscard]] int cuda_device_count();

// Throws UnsupportedError naming "cuda:N" and the device count when `device` is not a valid
// ordinal (or CUDA is missing).
void check_cuda_device(int device);

// The PCI address of `device` as the driver reports it (cuDeviceGetPCIBusId), e.g.
// "0000:3B:00.0". Throws like check_cuda_device() / cuda_check(). Creates no context.
[[nodiscard]] std::string cuda_pci_bus_id(int device);

// CUdeviceptr <-> the std::byte* warpload carries in device Buffers. The pointer is an
// address in the device's space, not dereferenceable on the host.
[[nodiscard]] inline CUdeviceptr to_device_ptr(const std::byte* p) noexcept {
  return static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(p));
}
[[nodiscard]] inline std::byte* from_device_ptr(CUdeviceptr p) noexcept {
  return reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(p));
}

// Makes `device`'s primary context current on the calling thread for the object's lifetime
// (retained on construction, released and the previous context restored on destruction).
// Throws like cuda_check() (UnsupportedError for a bad ordinal).
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

// A CU_STREAM_NON_BLOCKING stream in `device`'s primary context. The stream keeps the
// primary context retained for its lifetime; every member makes that context current for
// the duration of the call (callers need no CudaContextScope). The destructor destroys the
// stream without waiting (the driver finishes queued work first); call synchronize() before
// releasing memory the queued copies read or write.
class CudaStream {
 public:
  explicit CudaStream(int device);
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  [[nodiscard]] CUstream get() const noexcept { return stream_; }
  [[nodiscard]] int device() const noexcept { return device_; }
  // Blocks until all work queued so far has finished; throws the first asynchronous error.
  void synchronize() const;

 private:
  int device_;
  CUstream stream_ = nullptr;
};

// A CU_EVENT_DISABLE_TIMING event in `device`'s primary context (retained for its lifetime).
class CudaEvent {
 public:
  explicit CudaEvent(int device);
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  [[nodiscard]] CUevent get() const noexcept { return event_; }
  // Captures the work queued on `stream` so far (the stream must belong to the same device).
  void record(const CudaStream& stream);
  // true when the recorded work has finished (or nothing was recorded); false while it is
  // pending (CUDA_ERROR_NOT_READY). Throws on any other result (an asynchronous error).
  [[nodiscard]] bool query() const;
  // Blocks until the recorded work has finished; throws an asynchronous error.
  void synchronize() const;

 private:
  int device_;
  CUevent event_ = nullptr;
};

// Queues a copy of `bytes` host bytes at `src` to device address `dst` on `stream`. The copy
// runs later: `src` must stay valid and unchanged until the stream (or an event recorded
// after this call) has been synchronized. `src` should be pinned memory for a truly
// asynchronous copy. `dst` is a device pointer as carried in a kDevice Buffer.
void copy_to_device_async(std::byte* dst, const void* src, std::size_t bytes,
                          const CudaStream& stream);

// Synchronous copy of `bytes` from device address `src` (on `device`) to host memory `dst`.
// Not ordered with work on NON_BLOCKING streams: synchronize those first. Mostly for tests
// and verification.
void copy_to_host(void* dst, const std::byte* src, std::size_t bytes, int device);

// Synchronous copy of `bytes` between two device addresses on `device` (cuMemcpyDtoD; the
// ranges must not overlap). Same ordering caveat as copy_to_host().
void copy_on_device(std::byte* dst, const std::byte* src, std::size_t bytes, int device);

// Page-locks an existing host range for `device`'s copies (cuMemHostRegister with `flags`,
// PORTABLE by default; READ_ONLY for memory mapped without write access) for the object's
// lifetime; unregistered on destruction (noexcept).
class CudaHostRegistration {
 public:
  CudaHostRegistration(int device, void* data, std::size_t bytes,
                       unsigned flags = WARPLOAD_CU_MEMHOSTREGISTER_PORTABLE);
  ~CudaHostRegistration();
  CudaHostRegistration(const CudaHostRegistration&) = delete;
  CudaHostRegistration& operator=(const CudaHostRegistration&) = delete;

 private:
  int device_;
  void* data_;
};

}  // namespace warpload::detail
