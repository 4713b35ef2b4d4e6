// The dlopen shim for 3FS's USRBIO client library (libhf3fs_api_shared.so).
//
// warpload never links against the library: the "3fs" backend asks hf3fs_api() for a table of
// typed function pointers (signatures in storage/hf3fs_abi.h), filled through the shared dlopen
// helper (common/shared_library.hpp).
//
// Which library: the first of
//   1. $WARPLOAD_HF3FS_LIB            a full path to the .so (tests point it at the emulator);
//   2. $HF3FS_LIB_DIR/libhf3fs_api_shared.so   (the variable the existing 3FS reader uses);
//   3. dlopen("libhf3fs_api_shared.so")        the normal loader path (LD_LIBRARY_PATH, ldconfig).
// The environment is read on every call and the table is cached per resolved path, so a
// process (a test) may switch libraries between loads. A loaded library is never unloaded:
// buffers and rings made through it may outlive every Storage, and dlclose would pull the
// code from under them. A failed load is not cached.
//
// Thread safety: every function here may be called from any thread.
#pragma once

#include <string>

#include "storage/hf3fs_abi.h"

namespace warpload::detail {

// The USRBIO calls warpload makes. Every pointer is non-null in a table hf3fs_api() returns.
struct Hf3fsApi {
  std::string library;  // what was passed to dlopen (a path, or the bare soname)
  hf3fs_is_hf3fs_fn is_hf3fs = nullptr;
  hf3fs_extract_mount_point_fn extract_mount_point = nullptr;
  hf3fs_iovcreate_fn iovcreate = nullptr;
  hf3fs_iovdestroy_fn iovdestroy = nullptr;
  hf3fs_iorcreate4_fn iorcreate4 = nullptr;
  hf3fs_iordestroy_fn iordestroy = nullptr;
  hf3fs_reg_fd_fn reg_fd = nullptr;
  hf3fs_dereg_fd_fn dereg_fd = nullptr;
  hf3fs_prep_io_fn prep_io = nullptr;
  hf3fs_submit_ios_fn submit_ios = nullptr;
  hf3fs_wait_for_ios_fn wait_for_ios = nullptr;
};

// The library the environment names now (see the top of this file).
[[nodiscard]] std::string hf3fs_library_path();

// Loads the library (once per resolved path) and returns its table, valid for the rest of the
// process. Throws UnsupportedError naming the library, the path tried (with dlerror's reason)
// and WARPLOAD_HF3FS_LIB when it cannot be loaded, and naming the library and the symbol when
// one is missing.
[[nodiscard]] const Hf3fsApi& hf3fs_api();

// Whether hf3fs_api() would succeed now. Never throws.
[[nodiscard]] bool hf3fs_available() noexcept;

}  // namespace warpload::detail
