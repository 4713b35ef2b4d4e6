/* The subset of NVIDIA's cuFile API (GPUDirect Storage, libcufile.so.0) warpload calls,
 * declared here so nothing CUDA is needed to build. It mirrors cufile.h of cuFile 1.x as shipped
 * with CUDA 12 and 13 (the C ABI has been stable since cuFile 1.0 / CUDA 11.4):
 *
 *   CUfileError_t   { CUfileOpError err; CUresult cu_err; }      two ints, returned by value
 *   CUfileDescr_t   { enum CUfileFileHandleType type;            4 bytes + 4 padding
 *                     union { int fd; void* handle; } handle;    8 bytes
 *                     const CUfileFSOps_t* fs_ops; }             8 bytes (null: kernel FS)
 *   CUfileHandle_t  void*
 *   cuFileRead      returns bytes read (>= 0), -1 with errno set for a file-system error, or
 *                   -CUfileOpError (<= -5001) for a cuFile error
 *   cuFileDriverGetProperties fills CUfileDrvProps_t, whose first members are
 *                   nvfs.major_version and nvfs.minor_version (unsigned int); both 0 when the
 *                   nvidia-fs kernel driver is absent and cuFile runs in compatibility mode.
 *
 * The shim (src/device/cufile_shim.*) resolves these symbols with dlsym and the fake
 * (tests/fake_cufile/) exports them. Keep this file C-compatible.
 */
#ifndef WARPLOAD_CUFILE_ABI_H_
#define WARPLOAD_CUFILE_ABI_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "device/cuda_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CUfileOpError values (cufile.h: CUFILEOP_BASE_ERR = 5000). Only those warpload names. */
#define WARPLOAD_CU_FILE_SUCCESS 0
#define WARPLOAD_CUFILEOP_BASE_ERR 5000
#define WARPLOAD_CU_FILE_DRIVER_NOT_INITIALIZED 5001 /* nvidia-fs driver is not loaded */
#define WARPLOAD_CU_FILE_PLATFORM_NOT_SUPPORTED 5007
#define WARPLOAD_CU_FILE_IO_NOT_SUPPORTED 5008 /* GDS not supported on the current file */
#define WARPLOAD_CU_FILE_DEVICE_NOT_SUPPORTED 5009
#define WARPLOAD_CU_FILE_CUDA_DRIVER_ERROR 5011 /* then CUfileError_t::cu_err says which */
#define WARPLOAD_CU_FILE_CUDA_POINTER_INVALID 5012
#define WARPLOAD_CU_FILE_CUDA_CONTEXT_MISMATCH 5015
#define WARPLOAD_CU_FILE_INVALID_FILE_TYPE 5018
#define WARPLOAD_CU_FILE_DIO_NOT_SET 5020 /* fd direct IO not set */
#define WARPLOAD_CU_FILE_INVALID_VALUE 5022
#define WARPLOAD_CU_FILE_MEMORY_ALREADY_REGISTERED 5023
#define WARPLOAD_CU_FILE_MEMORY_NOT_REGISTERED 5024
#define WARPLOAD_CU_FILE_DRIVER_ALREADY_OPEN 5026
#define WARPLOAD_CU_FILE_HANDLE_NOT_REGISTERED 5027
#define WARPLOAD_CU_FILE_INTERNAL_ERROR 5030
#define WARPLOAD_CU_FILE_IO_DISABLED 5034 /* GDS disabled by config for the current file */
#define WARPLOAD_CU_FILE_GPU_MEMORY_PINNING_FAILED 5036
#define WARPLOAD_CU_FILE_IO_ERROR 5044

#define WARPLOAD_CU_FILE_HANDLE_TYPE_OPAQUE_FD 1

typedef int CUfileOpError;

typedef struct CUfileError {
  CUfileOpError err; /* WARPLOAD_CU_FILE_SUCCESS or a CUfileOpError */
  CUresult cu_err;   /* the CUDA driver's error when err == CU_FILE_CUDA_DRIVER_ERROR */
} CUfileError_t;

typedef struct CUfileFSOps CUfileFSOps_t; /* opaque here: warpload passes null */

typedef struct CUfileDescr_t {
  int type; /* enum CUfileFileHandleType: WARPLOAD_CU_FILE_HANDLE_TYPE_OPAQUE_FD */
  union {
    int fd;
    void* handle;
  } handle;
  const CUfileFSOps_t* fs_ops;
} CUfileDescr_t;

typedef void* CUfileHandle_t;

/* CUfileDrvProps_t is larger than this and its tail changed across versions; warpload reads
 * only the two leading fields through a zeroed buffer of WARPLOAD_CUFILE_DRV_PROPS_BYTES. */
typedef struct WarploadCUfileDrvPropsHead {
  unsigned int nvfs_major_version;
  unsigned int nvfs_minor_version;
} WarploadCUfileDrvPropsHead;
#define WARPLOAD_CUFILE_DRV_PROPS_BYTES 1024

typedef CUfileError_t (*cuFileDriverOpen_fn)(void);
typedef CUfileError_t (*cuFileDriverGetProperties_fn)(void* props /* CUfileDrvProps_t* */);
typedef CUfileError_t (*cuFileHandleRegister_fn)(CUfileHandle_t* fh, CUfileDescr_t* descr);
typedef void (*cuFileHandleDeregister_fn)(CUfileHandle_t fh);
typedef CUfileError_t (*cuFileBufRegister_fn)(const void* buf_base, size_t length, int flags);
typedef CUfileError_t (*cuFileBufDeregister_fn)(const void* buf_base);
typedef ssize_t (*cuFileRead_fn)(CUfileHandle_t fh, void* buf_base, size_t size,
                                 off_t file_offset, off_t buf_offset);

#ifdef __cplusplus
}
#endif

#endif /* WARPLOAD_CUFILE_ABI_H_ */
