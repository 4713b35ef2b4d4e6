#include "core/staging_pool.hpp"

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/staged_pipeline.hpp"

namespace warpload::detail {
namespace {

// Page-locked slots of one kind of memory for one device. A slot is lent to one ring at a time;
// when the ring drops it, it comes back here unless the pool was released meanwhile.
class SlotPool : public std::enable_shared_from_this<SlotPool> {
 public:
  explicit SlotPool(std::shared_ptr<Allocator> registered) : registered_(std::move(registered)) {}

  [[nodiscard]] std::shared_ptr<Buffer> take(std::size_t size, std::size_t alignment);
  void give_back(std::shared_ptr<Buffer> slot) noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!released_) {
      idle_.push_back(std::move(slot));
      return;
    }
    bytes_ -= slot->size();
    // `slot` is freed (unregistered, then destroyed) when this returns, outside no lock we need.
  }
  // Marks the pool released and returns its idle slots, to be freed by the caller.
  std::vector<std::shared_ptr<Buffer>> release() noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    for (const auto& slot : idle_) bytes_ -= slot->size();
    return std::exchange(idle_, {});
  }
  [[nodiscard]] std::uint64_t bytes() const noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    return bytes_;
  }

 private:
  std::shared_ptr<Allocator> registered_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Buffer>> idle_;
  std::uint64_t bytes_ = 0;  // idle and lent slots
  bool released_ = false;
};

// A slot lent to a ring: the pool's registered memory, given back when the ring drops it.
class LentSlot final : public Buffer {
 public:
  LentSlot(std::weak_ptr<SlotPool> pool, std::shared_ptr<Buffer> slot)
      : Buffer(slot->data(), slot->size(), MemoryKind::kPinnedHost),
        pool_(std::move(pool)),
        slot_(std::move(slot)) {}
  ~LentSlot() override {
    if (const auto pool = pool_.lock()) pool->give_back(std::move(slot_));
  }
  LentSlot(const LentSlot&) = delete;
  LentSlot& operator=(const LentSlot&) = delete;

 private:
  std::weak_ptr<SlotPool> pool_;
  std::shared_ptr<Buffer> slot_;
};

bool aligned(const Buffer& b, std::size_t alignment) noexcept {
  return alignment <= 1 || reinterpret_cast<std::uintptr_t>(b.data()) % alignment == 0;
}

std::shared_ptr<Buffer> SlotPool::take(std::size_t size, std::size_t alignment) {
  std::shared_ptr<Buffer> slot;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if ((*it)->size() == size && aligned(**it, alignment)) {
        slot = std::move(*it);
        idle_.erase(it);
        break;
      }
    }
  }
  if (!slot) {
    slot = registered_->allocate(size, alignment);  // made and page-locked outside the lock
    const std::lock_guard<std::mutex> lock(mutex_);
    bytes_ += slot->size();
  }
  return std::make_shared<LentSlot>(weak_from_this(), std::move(slot));
}

// The allocator a ring sees: every allocate() is a take() from the pool.
class PooledAllocator final : public Allocator {
 public:
  explicit PooledAllocator(std::shared_ptr<SlotPool> pool) : pool_(std::move(pool)) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::kPinnedHost; }
  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override {
    return pool_->take(size, alignment);
  }

 private:
  std::shared_ptr<SlotPool> pool_;
};

// Every pool, by device and memory key. Leaked on purpose: slots may be given back during
// static destruction.
class PoolRegistry {
 public:
  std::shared_ptr<SlotPool> find_or_make(Device device, const StagingMemory& memory) {
    const std::string key = device.name() + " | " + memory.key;
    const std::lock_guard<std::mutex> lock(mutex_);
    auto& pool = pools_[key];
    if (!pool) {
      pool = std::make_shared<SlotPool>(make_registered_allocator(device, memory.allocator));
      // Once, after the driver and the source's library are loaded, so at exit this runs before
      // their own exit handlers (LIFO) and can still unregister and destroy the slots.
      static const bool registered = std::atexit([] { release_staging_pools(); }) == 0;
      static_cast<void>(registered);
    }
    return pool;
  }
  std::uint64_t release() noexcept {
    std::map<std::string, std::shared_ptr<SlotPool>> pools;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      pools.swap(pools_);
    }
    std::uint64_t freed = 0;
    for (auto& [key, pool] : pools) {
      for (auto& slot : pool->release()) {
        freed += slot->size();
        slot.reset();  // unregistered, then returned to its source (3FS: iovdestroy)
      }
    }
    return freed;
  }
  std::uint64_t bytes() const noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    std::uint64_t total = 0;
    for (const auto& [key, pool] : pools_) total += pool->bytes();
    return total;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<SlotPool>> pools_;
};

PoolRegistry& pools() {
  static auto* const registry = new PoolRegistry;
  return *registry;
}

}  // namespace

RingMemory ring_slot_allocator(Device device, const StagingMemory& memory) {
  if (memory.allocator) {
    return {std::make_shared<PooledAllocator>(pools().find_or_make(device, memory)),
            "pool: " + memory.key};
  }
  if (staging_memory_from_env().pinned) return {make_pinned_allocator(device), "pinned"};
  // The default (and "mapped[:K]", the pipeline's page-cache experiment, for its other pieces).
  return {make_registered_allocator(device, make_host_allocator()), "registered"};
}

}  // namespace warpload::detail

namespace warpload {

std::uint64_t release_staging_pools() noexcept { return detail::pools().release(); }

std::uint64_t staging_pool_bytes() noexcept { return detail::pools().bytes(); }

}  // namespace warpload
