#include "device/cuda_shim.hpp"

#include <cstdlib>
#include <string>
#include <utility>

#include "common/shared_library.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

const LibrarySpec& cuda_library() {
  static const LibrarySpec spec{
      .what = "CUDA driver",
      .soname = "libcuda.so.1",
      .env_var = "WARPLOAD_CUDA_LIB",
      .defaults = {},
      .missing_hint = "no NVIDIA driver on this machine",
      .env_hint = "",
      .symbol_hint = "not a libcuda.so.1, or a driver too old for warpload"};
  return spec;
}

// "<what>: <driver's text> (CUDA error N)"; the text is looked up through `api` because
// cuda_check() may run before the process-wide table exists (inside the first load).
std::string describe(const CudaApi* api, CUresult result, std::string_view what) {
  const char* text = nullptr;
  if (api != nullptr && api->get_error_string != nullptr &&
      api->get_error_string(result, &text) != WARPLOAD_CUDA_SUCCESS) {
    text = nullptr;
  }
  std::string message(what);
  message += ": ";
  message += text != nullptr ? text : "unknown CUDA error";
  message += " (CUDA error " + std::to_string(result) + ")";
  return message;
}

void check_with(const CudaApi* api, CUresult result, std::string_view what) {
  if (result == WARPLOAD_CUDA_SUCCESS) return;
  if (result == WARPLOAD_CUDA_ERROR_OUT_OF_MEMORY) {
    throw OutOfMemoryError(describe(api, result, what));
  }
  throw UnsupportedError(describe(api, result, what));
}

// The process-wide load: either a table or the message of the error the first load raised
// (re-thrown on every later call so the answer never changes within a process).
struct LoadedDriver {
  std::unique_ptr<CudaApi> api;
  std::string error;
};

// Binds the driver's table and calls cuInit(0). The library stays loaded even when cuInit
// fails: it may have started threads, and unloading code under them is worse than a leaked
// handle. Never unloaded otherwise either: device memory made through it may outlive every
// warpload object.
std::unique_ptr<CudaApi> load(SharedLibrary library) {
  auto api = std::make_unique<CudaApi>();
  api->library = library.path();
  library.bind({
      {"cuInit", &api->init},
      {"cuDriverGetVersion", &api->driver_get_version},
      {"cuDeviceGetCount", &api->device_get_count},
      {"cuDeviceGet", &api->device_get},
      {"cuDeviceGetName", &api->device_get_name},
      {"cuDeviceGetAttribute", &api->device_get_attribute},
      {"cuDeviceGetPCIBusId", &api->device_get_pci_bus_id},
      {"cuDeviceTotalMem_v2", &api->device_total_mem},
      {"cuDevicePrimaryCtxRetain", &api->primary_ctx_retain},
      {"cuDevicePrimaryCtxRelease_v2", &api->primary_ctx_release},
      {"cuCtxGetCurrent", &api->ctx_get_current},
      {"cuCtxSetCurrent", &api->ctx_set_current},
      {"cuMemAlloc_v2", &api->mem_alloc},
      {"cuMemFree_v2", &api->mem_free},
      {"cuMemGetInfo_v2", &api->mem_get_info},
      {"cuMemHostAlloc", &api->mem_host_alloc},
      {"cuMemFreeHost", &api->mem_free_host},
      {"cuMemHostRegister_v2", &api->mem_host_register},
      {"cuMemHostUnregister", &api->mem_host_unregister},
      {"cuMemcpyHtoDAsync_v2", &api->memcpy_htod_async},
      {"cuMemcpyDtoH_v2", &api->memcpy_dtoh},
      {"cuMemcpyDtoD_v2", &api->memcpy_dtod},
      {"cuStreamCreate", &api->stream_create},
      {"cuStreamDestroy_v2", &api->stream_destroy},
      {"cuStreamSynchronize", &api->stream_synchronize},
      {"cuEventCreate", &api->event_create},
      {"cuEventRecord", &api->event_record},
      {"cuEventQuery", &api->event_query},
      {"cuEventSynchronize", &api->event_synchronize},
      {"cuEventDestroy_v2", &api->event_destroy},
      {"cuGetErrorString", &api->get_error_string},
  });
  static_cast<void>(library.release());
  const CUresult result = api->init(0);
  if (result != WARPLOAD_CUDA_SUCCESS) {
    throw UnsupportedError(
        describe(api.get(), result, "CUDA driver '" + api->library + "': cuInit"));
  }
  return api;
}

