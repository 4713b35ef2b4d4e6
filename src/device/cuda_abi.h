/* The subset of the CUDA driver API (libcuda.so.1) warpload calls, declared here so nothing
 * CUDA is needed to build. Types and signatures follow cuda.h of CUDA 12/13 (driver API
 * version >= 3020, so the _v2 entry points are the ones named); the shim
 * (src/device/cuda_shim.*) resolves these symbols with dlsym and the fake driver
 * (tests/fake_cuda/) exports them. Keep this file C-compatible.
 */
#ifndef WARPLOAD_CUDA_ABI_H_
#define WARPLOAD_CUDA_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int CUresult; /* 0 == CUDA_SUCCESS */
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st* CUcontext;
typedef struct CUstream_st* CUstream;
typedef struct CUevent_st* CUevent;

#define WARPLOAD_CUDA_SUCCESS 0
#define WARPLOAD_CUDA_ERROR_INVALID_VALUE 1
#define WARPLOAD_CUDA_ERROR_OUT_OF_MEMORY 2
#define WARPLOAD_CUDA_ERROR_NOT_INITIALIZED 3
#define WARPLOAD_CUDA_ERROR_NO_DEVICE 100
#define WARPLOAD_CUDA_ERROR_INVALID_DEVICE 101
#define WARPLOAD_CUDA_ERROR_NOT_READY 600

#define WARPLOAD_CU_MEMHOSTALLOC_PORTABLE 0x01
#define WARPLOAD_CU_MEMHOSTREGISTER_PORTABLE 0x01
#define WARPLOAD_CU_MEMHOSTREGISTER_READ_ONLY 0x08
#define WARPLOAD_CU_STREAM_NON_BLOCKING 0x1
#define WARPLOAD_CU_EVENT_DISABLE_TIMING 0x2
#define WARPLOAD_CU_DEVICE_ATTRIBUTE_PCI_BUS_ID 33
#define WARPLOAD_CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID 34
#define WARPLOAD_CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID 50

typedef CUresult (*cuInit_fn)(unsigned int flags);
typedef CUresult (*cuDriverGetVersion_fn)(int* version);
typedef CUresult (*cuDeviceGetCount_fn)(int* count);
typedef CUresult (*cuDeviceGet_fn)(CUdevice* device, int ordinal);
typedef CUresult (*cuDeviceGetName_fn)(char* name, int len, CUdevice device);
typedef CUresult (*cuDeviceGetAttribute_fn)(int* value, int attribute, CUdevice device);
/* Writes "dddd:bb:dd.f" (upper-case hex, NUL-terminated) into `bus_id`; 13 bytes suffice. */
typedef CUresult (*cuDeviceGetPCIBusId_fn)(char* bus_id, int len, CUdevice device);
typedef CUresult (*cuDeviceTotalMem_v2_fn)(size_t* bytes, CUdevice device);
typedef CUresult (*cuDevicePrimaryCtxRetain_fn)(CUcontext* ctx, CUdevice device);
typedef CUresult (*cuDevicePrimaryCtxRelease_v2_fn)(CUdevice device);
typedef CUresult (*cuCtxGetCurrent_fn)(CUcontext* ctx);
typedef CUresult (*cuCtxSetCurrent_fn)(CUcontext ctx);
typedef CUresult (*cuMemAlloc_v2_fn)(CUdeviceptr* dptr, size_t bytes);
typedef CUresult (*cuMemGetInfo_v2_fn)(size_t* free_bytes, size_t* total_bytes);
typedef CUresult (*cuMemFree_v2_fn)(CUdeviceptr dptr);
typedef CUresult (*cuMemHostAlloc_fn)(void** pp, size_t bytes, unsigned int flags);
typedef CUresult (*cuMemFreeHost_fn)(void* p);
typedef CUresult (*cuMemHostRegister_v2_fn)(void* p, size_t bytes, unsigned int flags);
typedef CUresult (*cuMemHostUnregister_fn)(void* p);
typedef CUresult (*cuMemcpyHtoDAsync_v2_fn)(CUdeviceptr dst, const void* src, size_t bytes,
                                            CUstream stream);
typedef CUresult (*cuMemcpyDtoH_v2_fn)(void* dst, CUdeviceptr src, size_t bytes);
typedef CUresult (*cuMemcpyDtoD_v2_fn)(CUdeviceptr dst, CUdeviceptr src, size_t bytes);
typedef CUresult (*cuStreamCreate_fn)(CUstream* stream, unsigned int flags);
typedef CUresult (*cuStreamDestroy_v2_fn)(CUstream stream);
typedef CUresult (*cuStreamSynchronize_fn)(CUstream stream);
typedef CUresult (*cuEventCreate_fn)(CUevent* event, unsigned int flags);
typedef CUresult (*cuEventRecord_fn)(CUevent event, CUstream stream);
typedef CUresult (*cuEventQuery_fn)(CUevent event);
typedef CUresult (*cuEventSynchronize_fn)(CUevent event);
typedef CUresult (*cuEventDestroy_v2_fn)(CUevent event);
typedef CUresult (*cuGetErrorString_fn)(CUresult error, const char** text);

#ifdef __cplusplus
}
#endif

#endif /* WARPLOAD_CUDA_ABI_H_ */
