/* The subset of NCCL (libnccl.so.2) warpload calls, declared here so nothing NCCL is needed
 * to build. Types, values and signatures follow nccl.h of NCCL 2.x (2.7 or newer: ncclSend /
 * ncclRecv); the shim (src/device/nccl_shim.*) resolves the symbols with dlsym. cudaStream_t
 * is the driver's CUstream (the same opaque struct pointer). Keep this file C-compatible.
 */
#ifndef WARPLOAD_NCCL_ABI_H_
#define WARPLOAD_NCCL_ABI_H_

#include <stddef.h>

#include "device/cuda_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ncclComm* ncclComm_t;
#define WARPLOAD_NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[WARPLOAD_NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef int ncclResult_t; /* 0 == ncclSuccess */
#define WARPLOAD_NCCL_SUCCESS 0
#define WARPLOAD_NCCL_SYSTEM_ERROR 2
#define WARPLOAD_NCCL_REMOTE_ERROR 6
#define WARPLOAD_NCCL_IN_PROGRESS 7

typedef int ncclDataType_t;
#define WARPLOAD_NCCL_UINT8 1 /* ncclUint8: every transfer is in bytes */

typedef ncclResult_t (*ncclGetVersion_fn)(int* version);
typedef ncclResult_t (*ncclGetUniqueId_fn)(ncclUniqueId* id);
typedef ncclResult_t (*ncclCommInitRank_fn)(ncclComm_t* comm, int nranks, ncclUniqueId id,
                                            int rank);
typedef ncclResult_t (*ncclCommDestroy_fn)(ncclComm_t comm);
typedef ncclResult_t (*ncclCommAbort_fn)(ncclComm_t comm);
typedef ncclResult_t (*ncclCommGetAsyncError_fn)(ncclComm_t comm, ncclResult_t* async_error);
typedef const char* (*ncclGetErrorString_fn)(ncclResult_t result);
typedef ncclResult_t (*ncclAllGather_fn)(const void* send, void* recv, size_t count,
                                         ncclDataType_t type, ncclComm_t comm, CUstream stream);
typedef ncclResult_t (*ncclBroadcast_fn)(const void* send, void* recv, size_t count,
                                         ncclDataType_t type, int root, ncclComm_t comm,
                                         CUstream stream);
typedef ncclResult_t (*ncclSend_fn)(const void* send, size_t count, ncclDataType_t type, int peer,
                                    ncclComm_t comm, CUstream stream);
typedef ncclResult_t (*ncclRecv_fn)(void* recv, size_t count, ncclDataType_t type, int peer,
                                    ncclComm_t comm, CUstream stream);
typedef ncclResult_t (*ncclGroupStart_fn)(void);
typedef ncclResult_t (*ncclGroupEnd_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* WARPLOAD_NCCL_ABI_H_ */
