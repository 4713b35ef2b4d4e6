// A fake libcufile.so.0 for tests: the cuFile subset of src/device/cufile_abi.h with cuFile's
// return conventions, reading with pread() into the fake CUDA driver's device memory (which is
// host memory, tests/fake_cuda/). Behaviour, fault switches and the test-only entry points are
// described in README.md; fake_cufile_api.h declares the entry points.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "device/cufile_abi.h"
#include "fake_cuda/fake_cuda_api.h"

#define FAKE_CUFILE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr CUresult kCudaNotInitialized = 3;
constexpr CUresult kCudaInvalidContext = 201;

long long env_number(const char* name, long long fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  return (end != nullptr && *end == '\0') ? value : fallback;
}

struct Handle {
  int fd = -1;
};

struct Faults {
  long long driver_open_error = 0;      // FAKE_CUFILE_DRIVER_OPEN_ERROR
  bool compat = false;                  // FAKE_CUFILE_COMPAT
  long long handle_register_error = 0;  // FAKE_CUFILE_HANDLE_REGISTER_ERROR
  long long handle_register_after = 0;  // FAKE_CUFILE_HANDLE_REGISTER_AFTER
  long long buf_register_error = 0;     // FAKE_CUFILE_BUF_REGISTER_ERROR
  long long read_error = 0;             // FAKE_CUFILE_READ_ERROR (the return value)
  long long read_error_offset = 0;      // FAKE_CUFILE_READ_ERROR_OFFSET
  long long read_error_errno = EIO;     // FAKE_CUFILE_READ_ERRNO (with read_error == -1)
  long long read_error_times = -1;      // FAKE_CUFILE_READ_ERROR_TIMES (-1: always)
  long long short_read = 0;             // FAKE_CUFILE_SHORT_READ
  long long eof_at = -1;                // FAKE_CUFILE_EOF_AT
  long long read_delay_us = 0;          // FAKE_CUFILE_READ_DELAY_US

  void read_environment() {
    driver_open_error = env_number("FAKE_CUFILE_DRIVER_OPEN_ERROR", 0);
    compat = env_number("FAKE_CUFILE_COMPAT", 0) != 0;
    handle_register_error = env_number("FAKE_CUFILE_HANDLE_REGISTER_ERROR", 0);
    handle_register_after = env_number("FAKE_CUFILE_HANDLE_REGISTER_AFTER", 0);
    buf_register_error = env_number("FAKE_CUFILE_BUF_REGISTER_ERROR", 0);
    read_error = env_number("FAKE_CUFILE_READ_ERROR", 0);
    read_error_offset = env_number("FAKE_CUFILE_READ_ERROR_OFFSET", 0);
    read_error_errno = env_number("FAKE_CUFILE_READ_ERRNO", EIO);
    read_error_times = env_number("FAKE_CUFILE_READ_ERROR_TIMES", -1);
    short_read = env_number("FAKE_CUFILE_SHORT_READ", 0);
    eof_at = env_number("FAKE_CUFILE_EOF_AT", -1);
    read_delay_us = env_number("FAKE_CUFILE_READ_DELAY_US", 0);
  }
};

// All state; leaked on purpose (handles may be deregistered during static destruction).
struct State {
  std::mutex mutex;
  bool open = false;
  fake_cuda_device_range_fn device_range = nullptr;
  fake_cuda_current_device_fn current_device = nullptr;
  std::map<Handle*, std::unique_ptr<Handle>> handles;
  std::map<std::uintptr_t, std::size_t> buffers;  // registered base -> length
  Faults faults;
  long long driver_opens = 0;
  long long register_calls = 0;
  long long reads = 0;
  long long read_bytes = 0;
  long long buffer_reads = 0;
  long long in_flight = 0;
  long long max_in_flight = 0;
  long long read_errors_injected = 0;
  bool environment_read = false;

  void reset_counters() {
    faults.read_environment();
    environment_read = true;
    driver_opens = 0;
    register_calls = 0;
    reads = 0;
    read_bytes = 0;
    buffer_reads = 0;
    max_in_flight = in_flight;
    read_errors_injected = 0;
  }
};

State& state() {
  static State* const instance = new State;
  return *instance;
}

CUfileError_t status(int err, CUresult cu_err = 0) { return CUfileError_t{err, cu_err}; }

// With the mutex held: whether the fake CUDA driver is there and a context is current.
int cuda_check(const State& s, CUresult* cu_err) {
  if (s.device_range == nullptr || s.current_device == nullptr) {
    *cu_err = kCudaNotInitialized;
    return WARPLOAD_CU_FILE_CUDA_DRIVER_ERROR;
  }
  if (s.current_device() < 0) {
    *cu_err = kCudaInvalidContext;
    return WARPLOAD_CU_FILE_CUDA_DRIVER_ERROR;
  }
  return WARPLOAD_CU_FILE_SUCCESS;
}

}  // namespace

