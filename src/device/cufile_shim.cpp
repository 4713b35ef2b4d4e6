#include "device/cufile_shim.hpp"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/shared_library.hpp"
#include "device/cuda_shim.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

static_assert(sizeof(CUfileError_t) == 8, "CUfileError_t is two ints");
static_assert(sizeof(CUfileDescr_t) == 24 && offsetof(CUfileDescr_t, handle) == 8 &&
                  offsetof(CUfileDescr_t, fs_ops) == 16,
              "CUfileDescr_t must match cufile.h on LP64");

const LibrarySpec& cufile_library() {
  static const LibrarySpec spec{
      .what = "cuFile",
      .soname = "libcufile.so.0",
      .env_var = "WARPLOAD_CUFILE_LIB",
      .defaults = {},
      .missing_hint = "GPUDirect Storage is not installed",
      .env_hint = "",
      .symbol_hint = "not a libcufile.so.0, or one older than cuFile 1.0"};
  return spec;
}

// Never unloaded once bound: registered handles and buffers live in it.
std::unique_ptr<CufileApi> load(const std::string& library) {
  SharedLibrary opened = SharedLibrary::open_path(cufile_library(), library);
  auto api = std::make_unique<CufileApi>();
  api->library = library;
  opened.bind({
      {"cuFileDriverOpen", &api->driver_open},
      {"cuFileDriverGetProperties", &api->driver_get_properties},
      {"cuFileHandleRegister", &api->handle_register},
      {"cuFileHandleDeregister", &api->handle_deregister},
      {"cuFileBufRegister", &api->buf_register},
      {"cuFileBufDeregister", &api->buf_deregister},
      {"cuFileRead", &api->read},
  });
  static_cast<void>(opened.release());
  return api;
}

}  // namespace

std::string cufile_library_name() { return cufile_library().candidates().front(); }

const CufileApi& cufile_api() {
  // Leaked on purpose (tables stay valid through static destruction); guarded by the mutex.
  static auto* const mutex = new std::mutex;
  static auto* const loaded = new std::map<std::string, std::unique_ptr<CufileApi>>;
  const std::string library = cufile_library_name();
  const std::lock_guard<std::mutex> lock(*mutex);
  auto it = loaded->find(library);
  if (it == loaded->end()) it = loaded->emplace(library, load(library)).first;
  return *it->second;
}

const char* cufile_error_text(int code) noexcept {
  switch (code < 0 ? -code : code) {
    case WARPLOAD_CU_FILE_SUCCESS:
      return "success";
    case WARPLOAD_CU_FILE_DRIVER_NOT_INITIALIZED:
      return "the nvidia-fs driver is not loaded (and compatibility mode is off)";
    case WARPLOAD_CU_FILE_PLATFORM_NOT_SUPPORTED:
      return "GPUDirect Storage is not supported on this platform";
    case WARPLOAD_CU_FILE_IO_NOT_SUPPORTED:
      return "GPUDirect Storage is not supported for this file (its file system)";
    case WARPLOAD_CU_FILE_DEVICE_NOT_SUPPORTED:
      return "GPUDirect Storage is not supported on this GPU";
    case WARPLOAD_CU_FILE_CUDA_DRIVER_ERROR:
      return "CUDA driver error";
    case WARPLOAD_CU_FILE_CUDA_POINTER_INVALID:
      return "invalid device pointer";
    case WARPLOAD_CU_FILE_CUDA_CONTEXT_MISMATCH:
      return "CUDA context mismatch";
    case WARPLOAD_CU_FILE_INVALID_FILE_TYPE:
      return "unsupported file type";
    case WARPLOAD_CU_FILE_DIO_NOT_SET:
      return "the file is not open with O_DIRECT";
    case WARPLOAD_CU_FILE_INVALID_VALUE:
      return "invalid argument";
    case WARPLOAD_CU_FILE_MEMORY_ALREADY_REGISTERED:
      return "device memory already registered";
    case WARPLOAD_CU_FILE_MEMORY_NOT_REGISTERED:
      return "device memory not registered";
    case WARPLOAD_CU_FILE_DRIVER_ALREADY_OPEN:
      return "driver already open";
    case WARPLOAD_CU_FILE_HANDLE_NOT_REGISTERED:
      return "file handle not registered";
    case WARPLOAD_CU_FILE_INTERNAL_ERROR:
      return "cuFile internal error";
    case WARPLOAD_CU_FILE_IO_DISABLED:
      return "GPUDirect Storage is disabled for this file by cufile.json";
    case WARPLOAD_CU_FILE_GPU_MEMORY_PINNING_FAILED:
      return "not enough GPU memory can be pinned (BAR1)";
    case WARPLOAD_CU_FILE_IO_ERROR:
      return "cuFile I/O error";
    default:
      return "unknown cuFile error";
  }
}

std::string describe_cufile_error(std::string_view what, CUfileError_t error) {
  std::string message(what);
  message += ": ";
  message += cufile_error_text(error.err);
  message += " (cuFile error " + std::to_string(error.err < 0 ? -error.err : error.err);
  if ((error.err < 0 ? -error.err : error.err) == WARPLOAD_CU_FILE_CUDA_DRIVER_ERROR) {
    message += ", CUDA error " + std::to_string(error.cu_err);
  }
  message += ")";
  return message;
}

CufileMode cufile_open_driver(int device) {
  // 1. CUDA and the device: without them cuFile cannot work, so its driver is not touched.
  check_cuda_device(device);
  // 2. The library and its symbols.
  const CufileApi& api = cufile_api();
  // 3. The driver, in the requested device's primary context.
  const CudaContextScope scope(device);
  const CUfileError_t opened = api.driver_open();
  if (opened.err != WARPLOAD_CU_FILE_SUCCESS &&
      opened.err != WARPLOAD_CU_FILE_DRIVER_ALREADY_OPEN) {
    throw UnsupportedError(describe_cufile_error("cuFileDriverOpen (" + api.library + ")", opened));
  }
  // The properties' leading fields are the nvidia-fs version: 0.0 means compatibility mode.
  // The buffer is larger than any CUfileDrvProps_t so its tail never matters.
  std::vector<unsigned char> props(WARPLOAD_CUFILE_DRV_PROPS_BYTES, 0);
  const CUfileError_t queried = api.driver_get_properties(props.data());
  if (queried.err != WARPLOAD_CU_FILE_SUCCESS) return CufileMode::kCompat;
  WarploadCUfileDrvPropsHead head{};
  static_assert(sizeof(head) <= WARPLOAD_CUFILE_DRV_PROPS_BYTES);
  std::memcpy(&head, props.data(), sizeof(head));
  return head.nvfs_major_version == 0 && head.nvfs_minor_version == 0 ? CufileMode::kCompat
                                                                      : CufileMode::kGds;
}

}  // namespace warpload::detail