LoadedDriver load_process_driver() {
  LoadedDriver loaded;
  try {
    loaded.api = load(SharedLibrary::open(cuda_library()));
  } catch (const Error& e) {
    loaded.error = e.what();
  }
  return loaded;
}

CUdevice device_handle(const CudaApi& api, int ordinal) {
  CUdevice handle = 0;
  check_with(&api, api.device_get(&handle, ordinal),
             "cuda:" + std::to_string(ordinal) + ": cuDeviceGet");
  return handle;
}

// Retains the primary context of `ordinal` and returns it; pairs with release_primary().
CUcontext retain_primary(const CudaApi& api, int ordinal) {
  const CUdevice handle = device_handle(api, ordinal);
  CUcontext context = nullptr;
  check_with(&api, api.primary_ctx_retain(&context, handle),
             "cuda:" + std::to_string(ordinal) + ": cuDevicePrimaryCtxRetain");
  return context;
}

void release_primary(const CudaApi& api, int ordinal) noexcept {
  CUdevice handle = 0;
  if (api.device_get(&handle, ordinal) == WARPLOAD_CUDA_SUCCESS) {
    static_cast<void>(api.primary_ctx_release(handle));
  }
}

}  // namespace

std::unique_ptr<CudaApi> load_cuda_api(const std::string& library) {
  return load(SharedLibrary::open_path(cuda_library(), library));
}

const CudaApi& cuda_api() {
  // Leaked on purpose: the table must stay valid through static destruction (buffers may be
  // freed late). Function-local static initialisation is thread-safe.
  static const LoadedDriver* const loaded = new LoadedDriver(load_process_driver());
  if (loaded->api == nullptr) throw UnsupportedError(loaded->error);
  return *loaded->api;
}

void cuda_check(CUresult result, std::string_view what) {
  if (result == WARPLOAD_CUDA_SUCCESS) return;
  const CudaApi* api = nullptr;
  try {
    api = &cuda_api();
  } catch (const Error&) {
    api = nullptr;  // describe the code without the driver's text
  }
  check_with(api, result, what);
}

int cuda_device_count() {
  const CudaApi& api = cuda_api();
  int count = 0;
  check_with(&api, api.device_get_count(&count), "cuDeviceGetCount");
  return count;
}

void check_cuda_device(int device) {
  std::string name = "cuda:" + std::to_string(device);
  int count = 0;
  try {
    count = cuda_device_count();
  } catch (const Error& e) {
    throw UnsupportedError(name + ": " + e.what());
  }
  if (device < 0 || device >= count) {
    throw UnsupportedError(name + ": no such device (the CUDA driver reports " +
                           std::to_string(count) + (count == 1 ? " device)" : " devices)"));
  }
}

std::string cuda_pci_bus_id(int device) {
  check_cuda_device(device);
  const CudaApi& api = cuda_api();
  char text[32] = {};
  check_with(
      &api,
      api.device_get_pci_bus_id(text, static_cast<int>(sizeof(text)), device_handle(api, device)),
      "cuda:" + std::to_string(device) + ": cuDeviceGetPCIBusId");
  text[sizeof(text) - 1] = '\0';
  return text;
}

CudaContextScope::CudaContextScope(int device) : device_(device) {
  const CudaApi& api = cuda_api();
  check_cuda_device(device);
  check_with(&api, api.ctx_get_current(&previous_), "cuCtxGetCurrent");
  CUcontext context = retain_primary(api, device);
  if (context != previous_) {
    const CUresult result = api.ctx_set_current(context);
    if (result != WARPLOAD_CUDA_SUCCESS) {
      release_primary(api, device);
      check_with(&api, result, "cuda:" + std::to_string(device) + ": cuCtxSetCurrent");
    }
  }
}

CudaContextScope::~CudaContextScope() {
  try {
    const CudaApi& api = cuda_api();  // loaded: the constructor succeeded
    static_cast<void>(api.ctx_set_current(previous_));
    release_primary(api, device_);
  } catch (...) {
    // A destructor must not throw; the driver call results are ignored here anyway.
  }
}

CudaStream::CudaStream(int device) : device_(device) {
  const CudaApi& api = cuda_api();
  const CudaContextScope scope(device);
  static_cast<void>(retain_primary(api, device));  // held until the destructor
  const CUresult result = api.stream_create(&stream_, WARPLOAD_CU_STREAM_NON_BLOCKING);
  if (result != WARPLOAD_CUDA_SUCCESS) {
    release_primary(api, device);
    check_with(&api, result, "cuda:" + std::to_string(device) + ": cuStreamCreate");
  }
}

