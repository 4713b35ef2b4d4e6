// A fake libcuda.so.1 for tests: the driver API subset of src/device/cuda_abi.h, with device
// memory in host memory and every stream served by its own worker thread, so that
// asynchronous copies really happen later. Behaviour, environment knobs and the test-only
// entry points are described in README.md; fake_cuda_api.h declares the entry points.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "device/cuda_abi.h"

#define FAKE_CUDA_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr CUresult kSuccess = 0;
constexpr CUresult kInvalidValue = 1;
constexpr CUresult kOutOfMemory = 2;
constexpr CUresult kNotInitialized = 3;
constexpr CUresult kNoDevice = 100;
constexpr CUresult kInvalidDevice = 101;
constexpr CUresult kInvalidContext = 201;
constexpr CUresult kInvalidHandle = 400;
constexpr CUresult kNotReady = 600;
constexpr CUresult kIllegalAddress = 700;
constexpr CUresult kAlreadyRegistered = 712;
constexpr CUresult kNotRegistered = 713;

constexpr std::size_t kDeviceAlignment = 256;
constexpr std::size_t kTotalMemory = std::size_t{16} << 30;
constexpr unsigned char kFreshDeviceByte = 0xCD;  // uninitialised device memory reads as this

long long env_number(const char* name, long long fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  return (end != nullptr && *end == '\0') ? value : fallback;
}

struct Context {
  int device = 0;
  int refcount = 0;            // primary-context retains; 0 = inactive (destroyed)
  CUresult sticky = kSuccess;  // first asynchronous error; every later sync reports it
};

// One stream: a FIFO of operations run in order by `worker`.
struct Stream {
  Context* context = nullptr;
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::function<void()>> queue;  // guarded by mutex
  std::uint64_t enqueued = 0;               // guarded by mutex
  std::uint64_t completed = 0;              // guarded by mutex
  bool stopping = false;                    // guarded by mutex
  std::thread worker;

  void enqueue(std::function<void()> op) {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      queue.push_back(std::move(op));
      ++enqueued;
    }
    changed.notify_all();
  }
  std::uint64_t mark() {
    const std::lock_guard<std::mutex> lock(mutex);
    return enqueued;
  }
  void wait_for(std::uint64_t target) {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return completed >= target; });
  }
  bool reached(std::uint64_t target) {
    const std::lock_guard<std::mutex> lock(mutex);
    return completed >= target;
  }
  void run() {
    for (;;) {
      std::function<void()> op;
      {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, and drained
        op = std::move(queue.front());
        queue.pop_front();
      }
      op();
      {
        const std::lock_guard<std::mutex> lock(mutex);
        ++completed;
      }
      changed.notify_all();
    }
  }
};

struct Event {
  Context* context = nullptr;
  std::shared_ptr<Stream> stream;  // null: nothing recorded (or recorded on the null stream)
  std::uint64_t target = 0;
};

struct DeviceAllocation {
  std::size_t size;
  Context* context;
};

// All driver state. Leaked on purpose: worker threads may still run during static destruction.
struct State {
  std::mutex mutex;  // guards everything below, and device memory contents during copies
  bool initialized = false;
  int device_count = 0;
  std::vector<std::unique_ptr<Context>> contexts;
  std::map<std::uintptr_t, DeviceAllocation> device_memory;  // base -> allocation
  std::map<std::uintptr_t, std::size_t> pinned;              // cuMemHostAlloc base -> bytes
  std::map<std::uintptr_t, std::size_t> registered;          // cuMemHostRegister base -> bytes
  std::map<Stream*, std::shared_ptr<Stream>> streams;
  std::map<Event*, std::unique_ptr<Event>> events;
  long long device_bytes = 0;
  long long pinned_bytes = 0;
  // Injection and counters (reset by fake_cuda_reset()).
  long long fail_alloc_after = -1;
  long long fail_copy_after = -1;
  long long copy_delay_us = 50;
  long long alloc_calls = 0;
  long long copy_calls = 0;
  long long async_copies = 0;
  long long pageable_copies = 0;
  long long registered_copies = 0;   // async copies out of a cuMemHostRegister'ed range
  long long registration_calls = 0;  // successful cuMemHostRegister calls
  void (*copy_observer)(const void*, std::size_t) = nullptr;