FAKE_CUFILE_EXPORT CUfileError_t cuFileDriverOpen(void) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.faults.read_environment();
  s.environment_read = true;
  if (s.faults.driver_open_error != 0) {
    return status(static_cast<int>(s.faults.driver_open_error));
  }
  if (s.device_range == nullptr) {
    // cuFile needs the CUDA driver the process already loaded (the fake one, found by the
    // path in FAKE_CUFILE_CUDA_LIB or by its soname); it never loads one itself.
    const char* path = std::getenv("FAKE_CUFILE_CUDA_LIB");
    void* cuda =
        dlopen(path != nullptr && *path != '\0' ? path : "libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (cuda == nullptr) return status(WARPLOAD_CU_FILE_CUDA_DRIVER_ERROR, kCudaNotInitialized);
    s.device_range =
        reinterpret_cast<fake_cuda_device_range_fn>(dlsym(cuda, "fake_cuda_device_range"));
    s.current_device =
        reinterpret_cast<fake_cuda_current_device_fn>(dlsym(cuda, "fake_cuda_current_device"));
    if (s.device_range == nullptr || s.current_device == nullptr) {
      s.device_range = nullptr;
      s.current_device = nullptr;
      return status(WARPLOAD_CU_FILE_PLATFORM_NOT_SUPPORTED);  // a real driver: not for the fake
    }
  }
  s.open = true;
  ++s.driver_opens;
  return status(WARPLOAD_CU_FILE_SUCCESS);
}

FAKE_CUFILE_EXPORT CUfileError_t cuFileDriverGetProperties(void* props) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (props == nullptr) return status(WARPLOAD_CU_FILE_INVALID_VALUE);
  if (!s.open) return status(WARPLOAD_CU_FILE_DRIVER_NOT_INITIALIZED);
  // Only the leading nvfs version is written: 0.0 is how cuFile says "compatibility mode".
  const WarploadCUfileDrvPropsHead head{s.faults.compat ? 0U : 2U, s.faults.compat ? 0U : 17U};
  std::memcpy(props, &head, sizeof(head));
  return status(WARPLOAD_CU_FILE_SUCCESS);
}

FAKE_CUFILE_EXPORT CUfileError_t cuFileHandleRegister(CUfileHandle_t* fh, CUfileDescr_t* descr) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.open) return status(WARPLOAD_CU_FILE_DRIVER_NOT_INITIALIZED);
  if (fh == nullptr || descr == nullptr || descr->fs_ops != nullptr) {
    return status(WARPLOAD_CU_FILE_INVALID_VALUE);
  }
  if (descr->type != WARPLOAD_CU_FILE_HANDLE_TYPE_OPAQUE_FD) {
    return status(WARPLOAD_CU_FILE_INVALID_FILE_TYPE);
  }
  const long long call = s.register_calls++;
  if (s.faults.handle_register_error != 0 && call >= s.faults.handle_register_after) {
    return status(static_cast<int>(s.faults.handle_register_error));
  }
  const int fd = descr->handle.fd;
  struct stat info {};
  if (fd < 0 || fstat(fd, &info) != 0) return status(WARPLOAD_CU_FILE_INVALID_VALUE);
  if (!S_ISREG(info.st_mode)) return status(WARPLOAD_CU_FILE_INVALID_FILE_TYPE);
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_ACCMODE) == O_WRONLY) {
    return status(WARPLOAD_CU_FILE_INVALID_VALUE);
  }
  // GDS mode DMAs around the page cache: it wants O_DIRECT descriptors.
  if (!s.faults.compat && (flags & O_DIRECT) == 0) return status(WARPLOAD_CU_FILE_DIO_NOT_SET);
  auto handle = std::make_unique<Handle>();
  handle->fd = fd;
  *fh = handle.get();
  s.handles.emplace(handle.get(), std::move(handle));
  return status(WARPLOAD_CU_FILE_SUCCESS);
}

FAKE_CUFILE_EXPORT void cuFileHandleDeregister(CUfileHandle_t fh) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.handles.erase(static_cast<Handle*>(fh));
}

FAKE_CUFILE_EXPORT CUfileError_t cuFileBufRegister(const void* buf_base, size_t length, int flags) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.open) return status(WARPLOAD_CU_FILE_DRIVER_NOT_INITIALIZED);
  if (buf_base == nullptr || length == 0 || flags != 0) {
    return status(WARPLOAD_CU_FILE_INVALID_VALUE);
  }
  CUresult cu_err = 0;
  if (const int err = cuda_check(s, &cu_err); err != WARPLOAD_CU_FILE_SUCCESS) {
    return status(err, cu_err);
  }
  const auto base = reinterpret_cast<std::uintptr_t>(buf_base);
  if (s.device_range(base, length) == 0) return status(WARPLOAD_CU_FILE_CUDA_POINTER_INVALID);
  if (s.faults.buf_register_error != 0) {
    return status(static_cast<int>(s.faults.buf_register_error));
  }
  auto next = s.buffers.lower_bound(base);
  if (next != s.buffers.end() && next->first < base + length) {
    return status(WARPLOAD_CU_FILE_MEMORY_ALREADY_REGISTERED);
  }
  if (next != s.buffers.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second > base) {
      return status(WARPLOAD_CU_FILE_MEMORY_ALREADY_REGISTERED);
    }
  }
  s.buffers.emplace(base, length);
  return status(WARPLOAD_CU_FILE_SUCCESS);
}

