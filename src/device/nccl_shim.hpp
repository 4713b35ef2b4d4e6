// The NCCL shim: a table of typed function pointers filled from libnccl.so.2 with
// dlopen/dlsym, loaded once per process (the library is never unloaded).
//
// Which library: $WARPLOAD_NCCL_LIB if set and non-empty, else "libnccl.so.2" through the
// normal loader path. The result (the table, or the error) is cached per library name.
//
// Thread safety: every function may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "device/nccl_abi.h"

namespace warpload::detail {

struct NcclApi {
  std::string library;
  int version = 0;  // ncclGetVersion: e.g. 22005 for 2.20.5
  ncclGetVersion_fn get_version = nullptr;
  ncclGetUniqueId_fn get_unique_id = nullptr;
  ncclCommInitRank_fn comm_init_rank = nullptr;
  ncclCommDestroy_fn comm_destroy = nullptr;
  ncclCommAbort_fn comm_abort = nullptr;
  ncclCommGetAsyncError_fn comm_get_async_error = nullptr;
  ncclGetErrorString_fn get_error_string = nullptr;
  ncclAllGather_fn all_gather = nullptr;
  ncclBroadcast_fn broadcast = nullptr;
  ncclSend_fn send = nullptr;
  ncclRecv_fn recv = nullptr;
  ncclGroupStart_fn group_start = nullptr;
  ncclGroupEnd_fn group_end = nullptr;
};

// $WARPLOAD_NCCL_LIB if set and non-empty, else "libnccl.so.2".
[[nodiscard]] std::string nccl_library_name();

// The library, loaded on first use. Throws UnsupportedError naming the library and the
// dlerror() text or the missing symbol.
[[nodiscard]] const NcclApi& nccl_api();

// Loads `library` afresh (not cached, never unloaded): the core of nccl_api(), for tests of
// the error paths. Same errors.
[[nodiscard]] std::unique_ptr<NcclApi> load_nccl_api(const std::string& library);

}  // namespace warpload::detail
