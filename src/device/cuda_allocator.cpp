// Device and pinned-host allocators over the CUDA driver shim.
//
// Every buffer holds a reference on its device's primary context (through a shared
// PrimaryContextRef), so the context -- and with it the memory -- outlives the allocator
// and stays valid until the last buffer is gone, even if every other user released it.
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "device/cuda_shim.hpp"
#include "warpload/device.hpp"
#include "warpload/error.hpp"

namespace warpload {
namespace {

using detail::cuda_api;
using detail::cuda_check;
using detail::CudaContextScope;

// madvise(MADV_POPULATE_WRITE), Linux 5.14; older headers lack the name.
constexpr int kPopulateWrite = 23;

// cuMemAlloc returns addresses aligned to at least this (documented by the driver).
constexpr std::size_t kDeviceBaseAlignment = 256;

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

bool is_power_of_two(std::size_t n) noexcept { return n != 0 && (n & (n - 1)) == 0; }

// Bytes to ask the driver for so that `size` bytes fit after rounding the base (aligned to
// `base_alignment`) up to `alignment`. Throws OutOfMemoryError on overflow.
std::size_t padded_size(std::size_t size, std::size_t alignment, std::size_t base_alignment,
                        const std::string& device) {
  if (!is_power_of_two(alignment)) {
    throw std::invalid_argument(device + ": allocation alignment " + std::to_string(alignment) +
                                " is not a power of two");
  }
  const std::size_t extra = alignment > base_alignment ? alignment - base_alignment : 0;
  const std::size_t wanted = size == 0 ? 1 : size;  // the driver rejects 0-byte allocations
  if (wanted > SIZE_MAX - extra) {
    throw OutOfMemoryError(device + ": cannot allocate " + std::to_string(size) +
                           " bytes aligned to " + std::to_string(alignment));
  }
  return wanted + extra;
}

std::uintptr_t align_up(std::uintptr_t p, std::size_t alignment) noexcept {
  return (p + alignment - 1) & ~static_cast<std::uintptr_t>(alignment - 1);
}

// One retain of `device`'s primary context, released when the last holder goes.
class PrimaryContextRef {
 public:
  explicit PrimaryContextRef(int device) : device_(device) {
    const auto& api = cuda_api();
    CUdevice handle = 0;
    cuda_check(api.device_get(&handle, device), name() + ": cuDeviceGet");
    CUcontext context = nullptr;
    cuda_check(api.primary_ctx_retain(&context, handle), name() + ": cuDevicePrimaryCtxRetain");
    handle_ = handle;
  }
  ~PrimaryContextRef() { static_cast<void>(cuda_api().primary_ctx_release(handle_)); }
  PrimaryContextRef(const PrimaryContextRef&) = delete;
  PrimaryContextRef& operator=(const PrimaryContextRef&) = delete;

  [[nodiscard]] int device() const noexcept { return device_; }
  [[nodiscard]] std::string name() const { return "cuda:" + std::to_string(device_); }

 private:
  int device_;
  CUdevice handle_ = 0;
};

// Device memory: data() is a CUdeviceptr in a std::byte*, NOT dereferenceable on the host.
class DeviceBuffer final : public Buffer {
 public:
  DeviceBuffer(std::shared_ptr<const PrimaryContextRef> context, CUdeviceptr base, std::byte* data,
               std::size_t size)
      : Buffer(data, size, MemoryKind::kDevice), context_(std::move(context)), base_(base) {}
  ~DeviceBuffer() override {
    try {
      const CudaContextScope scope(context_->device());
      static_cast<void>(cuda_api().mem_free(base_));
    } catch (...) {
      // The context is retained by context_, so this cannot happen short of a driver fault;
      // a destructor has no one to tell.
    }
  }

 private:
  std::shared_ptr<const PrimaryContextRef> context_;
  CUdeviceptr base_;
};

class PinnedBuffer final : public Buffer {
 public:
  PinnedBuffer(std::shared_ptr<const PrimaryContextRef> context, void* base, std::byte* data,
               std::size_t size)
      : Buffer(data, size, MemoryKind::kPinnedHost), context_(std::move(context)), base_(base) {}
  ~PinnedBuffer() override {
    try {
      const CudaContextScope scope(context_->device());
      static_cast<void>(cuda_api().mem_free_host(base_));
    } catch (...) {
    }
  }