  void read_environment() {
    fail_alloc_after = env_number("FAKE_CUDA_FAIL_ALLOC_AFTER", -1);
    fail_copy_after = env_number("FAKE_CUDA_FAIL_COPY_AFTER", -1);
    copy_delay_us = env_number("FAKE_CUDA_COPY_DELAY_US", 50);
    alloc_calls = 0;
    copy_calls = 0;
    async_copies = 0;
    pageable_copies = 0;
    registered_copies = 0;
    registration_calls = 0;
  }
};

State& state() {
  static State* const instance = new State;
  return *instance;
}

thread_local Context* current_context = nullptr;

// With state().mutex held: the current context, or why there is none.
CUresult require_context(const State& s, Context** out) {
  if (!s.initialized) return kNotInitialized;
  if (current_context == nullptr || current_context->refcount == 0) return kInvalidContext;
  *out = current_context;
  return kSuccess;
}

// With state().mutex held: whether [p, p + bytes) lies inside one range of `ranges`.
template <typename Value>
typename std::map<std::uintptr_t, Value>::const_iterator find_range(
    const std::map<std::uintptr_t, Value>& ranges, std::uintptr_t p, std::size_t bytes,
    std::size_t (*size_of)(const Value&)) {
  auto it = ranges.upper_bound(p);
  if (it == ranges.begin()) return ranges.end();
  --it;
  const std::size_t size = size_of(it->second);
  if (p - it->first > size || bytes > size - (p - it->first)) return ranges.end();
  return it;
}
std::size_t allocation_size(const DeviceAllocation& a) { return a.size; }
std::size_t plain_size(const std::size_t& n) { return n; }

bool in_device_memory(const State& s, CUdeviceptr p, std::size_t bytes) {
  return find_range(s.device_memory, static_cast<std::uintptr_t>(p), bytes, allocation_size) !=
         s.device_memory.end();
}
bool is_page_locked(const State& s, const void* p, std::size_t bytes) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  return find_range(s.pinned, address, bytes, plain_size) != s.pinned.end() ||
         find_range(s.registered, address, bytes, plain_size) != s.registered.end();
}
bool overlaps(const std::map<std::uintptr_t, std::size_t>& ranges, std::uintptr_t p,
              std::size_t bytes) {
  auto it = ranges.lower_bound(p + bytes);
  if (it == ranges.begin()) return false;
  --it;
  return it->first + it->second > p;
}

// With state().mutex held.
std::shared_ptr<Stream> find_stream(const State& s, CUstream handle) {
  auto it = s.streams.find(reinterpret_cast<Stream*>(handle));
  return it == s.streams.end() ? nullptr : it->second;
}

// Waits for every stream of `context` to drain (the fake's stand-in for the implicit
// synchronisation of synchronous copies). Call without state().mutex held.
void drain_context(Context* context) {
  std::vector<std::pair<std::shared_ptr<Stream>, std::uint64_t>> pending;
  {
    State& s = state();
    const std::lock_guard<std::mutex> lock(s.mutex);
    for (const auto& [handle, stream] : s.streams) {
      if (stream->context == context) pending.emplace_back(stream, stream->mark());
    }
  }
  for (auto& [stream, target] : pending) stream->wait_for(target);
}

const char* error_text(CUresult code) {
  switch (code) {
    case kSuccess:
      return "no error";
    case kInvalidValue:
      return "invalid argument";
    case kOutOfMemory:
      return "out of memory";
    case kNotInitialized:
      return "initialization error";
    case kNoDevice:
      return "no CUDA-capable device is detected";
    case kInvalidDevice:
      return "invalid device ordinal";
    case kInvalidContext:
      return "invalid device context";
    case kInvalidHandle:
      return "invalid resource handle";
    case kNotReady:
      return "device not ready";
    case kIllegalAddress:
      return "an illegal memory access was encountered";
    case kAlreadyRegistered:
      return "part or all of the requested memory range is already mapped";
    case kNotRegistered:
      return "pointer does not correspond to a registered memory region";
    default:
      return nullptr;
  }
}

}  // namespace

// ---- driver API ----

