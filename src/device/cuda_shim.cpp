#include "device/cuda_shim.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr const char* kLibraryName = "libcuda.so.1";

template <typename Fn>
void bind(void* handle, const std::string& library, const char* symbol, Fn* slot) {
  dlerror();  // clear a stale message
  void* address = dlsym(handle, symbol);
  if (address == nullptr) {
    throw UnsupportedError("CUDA driver library '" + library + "' has no symbol '" + symbol +
                           "' (not a libcuda.so.1, or a driver too old for warpload)");
  }
  *slot = reinterpret_cast<Fn>(address);
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

LoadedDriver load_process_driver() {
  const char* explicit_path = std::getenv("WARPLOAD_CUDA_LIB");
  const std::string library =
      explicit_path != nullptr && *explicit_path != '\0' ? explicit_path : kLibraryName;
  LoadedDriver loaded;
  try {
    loaded.api = load_cuda_api(library);
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
  // RTLD_LOCAL: the driver's symbols must not satisfy other libraries' lookups. Never
  // dlclosed: device memory made through it may outlive every warpload object.
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* reason = dlerror();
    throw UnsupportedError("cannot load the CUDA driver library '" + library +
                           "': " + (reason != nullptr ? reason : "unknown reason") +
                           " (no NVIDIA driver on this machine? set WARPLOAD_CUDA_LIB to the "
                           "full path of libcuda.so.1)");
  }
  auto api = std::make_unique<CudaApi>();
  api->library = library;
  bind(handle, library, "cuInit", &api->init);
  bind(handle, library, "cuDriverGetVersion", &api->driver_get_version);
  bind(handle, library, "cuDeviceGetCount", &api->device_get_count);
  bind(handle, library, "cuDeviceGet", &api->device_get);
  bind(handle, library, "cuDeviceGetName", &api->device_get_name);
  bind(handle, library, "cuDeviceGetAttribute", &api->device_get_attribute);
  bind(handle, library, "cuDeviceGetPCIBusId", &api->device_get_pci_bus_id);
  bind(handle, library, "cuDeviceTotalMem_v2", &api->device_total_mem);
  bind(handle, library, "cuDevicePrimaryCtxRetain", &api->primary_ctx_retain);
  bind(handle, library, "cuDevicePrimaryCtxRelease_v2", &api->primary_ctx_release);
  bind(handle, library, "cuCtxGetCurrent", &api->ctx_get_current);
  bind(handle, library, "cuCtxSetCurrent", &api->ctx_set_current);
  bind(handle, library, "cuMemAlloc_v2", &api->mem_alloc);
  bind(handle, library, "cuMemFree_v2", &api->mem_free);
  bind(handle, library, "cuMemGetInfo_v2", &api->mem_get_info);
  bind(handle, library, "cuMemHostAlloc", &api->mem_host_alloc);
  bind(handle, library, "cuMemFreeHost", &api->mem_free_host);
  bind(handle, library, "cuMemHostRegister_v2", &api->mem_host_register);
  bind(handle, library, "cuMemHostUnregister", &api->mem_host_unregister);
  bind(handle, library, "cuMemcpyHtoDAsync_v2", &api->memcpy_htod_async);
  bind(handle, library, "cuMemcpyDtoH_v2", &api->memcpy_dtoh);
  bind(handle, library, "cuMemcpyDtoD_v2", &api->memcpy_dtod);
  bind(handle, library, "cuStreamCreate", &api->stream_create);
  bind(handle, library, "cuStreamDestroy_v2", &api->stream_destroy);
  bind(handle, library, "cuStreamSynchronize", &api->stream_synchronize);
  bind(handle, library, "cuEventCreate", &api->event_create);
  bind(handle, library, "cuEventRecord", &api->event_record);
  bind(handle, library, "cuEventQuery", &api->event_query);
  bind(handle, library, "cuEventSynchronize", &api->event_synchronize);
  bind(handle, library, "cuEventDestroy_v2", &api->event_destroy);
  bind(handle, library, "cuGetErrorString", &api->get_error_string);
  // The handle is deliberately kept even on failure below: the library may have started
  // threads in cuInit, and unloading code under them is worse than a leaked handle.
  const CUresult result = api->init(0);
  if (result != WARPLOAD_CUDA_SUCCESS) {
    throw UnsupportedError(describe(api.get(), result, "CUDA driver '" + library + "': cuInit"));
  }
  return api;
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

CudaHostRegistration::CudaHostRegistration(int device, void* data, std::size_t bytes)
    : device_(device), data_(data) {
  const CudaContextScope scope(device);
  cuda_check(cuda_api().mem_host_register(data, bytes, WARPLOAD_CU_MEMHOSTREGISTER_PORTABLE),
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