 private:
  std::shared_ptr<const PrimaryContextRef> context_;
  void* base_;
};

class CudaDeviceAllocator final : public Allocator {
 public:
  explicit CudaDeviceAllocator(int device)
      : context_(std::make_shared<const PrimaryContextRef>(device)) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::kDevice; }

  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override {
    const std::string name = context_->name();
    const std::size_t bytes = padded_size(size, alignment, kDeviceBaseAlignment, name);
    const CudaContextScope scope(context_->device());
    CUdeviceptr base = 0;
    cuda_check(cuda_api().mem_alloc(&base, bytes),
               name + ": cuMemAlloc of " + std::to_string(bytes) + " bytes");
    try {
      const std::uintptr_t aligned =
          align_up(static_cast<std::uintptr_t>(base), alignment < 1 ? 1 : alignment);
      return std::make_shared<DeviceBuffer>(context_, base, detail::from_device_ptr(aligned), size);
    } catch (...) {
      static_cast<void>(cuda_api().mem_free(base));
      throw;
    }
  }

 private:
  std::shared_ptr<const PrimaryContextRef> context_;
};

class CudaPinnedAllocator final : public Allocator {
 public:
  explicit CudaPinnedAllocator(int device)
      : context_(std::make_shared<const PrimaryContextRef>(device)) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::kPinnedHost; }

  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override {
    const std::string name = context_->name();
    const std::size_t bytes = padded_size(size, alignment, page_size(), name);
    const CudaContextScope scope(context_->device());
    void* base = nullptr;
    cuda_check(cuda_api().mem_host_alloc(&base, bytes, WARPLOAD_CU_MEMHOSTALLOC_PORTABLE),
               name + ": cuMemHostAlloc of " + std::to_string(bytes) + " pinned bytes");
    try {
      const std::uintptr_t aligned = align_up(reinterpret_cast<std::uintptr_t>(base), alignment);
      return std::make_shared<PinnedBuffer>(context_, base, reinterpret_cast<std::byte*>(aligned),
                                            size);
    } catch (...) {
      static_cast<void>(cuda_api().mem_free_host(base));
      throw;
    }
  }

 private:
  std::shared_ptr<const PrimaryContextRef> context_;
};

// A source buffer page-locked for one device. Members go in reverse order: the registration
// is undone (in the retained context) before the source buffer is freed.
class RegisteredBuffer final : public Buffer {
 public:
  RegisteredBuffer(std::shared_ptr<const PrimaryContextRef> context, std::shared_ptr<Buffer> source)
      : Buffer(source->data(), source->size(), MemoryKind::kPinnedHost),
        context_(std::move(context)),
        source_(std::move(source)),
        registration_(context_->device(), source_->data(), source_->size()) {}

 private:
  std::shared_ptr<const PrimaryContextRef> context_;
  std::shared_ptr<Buffer> source_;
  detail::CudaHostRegistration registration_;
};

class RegisteredAllocator final : public Allocator {
 public:
  RegisteredAllocator(int device, std::shared_ptr<Allocator> source)
      : context_(std::make_shared<const PrimaryContextRef>(device)), source_(std::move(source)) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::kPinnedHost; }

  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override {
    std::shared_ptr<Buffer> source = source_->allocate(size == 0 ? 1 : size, alignment);
    // Fault every page in first: on the H200 machine touching huge pages and then registering
    // took half as long as cuMemHostAlloc (docs/performance.md). MADV_POPULATE_WRITE (Linux
    // 5.14) faults the range in one call; older kernels get a write per page (the buffer is
    // fresh: its contents are unspecified).
    const std::size_t page = page_size();
    const auto begin = reinterpret_cast<std::uintptr_t>(source->data()) / page * page;
    const auto end = reinterpret_cast<std::uintptr_t>(source->data()) + source->size();
    if (::madvise(reinterpret_cast<void*>(begin), end - begin, kPopulateWrite) != 0) {
      volatile std::byte* bytes = source->data();
      for (std::size_t at = 0; at < source->size(); at += page) bytes[at] = std::byte{0};
    }
    return std::make_shared<RegisteredBuffer>(context_, std::move(source));
  }

 private:
  std::shared_ptr<const PrimaryContextRef> context_;
  std::shared_ptr<Allocator> source_;
};

void require_cuda(const Device& device) {
  if (!device.is_cuda()) {
    throw UnsupportedError("device '" + device.name() + "' is not a CUDA device");
  }
  detail::check_cuda_device(device.index);
}

}  // namespace

std::shared_ptr<Allocator> make_cuda_allocator(Device device) {
  require_cuda(device);
  return std::make_shared<CudaDeviceAllocator>(device.index);
}

std::shared_ptr<Allocator> make_pinned_allocator(Device device) {
  require_cuda(device);
  return std::make_shared<CudaPinnedAllocator>(device.index);
}

std::shared_ptr<Allocator> make_registered_allocator(Device device,
                                                     std::shared_ptr<Allocator> source) {
  require_cuda(device);
  if (!source || source->kind() == MemoryKind::kDevice) {
    throw std::invalid_argument("make_registered_allocator: the source must make host memory");
  }
  return std::make_shared<RegisteredAllocator>(device.index, std::move(source));
}

}  // namespace warpload