FAKE_CUFILE_EXPORT CUfileError_t cuFileBufDeregister(const void* buf_base) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.open) return status(WARPLOAD_CU_FILE_DRIVER_NOT_INITIALIZED);
  if (s.buffers.erase(reinterpret_cast<std::uintptr_t>(buf_base)) == 0) {
    return status(WARPLOAD_CU_FILE_INVALID_VALUE);
  }
  return status(WARPLOAD_CU_FILE_SUCCESS);
}

FAKE_CUFILE_EXPORT ssize_t cuFileRead(CUfileHandle_t fh, void* buf_base, size_t size,
                                      off_t file_offset, off_t buf_offset) {
  State& s = state();
  int fd = -1;
  std::byte* dest = nullptr;
  std::size_t wanted = size;
  long long delay_us = 0;
  long long short_read = 0;
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.open) return -WARPLOAD_CU_FILE_DRIVER_NOT_INITIALIZED;
    auto it = s.handles.find(static_cast<Handle*>(fh));
    if (it == s.handles.end()) return -WARPLOAD_CU_FILE_HANDLE_NOT_REGISTERED;
    CUresult cu_err = 0;
    if (cuda_check(s, &cu_err) != WARPLOAD_CU_FILE_SUCCESS) {
      return -WARPLOAD_CU_FILE_CUDA_DRIVER_ERROR;
    }
    if (buf_base == nullptr || file_offset < 0 || buf_offset < 0) {
      return -WARPLOAD_CU_FILE_INVALID_VALUE;
    }
    const auto base = reinterpret_cast<std::uintptr_t>(buf_base);
    const auto at = base + static_cast<std::uintptr_t>(buf_offset);
    if (size > 0 && s.device_range(at, size) == 0) return -WARPLOAD_CU_FILE_CUDA_POINTER_INVALID;
    if (auto reg = s.buffers.find(base); reg != s.buffers.end()) {
      // A registered base: the whole read must stay inside the registration.
      if (static_cast<std::uint64_t>(buf_offset) + size > reg->second) {
        return -WARPLOAD_CU_FILE_INVALID_VALUE;
      }
      ++s.buffer_reads;
    }
    ++s.reads;
    const Faults& f = s.faults;
    const auto begin = static_cast<long long>(file_offset);
    const auto end = begin + static_cast<long long>(size);
    if (f.read_error != 0 && f.read_error_offset >= begin && f.read_error_offset < end &&
        (f.read_error_times < 0 || s.read_errors_injected < f.read_error_times)) {
      ++s.read_errors_injected;
      if (f.read_error == -1) errno = static_cast<int>(f.read_error_errno);
      return static_cast<ssize_t>(f.read_error);
    }
    if (f.eof_at >= 0) {
      wanted = begin >= f.eof_at ? 0 : static_cast<std::size_t>(std::min(end, f.eof_at) - begin);
    }
    fd = it->second->fd;
    dest = reinterpret_cast<std::byte*>(at);
    delay_us = f.read_delay_us;
    short_read = f.short_read;
    s.max_in_flight = std::max(s.max_in_flight, ++s.in_flight);
  }
  if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
  // The whole range is read (an O_DIRECT descriptor needs aligned lengths); a short-read switch
  // then reports fewer bytes, as a real short read would leave them unspecified.
  ssize_t got = wanted == 0 ? 0 : pread(fd, dest, wanted, file_offset);
  const int error_number = errno;
  const std::lock_guard<std::mutex> lock(s.mutex);
  --s.in_flight;
  if (got < 0) {
    errno = error_number;
    return -1;
  }
  if (short_read > 0 && got > short_read) got = static_cast<ssize_t>(short_read);
  s.read_bytes += got;
  return got;
}

// ---- test-only entry points (fake_cufile_api.h) ----

namespace {
template <typename Fn>
long long locked(Fn fn) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  return fn(s);
}
}  // namespace

FAKE_CUFILE_EXPORT long long fake_cufile_live_handles() {
  return locked([](State& s) { return static_cast<long long>(s.handles.size()); });
}
FAKE_CUFILE_EXPORT long long fake_cufile_live_buffers() {
  return locked([](State& s) { return static_cast<long long>(s.buffers.size()); });
}
FAKE_CUFILE_EXPORT long long fake_cufile_driver_opens() {
  return locked([](State& s) { return s.driver_opens; });
}
FAKE_CUFILE_EXPORT long long fake_cufile_reads() {
  return locked([](State& s) { return s.reads; });
}
FAKE_CUFILE_EXPORT long long fake_cufile_read_bytes() {
  return locked([](State& s) { return s.read_bytes; });
}
FAKE_CUFILE_EXPORT long long fake_cufile_max_concurrent_reads() {
  return locked([](State& s) { return s.max_in_flight; });
}
FAKE_CUFILE_EXPORT long long fake_cufile_buffer_reads() {
  return locked([](State& s) { return s.buffer_reads; });
}
FAKE_CUFILE_EXPORT void fake_cufile_reset() {
  locked([](State& s) {
    s.reset_counters();
    return 0LL;
  });
}
