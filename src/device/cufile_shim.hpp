// The cuFile (GPUDirect Storage) shim: a table of typed function pointers filled from
// libcufile.so.0 with dlopen/dlsym, for the "gds" storage backend (src/storage/gds_storage.cpp).
//
// Which library: $WARPLOAD_CUFILE_LIB if set and non-empty (tests point it at
// tests/fake_cufile/), else "libcufile.so.0" through the normal loader path. The environment is
// read on every call and the table is cached per resolved name, so a process (a test) may
// switch libraries between loads; a failed load is not cached. A loaded library is never
// unloaded: registrations made through it may outlive every warpload object.
//
// The driver: cufile_open_driver() calls cuFileDriverOpen() -- only after the checks that
// make it safe (see its comment) -- and reports the mode cuFile runs in. warpload never calls
// cuFileDriverClose(): other users of cuFile in the process (PyTorch, KvikIO) may still need
// the driver, and the process's exit releases it.
//
// Thread safety: every function here may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "device/cufile_abi.h"

namespace warpload::detail {

// The cuFile calls warpload makes. Every pointer is non-null in a table cufile_api() returns.
struct CufileApi {
  std::string library;  // what was passed to dlopen (a path, or the bare soname)
  cuFileDriverOpen_fn driver_open = nullptr;
  cuFileDriverGetProperties_fn driver_get_properties = nullptr;
  cuFileHandleRegister_fn handle_register = nullptr;
  cuFileHandleDeregister_fn handle_deregister = nullptr;
  cuFileBufRegister_fn buf_register = nullptr;
  cuFileBufDeregister_fn buf_deregister = nullptr;
  cuFileRead_fn read = nullptr;
};

// The library the environment names now ($WARPLOAD_CUFILE_LIB, else "libcufile.so.0").
[[nodiscard]] std::string cufile_library_name();

// Loads the library (once per resolved name) and returns its table, valid for the rest of the
// process. Throws UnsupportedError naming the library and dlerror()'s reason when it cannot be
// loaded, or the library and the missing symbol.
[[nodiscard]] const CufileApi& cufile_api();

// How cuFile reads once its driver is open.
enum class CufileMode : std::uint8_t {
  kGds,     // the nvidia-fs kernel driver is loaded: DMA from storage into device memory
  kCompat,  // compatibility mode: cuFile reads with POSIX calls through its own bounce buffers
};

// Opens the cuFile driver for reads into `device`'s memory and returns the mode it runs in.
// Checks first, in this order, and throws UnsupportedError naming the first that fails,
// without calling cuFileDriverOpen():
//   1. the CUDA driver loads and `device` is a valid ordinal (cuFile cannot work without it,
//      and on a machine with no GPU cuFileDriverOpen may block in driver probing);
//   2. the cuFile library loads and has every symbol (cufile_api());
// then makes `device`'s primary context current (so cuFile initialises in that context and
// never creates one on device 0) and calls cuFileDriverOpen(): a result other than success or
// CU_FILE_DRIVER_ALREADY_OPEN throws UnsupportedError with describe_cufile_error()'s text.
// Called once per GdsStorage; cuFile treats a second open as a no-op.
[[nodiscard]] CufileMode cufile_open_driver(int device);

// "<what>: <cuFile's meaning of code> (cuFile error <code>)", plus the CUDA driver's error
// number for CU_FILE_CUDA_DRIVER_ERROR. `code` may be given with either sign.
[[nodiscard]] std::string describe_cufile_error(std::string_view what, CUfileError_t error);

// cuFile's text for a CUfileOpError (sign ignored); "unknown cuFile error" for other values.
[[nodiscard]] const char* cufile_error_text(int code) noexcept;

}  // namespace warpload::detail