CudaStream::~CudaStream() {
  try {
    const CudaApi& api = cuda_api();
    try {
      const CudaContextScope scope(device_);
      static_cast<void>(api.stream_destroy(stream_));
    } catch (...) {
      static_cast<void>(api.stream_destroy(stream_));  // best effort without the scope
    }
    release_primary(api, device_);
  } catch (...) {
    // A destructor must not throw.
  }
}

void CudaStream::synchronize() const {
  const CudaContextScope scope(device_);
  cuda_check(cuda_api().stream_synchronize(stream_),
             "cuda:" + std::to_string(device_) + ": cuStreamSynchronize");
}

CudaEvent::CudaEvent(int device) : device_(device) {
  const CudaApi& api = cuda_api();
  const CudaContextScope scope(device);
  static_cast<void>(retain_primary(api, device));
  const CUresult result = api.event_create(&event_, WARPLOAD_CU_EVENT_DISABLE_TIMING);
  if (result != WARPLOAD_CUDA_SUCCESS) {
    release_primary(api, device);
    check_with(&api, result, "cuda:" + std::to_string(device) + ": cuEventCreate");
  }
}

CudaEvent::~CudaEvent() {
  try {
    const CudaApi& api = cuda_api();
    try {
      const CudaContextScope scope(device_);
      static_cast<void>(api.event_destroy(event_));
    } catch (...) {
      static_cast<void>(api.event_destroy(event_));
    }
    release_primary(api, device_);
  } catch (...) {
    // A destructor must not throw.
  }
}

void CudaEvent::record(const CudaStream& stream) {
  const CudaContextScope scope(device_);
  cuda_check(cuda_api().event_record(event_, stream.get()),
             "cuda:" + std::to_string(device_) + ": cuEventRecord");
}

bool CudaEvent::query() const {
  const CudaContextScope scope(device_);
  const CUresult result = cuda_api().event_query(event_);
  if (result == WARPLOAD_CUDA_ERROR_NOT_READY) return false;
  cuda_check(result, "cuda:" + std::to_string(device_) + ": cuEventQuery");
  return true;
}

void CudaEvent::synchronize() const {
  const CudaContextScope scope(device_);
  cuda_check(cuda_api().event_synchronize(event_),
             "cuda:" + std::to_string(device_) + ": cuEventSynchronize");
}

void copy_to_device_async(std::byte* dst, const void* src, std::size_t bytes,
                          const CudaStream& stream) {
  const CudaContextScope scope(stream.device());
  cuda_check(cuda_api().memcpy_htod_async(to_device_ptr(dst), src, bytes, stream.get()),
             "cuda:" + std::to_string(stream.device()) + ": cuMemcpyHtoDAsync of " +
                 std::to_string(bytes) + " bytes");
}

void copy_to_host(void* dst, const std::byte* src, std::size_t bytes, int device) {
  const CudaContextScope scope(device);
  cuda_check(
      cuda_api().memcpy_dtoh(dst, to_device_ptr(src), bytes),
      "cuda:" + std::to_string(device) + ": cuMemcpyDtoH of " + std::to_string(bytes) + " bytes");
}

void copy_on_device(std::byte* dst, const std::byte* src, std::size_t bytes, int device) {
  const CudaContextScope scope(device);
  cuda_check(
      cuda_api().memcpy_dtod(to_device_ptr(dst), to_device_ptr(src), bytes),
      "cuda:" + std::to_string(device) + ": cuMemcpyDtoD of " + std::to_string(bytes) + " bytes");
}

CudaHostRegistration::CudaHostRegistration(int device, void* data, std::size_t bytes,
                                           unsigned flags)
    : device_(device), data_(data) {
  const CudaContextScope scope(device);
  cuda_check(cuda_api().mem_host_register(data, bytes, flags),
             "cuda:" + std::to_string(device) + ": cuMemHostRegister of " + std::to_string(bytes) +
                 " bytes");
}

CudaHostRegistration::~CudaHostRegistration() {
  try {
    const CudaContextScope scope(device_);
    static_cast<void>(cuda_api().mem_host_unregister(data_));
  } catch (...) {
    // Nothing to do: the range stays registered until the process ends.
  }
}

}  // namespace warpload::detail