FAKE_CUDA_EXPORT CUresult cuInit(unsigned int flags) {
  if (flags != 0) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (s.initialized) return kSuccess;
  const long long count = env_number("FAKE_CUDA_DEVICES", 2);
  if (count <= 0) return kNoDevice;
  s.device_count = static_cast<int>(count);
  for (int i = 0; i < s.device_count; ++i) {
    auto context = std::make_unique<Context>();
    context->device = i;
    s.contexts.push_back(std::move(context));
  }
  s.read_environment();
  s.initialized = true;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDriverGetVersion(int* version) {
  if (version == nullptr) return kInvalidValue;
  *version = 12040;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDeviceGetCount(int* count) {
  if (count == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  *count = s.device_count;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  if (device == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (ordinal < 0 || ordinal >= s.device_count) return kInvalidDevice;
  *device = ordinal;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
  if (name == nullptr || len <= 0) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (device < 0 || device >= s.device_count) return kInvalidDevice;
  std::snprintf(name, static_cast<std::size_t>(len), "Fake CUDA Device %d", device);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice device) {
  if (value == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (device < 0 || device >= s.device_count) return kInvalidDevice;
  switch (attribute) {
    case WARPLOAD_CU_DEVICE_ATTRIBUTE_PCI_BUS_ID:
      *value = 0x10 + device;
      return kSuccess;
    case WARPLOAD_CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID:
      *value = 0;
      return kSuccess;
    case WARPLOAD_CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID:
      *value = 0;
      return kSuccess;
    default:
      return kInvalidValue;
  }
}

FAKE_CUDA_EXPORT CUresult cuDeviceGetPCIBusId(char* bus_id, int len, CUdevice device) {
  if (bus_id == nullptr || len <= 0) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (device < 0 || device >= s.device_count) return kInvalidDevice;
  // Bus 0x10 + N, as cuDeviceGetAttribute(PCI_BUS_ID) reports; upper-case like the real one.
  if (len < 13) return kInvalidValue;
  std::snprintf(bus_id, static_cast<std::size_t>(len), "0000:%02X:00.0", 0x10 + device);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
  if (bytes == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (device < 0 || device >= s.device_count) return kInvalidDevice;
  *bytes = kTotalMemory;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice device) {
  if (ctx == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (device < 0 || device >= s.device_count) return kInvalidDevice;
  Context* context = s.contexts[static_cast<std::size_t>(device)].get();
  if (context->refcount++ == 0) context->sticky = kSuccess;  // a fresh context
  *ctx = reinterpret_cast<CUcontext>(context);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (device < 0 || device >= s.device_count) return kInvalidDevice;
  Context* context = s.contexts[static_cast<std::size_t>(device)].get();
  if (context->refcount == 0) return kInvalidContext;
  --context->refcount;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuCtxGetCurrent(CUcontext* ctx) {
  if (ctx == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  *ctx = reinterpret_cast<CUcontext>(current_context);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (ctx == nullptr) {
    current_context = nullptr;
    return kSuccess;
  }
  for (const auto& context : s.contexts) {
    if (reinterpret_cast<CUcontext>(context.get()) == ctx) {
      if (context->refcount == 0) return kInvalidContext;  // released: destroyed
      current_context = context.get();
      return kSuccess;
    }
  }
  return kInvalidContext;
}

FAKE_CUDA_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes) {
  if (dptr == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  if (bytes == 0) return kInvalidValue;
  const long long call = s.alloc_calls++;
  if (s.fail_alloc_after >= 0 && call >= s.fail_alloc_after) return kOutOfMemory;
  if (bytes > kTotalMemory) return kOutOfMemory;
  const std::size_t rounded = (bytes + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
  void* memory = std::aligned_alloc(kDeviceAlignment, rounded);
  if (memory == nullptr) return kOutOfMemory;
  std::memset(memory, kFreshDeviceByte, rounded);
  const auto base = reinterpret_cast<std::uintptr_t>(memory);
  s.device_memory.emplace(base, DeviceAllocation{bytes, context});
  s.device_bytes += static_cast<long long>(bytes);
  *dptr = static_cast<CUdeviceptr>(base);
  return kSuccess;
}

// Free memory: the device's total less what is allocated on it (fake devices share none).
FAKE_CUDA_EXPORT CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  if (free_bytes == nullptr || total_bytes == nullptr) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  std::size_t used = 0;
  for (const auto& [base, allocation] : s.device_memory) {
    if (allocation.context == context) {
      used += (allocation.size + kDeviceAlignment - 1) / kDeviceAlignment * kDeviceAlignment;
    }
  }
  *total_bytes = kTotalMemory;
  *free_bytes = kTotalMemory - std::min(used, kTotalMemory);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  auto it = s.device_memory.find(static_cast<std::uintptr_t>(dptr));
  if (it == s.device_memory.end()) return kInvalidValue;
  s.device_bytes -= static_cast<long long>(it->second.size);
  std::free(reinterpret_cast<void*>(it->first));
  s.device_memory.erase(it);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuMemHostAlloc(void** pp, size_t bytes, unsigned int flags) {
  if (pp == nullptr || bytes == 0 || (flags & ~0x7u) != 0) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return kOutOfMemory;
  s.pinned.emplace(reinterpret_cast<std::uintptr_t>(memory), bytes);
  s.pinned_bytes += static_cast<long long>(bytes);
  *pp = memory;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuMemFreeHost(void* p) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  auto it = s.pinned.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == s.pinned.end()) return kInvalidValue;
  munmap(p, it->second);
  s.pinned_bytes -= static_cast<long long>(it->second);
  s.pinned.erase(it);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuMemHostRegister_v2(void* p, size_t bytes, unsigned int flags) {
  if (p == nullptr || bytes == 0 || (flags & ~0xFu) != 0) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  if (overlaps(s.registered, address, bytes) || overlaps(s.pinned, address, bytes)) {
    return kAlreadyRegistered;
  }
  s.registered.emplace(address, bytes);
  ++s.registration_calls;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuMemHostUnregister(void* p) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  if (s.registered.erase(reinterpret_cast<std::uintptr_t>(p)) == 0) return kNotRegistered;
  return kSuccess;
}

namespace {

// cuMemcpyHtoDAsync; `*observer` is set to the copy observer when the copy was counted.
CUresult enqueue_host_to_device(CUdeviceptr dst, const void* src, size_t bytes, CUstream stream,
                                void (**observer)(const void*, std::size_t)) {
  State& s = state();
  std::shared_ptr<Stream> target;
  bool fail = false;
  long long delay_us = 0;
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    Context* context = nullptr;
    if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
    if (context->sticky != kSuccess) return context->sticky;
    if (bytes == 0) return kSuccess;
    if (src == nullptr || !in_device_memory(s, dst, bytes)) return kInvalidValue;
    if (stream != nullptr) {
      target = find_stream(s, stream);
      if (target == nullptr) return kInvalidHandle;
      if (target->context != context) return kInvalidContext;
    }
    const long long call = s.copy_calls++;
    fail = s.fail_copy_after >= 0 && call == s.fail_copy_after;
    delay_us = s.copy_delay_us;
    ++s.async_copies;
    if (!is_page_locked(s, src, bytes)) ++s.pageable_copies;
    if (find_range(s.registered, reinterpret_cast<std::uintptr_t>(src), bytes, plain_size) !=
        s.registered.end()) {
      ++s.registered_copies;
    }
    *observer = s.copy_observer;
    if (target == nullptr) {  // the null stream: done before returning
      std::memcpy(reinterpret_cast<void*>(static_cast<std::uintptr_t>(dst)), src, bytes);
      return kSuccess;
    }
  }
  Context* context = target->context;
  // The source is read when the copy runs, not now: a caller that reuses `src` before
  // synchronising sees wrong bytes on the device.
  target->enqueue([dst, src, bytes, fail, delay_us, context] {
    if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    State& st = state();
    const std::lock_guard<std::mutex> lock(st.mutex);
    if (context->sticky != kSuccess) return;          // a faulted context runs nothing more
    if (fail || !in_device_memory(st, dst, bytes)) {  // injected, or freed since queued
      context->sticky = kIllegalAddress;
      return;
    }
    std::memcpy(reinterpret_cast<void*>(static_cast<std::uintptr_t>(dst)), src, bytes);
  });
  return kSuccess;
}

}  // namespace

FAKE_CUDA_EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes,
                                               CUstream stream) {
  void (*observer)(const void*, std::size_t) = nullptr;
  const CUresult result = enqueue_host_to_device(dst, src, bytes, stream, &observer);
  if (observer != nullptr) observer(src, bytes);  // outside the state lock: it may use the hooks
  return result;
}

namespace {

// A synchronous copy (cuMemcpyDtoH, cuMemcpyDtoD): like the driver's, it first waits for the
// work queued in the current context; `valid` (under the state lock) vets the addresses.
template <class Valid>
CUresult synchronous_copy(void* dst, const void* src, std::size_t bytes, Valid&& valid) {
  State& s = state();
  Context* context = nullptr;
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  }
  drain_context(context);
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (context->sticky != kSuccess) return context->sticky;
  if (bytes == 0) return kSuccess;
  if (!valid(s)) return kInvalidValue;
  std::memcpy(dst, src, bytes);
  return kSuccess;
}

void* as_pointer(CUdeviceptr p) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(p)); }

}  // namespace

FAKE_CUDA_EXPORT CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
  return synchronous_copy(dst, as_pointer(src), bytes, [&](State& s) {
    return dst != nullptr && in_device_memory(s, src, bytes);
  });
}

FAKE_CUDA_EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
  return synchronous_copy(as_pointer(dst), as_pointer(src), bytes, [&](State& s) {
    return in_device_memory(s, src, bytes) && in_device_memory(s, dst, bytes);
  });
}

FAKE_CUDA_EXPORT CUresult cuStreamCreate(CUstream* stream, unsigned int flags) {
  if (stream == nullptr || (flags & ~0x1u) != 0) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  auto created = std::make_shared<Stream>();
  created->context = context;
  created->worker = std::thread([raw = created.get()] { raw->run(); });
  s.streams.emplace(created.get(), created);
  *stream = reinterpret_cast<CUstream>(created.get());
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuStreamDestroy_v2(CUstream stream) {
  State& s = state();
  std::shared_ptr<Stream> doomed;
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.initialized) return kNotInitialized;
    auto it = s.streams.find(reinterpret_cast<Stream*>(stream));
    if (it == s.streams.end()) return kInvalidHandle;
    doomed = std::move(it->second);
    s.streams.erase(it);
  }
  // Queued work still runs (as on the real driver); the fake waits for it here.
  {
    const std::lock_guard<std::mutex> lock(doomed->mutex);
    doomed->stopping = true;
  }
  doomed->changed.notify_all();
  doomed->worker.join();
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuStreamSynchronize(CUstream stream) {
  State& s = state();
  std::shared_ptr<Stream> target;
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.initialized) return kNotInitialized;
    if (stream == nullptr) return kSuccess;  // no legacy-stream work is ever pending
    target = find_stream(s, stream);
    if (target == nullptr) return kInvalidHandle;
  }
  target->wait_for(target->mark());
  const std::lock_guard<std::mutex> lock(s.mutex);
  return target->context->sticky;
}

FAKE_CUDA_EXPORT CUresult cuEventCreate(CUevent* event, unsigned int flags) {
  if (event == nullptr || (flags & ~0x7u) != 0) return kInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  Context* context = nullptr;
  if (const CUresult r = require_context(s, &context); r != kSuccess) return r;
  auto created = std::make_unique<Event>();
  created->context = context;
  *event = reinterpret_cast<CUevent>(created.get());
  s.events.emplace(created.get(), std::move(created));
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuEventRecord(CUevent event, CUstream stream) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  auto it = s.events.find(reinterpret_cast<Event*>(event));
  if (it == s.events.end()) return kInvalidHandle;
  Event& e = *it->second;
  if (stream == nullptr) {  // the null stream has no pending work in the fake
    e.stream = nullptr;
    e.target = 0;
    return kSuccess;
  }
  std::shared_ptr<Stream> target = find_stream(s, stream);
  if (target == nullptr) return kInvalidHandle;
  if (target->context != e.context) return kInvalidContext;
  e.target = target->mark();
  e.stream = std::move(target);
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuEventQuery(CUevent event) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  auto it = s.events.find(reinterpret_cast<Event*>(event));
  if (it == s.events.end()) return kInvalidHandle;
  const Event& e = *it->second;
  if (e.context->sticky != kSuccess) return e.context->sticky;
  if (e.stream != nullptr && !e.stream->reached(e.target)) return kNotReady;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuEventSynchronize(CUevent event) {
  State& s = state();
  std::shared_ptr<Stream> stream;
  std::uint64_t target = 0;
  Context* context = nullptr;
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.initialized) return kNotInitialized;
    auto it = s.events.find(reinterpret_cast<Event*>(event));
    if (it == s.events.end()) return kInvalidHandle;
    stream = it->second->stream;
    target = it->second->target;
    context = it->second->context;
  }
  if (stream != nullptr) stream->wait_for(target);
  const std::lock_guard<std::mutex> lock(s.mutex);
  return context->sticky;
}

