#include "storage/usrbio_iov_allocator.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <map>
#include <utility>

#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

// ---- the iov registry: which destination addresses are inside a USRBIO iov ----

struct IovEntry {
  std::uintptr_t end = 0;
  const hf3fs_iov* iov = nullptr;
  std::string mount;
};

class IovRegistry {
 public:
  void add(const hf3fs_iov* iov, std::string mount) {
    const auto base = reinterpret_cast<std::uintptr_t>(iov->base);
    const std::lock_guard<std::mutex> lock(mutex_);
    by_base_[base] = IovEntry{base + iov->size, iov, std::move(mount)};
  }
  void remove(const hf3fs_iov* iov) noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    by_base_.erase(reinterpret_cast<std::uintptr_t>(iov->base));
  }
  // The iov of `mount` that holds all of [dest, dest + length), or null.
  [[nodiscard]] const hf3fs_iov* find(const std::byte* dest, std::uint64_t length,
                                      const std::string& mount) const noexcept {
    const auto begin = reinterpret_cast<std::uintptr_t>(dest);
    const std::lock_guard<std::mutex> lock(mutex_);
    auto it = by_base_.upper_bound(begin);
    if (it == by_base_.begin()) return nullptr;
    --it;
    const IovEntry& entry = it->second;
    if (length > entry.end - begin || begin >= entry.end || entry.mount != mount) return nullptr;
    return entry.iov;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::uintptr_t, IovEntry> by_base_;
};

IovRegistry& iov_registry() {
  static auto* const registry = new IovRegistry;  // buffers may die during static destruction
  return *registry;
}

// ---- destination memory: iov-backed buffers ----

class IovBuffer final : public Buffer {
 public:
  // Takes ownership of a created iov (heap-held so its address, which the registry and prep_io
  // calls use, never moves).
  IovBuffer(const Hf3fsApi& api, std::unique_ptr<hf3fs_iov> iov, std::byte* data, std::size_t size)
      : Buffer(data, size, MemoryKind::kHost), api_(api), iov_(std::move(iov)) {}
  ~IovBuffer() override {
    iov_registry().remove(iov_.get());
    api_.iovdestroy(iov_.get());
  }

 private:
  const Hf3fsApi& api_;  // tables are never unloaded (hf3fs_shim.hpp)
  std::unique_ptr<hf3fs_iov> iov_;
};

class IovAllocator final : public Allocator {
 public:
  IovAllocator(const Hf3fsApi& api, std::shared_ptr<MountHint> hint, std::uint64_t block_size)
      : api_(api), hint_(std::move(hint)), block_size_(block_size) {}

  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::kHost; }

  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override {
    const std::string mount = hint_->get();
    // No 3FS file opened yet: plain memory still works, through the staging path.
    if (mount.empty()) return host_->allocate(size, alignment);
    // iovs are page-aligned mappings; larger alignments take some slack at the front.
    const std::size_t page = 4096;
    const std::size_t slack = alignment > page ? alignment : 0;
    std::uint64_t bytes = std::max<std::uint64_t>(size + slack, 1);
    if (block_size_ != 0) bytes = (bytes + block_size_ - 1) / block_size_ * block_size_;
    auto iov = std::make_unique<hf3fs_iov>();
    const int result = api_.iovcreate(iov.get(), mount.c_str(), bytes, block_size_, -1);
    if (result != 0) {
      // Out of shared memory (or a daemon refusing more iovs): host memory still loads, with a
      // copy per I/O instead of none.
      return host_->allocate(size, alignment);
    }
    // Like host buffers, ask for huge pages: reading into fresh memory is mostly page faults.
    // Shared memory gets them only where the kernel allows (shmem_enabled = advise or always).
    ::madvise(iov->base, bytes, MADV_HUGEPAGE);
    auto* data = reinterpret_cast<std::byte*>(iov->base);
    if (slack != 0) {
      const auto address = reinterpret_cast<std::uintptr_t>(data);
      data += (alignment - address % alignment) % alignment;
    }
    const hf3fs_iov* raw = iov.get();
    std::shared_ptr<Buffer> buffer;
    try {
      buffer = std::make_shared<IovBuffer>(api_, std::move(iov), data, size);
    } catch (...) {
      if (iov) api_.iovdestroy(iov.get());
      throw OutOfMemoryError("3fs: cannot allocate a buffer descriptor");
    }
    iov_registry().add(raw, mount);  // IovBuffer's destructor removes it (a no-op if absent)
    return buffer;
  }

 private:
  const Hf3fsApi& api_;
  std::shared_ptr<MountHint> hint_;
  std::uint64_t block_size_;
  std::shared_ptr<Allocator> host_ = make_host_allocator();
};

}  // namespace

std::shared_ptr<Allocator> make_iov_allocator(const Hf3fsApi& api, std::shared_ptr<MountHint> hint,
                                              std::uint64_t block_size) {
  return std::make_shared<IovAllocator>(api, std::move(hint), block_size);
}

const hf3fs_iov* find_iov(const std::byte* dest, std::uint64_t length,
                          const std::string& mount) noexcept {
  return iov_registry().find(dest, length, mount);
}

}  // namespace warpload::detail