FAKE_CUDA_EXPORT CUresult cuEventDestroy_v2(CUevent event) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return kNotInitialized;
  if (s.events.erase(reinterpret_cast<Event*>(event)) == 0) return kInvalidHandle;
  return kSuccess;
}

FAKE_CUDA_EXPORT CUresult cuGetErrorString(CUresult error, const char** text) {
  if (text == nullptr) return kInvalidValue;
  *text = error_text(error);
  return *text == nullptr ? kInvalidValue : kSuccess;
}

// ---- test-only entry points (fake_cuda_api.h) ----

namespace {
template <typename Fn>
auto locked(Fn fn) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  return fn(s);
}
}  // namespace

FAKE_CUDA_EXPORT long long fake_cuda_live_allocations() {
  return locked([](State& s) { return static_cast<long long>(s.device_memory.size()); });
}
FAKE_CUDA_EXPORT long long fake_cuda_live_device_bytes() {
  return locked([](State& s) { return s.device_bytes; });
}
FAKE_CUDA_EXPORT long long fake_cuda_live_pinned_allocations() {
  return locked([](State& s) { return static_cast<long long>(s.pinned.size()); });
}
FAKE_CUDA_EXPORT long long fake_cuda_live_pinned_bytes() {
  return locked([](State& s) { return s.pinned_bytes; });
}
FAKE_CUDA_EXPORT long long fake_cuda_live_registrations() {
  return locked([](State& s) { return static_cast<long long>(s.registered.size()); });
}
FAKE_CUDA_EXPORT long long fake_cuda_live_streams() {
  return locked([](State& s) { return static_cast<long long>(s.streams.size()); });
}
FAKE_CUDA_EXPORT long long fake_cuda_live_events() {
  return locked([](State& s) { return static_cast<long long>(s.events.size()); });
}
FAKE_CUDA_EXPORT int fake_cuda_primary_ctx_refcount(int device) {
  return locked([device](State& s) {
    if (device < 0 || device >= s.device_count) return -1;
    return s.contexts[static_cast<std::size_t>(device)]->refcount;
  });
}
FAKE_CUDA_EXPORT long long fake_cuda_async_copies() {
  return locked([](State& s) { return s.async_copies; });
}
FAKE_CUDA_EXPORT long long fake_cuda_pageable_async_copies() {
  return locked([](State& s) { return s.pageable_copies; });
}
FAKE_CUDA_EXPORT int fake_cuda_device_range(unsigned long long p, size_t bytes) {
  return locked([p, bytes](State& s) { return in_device_memory(s, p, bytes) ? 1 : 0; });
}
FAKE_CUDA_EXPORT int fake_cuda_current_device() {
  return locked([](State& s) {
    Context* context = nullptr;
    return require_context(s, &context) == kSuccess ? context->device : -1;
  });
}
FAKE_CUDA_EXPORT long long fake_cuda_registered_async_copies() {
  return locked([](State& s) { return s.registered_copies; });
}
FAKE_CUDA_EXPORT long long fake_cuda_registration_calls() {
  return locked([](State& s) { return s.registration_calls; });
}
FAKE_CUDA_EXPORT int fake_cuda_host_registered(const void* p, size_t bytes) {
  return locked([p, bytes](State& s) {
    return find_range(s.registered, reinterpret_cast<std::uintptr_t>(p), bytes, plain_size) !=
                   s.registered.end()
               ? 1
               : 0;
  });
}
FAKE_CUDA_EXPORT void fake_cuda_set_copy_observer(void (*observer)(const void*, size_t)) {
  locked([observer](State& s) {
    s.copy_observer = observer;
    return 0;
  });
}
FAKE_CUDA_EXPORT void fake_cuda_reset() {
  locked([](State& s) {
    s.read_environment();
    for (auto& context : s.contexts) context->sticky = kSuccess;
    return 0;
  });
}

namespace {

// FAKE_CUDA_EXIT_REPORT=<path>: when the process exits, write what is still registered, pinned
// and allocated. Constructed when the library is loaded, so its destructor runs after every exit
// handler the process registered later (a loader's release of its pools among them).
struct ExitReport {
  ExitReport() = default;
  ExitReport(const ExitReport&) = delete;
  ExitReport& operator=(const ExitReport&) = delete;
  ~ExitReport() {
    const char* path = std::getenv("FAKE_CUDA_EXIT_REPORT");
    if (path == nullptr || *path == '\0') return;
    std::FILE* out = std::fopen(path, "w");
    if (out == nullptr) return;
    State& s = state();
    const std::lock_guard<std::mutex> lock(s.mutex);
    std::fprintf(out, "registrations %zu\npinned %zu\nallocations %zu\n", s.registered.size(),
                 s.pinned.size(), s.device_memory.size());
    std::fclose(out);
  }
};
const ExitReport exit_report;

}  // namespace
