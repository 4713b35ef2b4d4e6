#include "core/staged_pipeline.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "device/cuda_shim.hpp"
#include "device/numa.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr std::uint64_t kSlotGranule = std::uint64_t{64} << 10;  // >= any O_DIRECT alignment
constexpr std::uint64_t kDefaultSlotBytes = std::uint64_t{4} << 20;
constexpr std::uint64_t kMaxSlots = 16;

// Shape of the ring by default (docs/performance.md, "staged pipeline shape", H200 machine):
// page-locking the ring is paid on every load (~0.35 s per GiB there), so a small ring of
// many slots, each filled by its own reader, beats a large one: 16 x 4 MiB with 16 readers
// reached 39.5 GB/s where 4 x 64 MiB with 2 readers reached 22 and 64 x 16 MiB 10.7.
std::size_t default_readers() noexcept {
  return std::clamp<std::size_t>(std::thread::hardware_concurrency(), 2, kMaxSlots);
}

// A positive integer from the environment, or 0.
std::uint64_t env_count(const char* name) noexcept {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  const unsigned long long parsed = std::strtoull(value, &end, 10);
  return end != nullptr && *end == '\0' ? parsed : 0;
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

// A range of a file's page cache, mapped and page-locked so the copy engine reads it in place:
// no read() and no CPU copy (the WARPLOAD_STAGING_MEMORY=mapped experiment; docs/performance.md
// has what it measured). data() is the range's first byte. Unregistered, then unmapped.
class MappedRange final : public Buffer {
 public:
  MappedRange(void* base, std::size_t bytes, std::size_t lead, int device)
      : Buffer(static_cast<std::byte*>(base) + lead, bytes - lead, MemoryKind::kPinnedHost),
        base_(base),
        bytes_(bytes) {
    try {
      registration_.emplace(
          device, base, bytes,
          WARPLOAD_CU_MEMHOSTREGISTER_PORTABLE | WARPLOAD_CU_MEMHOSTREGISTER_READ_ONLY);
    } catch (...) {
      ::munmap(base_, bytes_);
      throw;
    }
  }
  ~MappedRange() override {
    registration_.reset();
    ::munmap(base_, bytes_);
  }
  MappedRange(const MappedRange&) = delete;
  MappedRange& operator=(const MappedRange&) = delete;

 private:
  void* base_;
  std::size_t bytes_;
  std::optional<CudaHostRegistration> registration_;
};

// Maps file bytes [offset, offset + length) of `file` (whole pages around them) and page-locks
// them for `device`. Throws IoError naming the file and offset when the mapping fails.
std::shared_ptr<Buffer> map_range(const StorageFile& file, std::uint64_t offset,
                                  std::uint64_t length, int device) {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t start = offset / page * page;
  const auto bytes = static_cast<std::size_t>(offset + length - start);
  void* base = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, file.fd(), static_cast<off_t>(start));
  if (base == MAP_FAILED) {
    const int error = errno;
    throw IoError(file.path().string() + ": cannot map " + std::to_string(length) +
                      " bytes at offset " + std::to_string(offset) + ": " + std::strerror(error),
                  error, offset);
  }
  return std::make_shared<MappedRange>(base, bytes, static_cast<std::size_t>(offset - start),
                                       device);
}

// One slot-sized piece of one file's read range.
struct Piece {
  const StagedFile* file;
  std::uint64_t offset;  // file offset of the read
  std::uint64_t length;  // bytes read into the slot
};

std::vector<Piece> cut_into_pieces(std::span<const StagedFile> files, std::uint64_t slot_bytes) {
  std::vector<Piece> pieces;
  for (const StagedFile& f : files) {
    for (std::uint64_t at = f.read_begin; at < f.read_end; at += slot_bytes) {
      pieces.push_back(Piece{&f, at, std::min(slot_bytes, f.read_end - at)});
    }
  }
  return pieces;
}

// Rethrows a CUDA failure with the file, byte range and device in front of its message,
// keeping its kind (OutOfMemoryError stays one).
[[noreturn]] void rethrow_for(const Error& e, const Piece& piece, Device device) {
  const std::string message =
      piece.file->file->path().string() + ": bytes [" + std::to_string(piece.offset) + ", " +
      std::to_string(piece.offset + piece.length) + ") to " + device.name() + ": " + e.what();
  if (e.kind() == ErrorKind::kOutOfMemory) throw OutOfMemoryError(message);
  throw UnsupportedError(message);
}

// The ring: pinned slots, one stream and one event per slot, and the order in which pieces
// may take a slot. Its destructor synchronizes every stream before the slots are freed.
class BounceRing {
 public:
  BounceRing(Device device, const StagingPlan& plan, std::shared_ptr<Allocator> slot_memory)
      : device_(device),
        pinned_(std::move(slot_memory)),
        slot_bytes_(plan.slot_bytes),
        slots_(plan.slots),
        held_(plan.slots) {
    for (std::size_t i = 0; i < plan.slots; ++i) {
      streams_.push_back(std::make_unique<CudaStream>(device.index));
      events_.push_back(std::make_unique<CudaEvent>(device.index));
      next_piece_.push_back(i);
    }
  }
  ~BounceRing() { drain(); }
  BounceRing(const BounceRing&) = delete;
  BounceRing& operator=(const BounceRing&) = delete;

  [[nodiscard]] std::size_t size() const noexcept { return slots_.size(); }

  // Blocks until piece `p` may use its slot (piece p - size() has queued its copy and
  // recorded the slot's event), then until that copy has finished. false when the load
  // stopped meanwhile.
  [[nodiscard]] bool acquire(std::size_t p) {
    const std::size_t s = p % size();
    {
      std::unique_lock lock(mutex_);
      turn_.wait(lock, [&] { return stopped_ || next_piece_[s] == p; });
      if (stopped_) return false;
    }
    if (p >= size()) events_[s]->synchronize();  // the previous copy out of this slot is done
    return true;
  }

  // Where piece p's bytes are read to: its slot's memory. A slot's memory is allocated by the
  // reader of the first piece that needs it, so the readers page-lock their slots in parallel
  // while the first reads already run (pinning was the ring's main cost: ~0.35 s per GiB on
  // the H200 machine). Only the holder of the slot's turn calls this.
  [[nodiscard]] std::byte* slot(std::size_t p) {
    const std::size_t s = p % size();
    if (!slots_[s]) slots_[s] = pinned_->allocate(slot_bytes_, kSlotGranule);
    return slots_[s]->data();
  }

  // Mapped pieces (StagingPlan::map_every): the page-locked mapping piece p's copy reads,
  // kept until the slot's next turn (its copy has finished then); the previous one goes now.
  void hold(std::size_t p, std::shared_ptr<Buffer> mapped) {
    held_[p % size()] = std::move(mapped);
  }

  // Queues the copy of `bytes` from `source` (in the slot or the held mapping) to `dest`,
  // records the slot's event and hands the slot to piece p + size().
  void copy_out(std::size_t p, const std::byte* source, std::uint64_t bytes, std::byte* dest) {
    const std::size_t s = p % size();
    if (bytes > 0) {
      copy_to_device_async(dest, source, bytes, *streams_[s]);
      events_[s]->record(*streams_[s]);
    }
    std::lock_guard lock(mutex_);
    next_piece_[s] = p + size();
    turn_.notify_all();
  }

  void stop() noexcept {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    turn_.notify_all();
  }

  // Waits for every copy queued on slot `s`'s stream; throws its asynchronous error.
  void synchronize(std::size_t s) const { streams_[s]->synchronize(); }

 private:
  // Never returns with a copy in flight: a failing stream is still waited for (its error
  // was or will be reported by synchronize()).
  void drain() noexcept {
    for (const auto& stream : streams_) {
      try {
        stream->synchronize();
      } catch (...) {  // NOLINT(bugprone-empty-catch): the error is reported elsewhere
      }
    }
  }

  Device device_;
  std::shared_ptr<Allocator> pinned_;
  std::uint64_t slot_bytes_;
  // Filled lazily by slot() / hold(), by the reader holding the slot's turn, and used
  // afterwards only by holders of later turns (ordered through mutex_). Destroyed last
  // (members go in reverse order), after drain().
  std::vector<std::shared_ptr<Buffer>> slots_;
  std::vector<std::shared_ptr<Buffer>> held_;
  std::vector<std::unique_ptr<CudaStream>> streams_;
  std::vector<std::unique_ptr<CudaEvent>> events_;
  std::mutex mutex_;
  std::condition_variable turn_;
  std::vector<std::size_t> next_piece_;  // per slot: the piece allowed to take it next
  bool stopped_ = false;
};

}  // namespace

StagingPlan plan_staging(std::uint64_t budget, std::uint64_t largest_read, std::uint64_t slot_bytes,
                         std::size_t readers) noexcept {
  // Slot: the override, else 4 MiB, never more than half the budget (two slots fit).
  std::uint64_t slot = slot_bytes != 0 ? slot_bytes : std::min(kDefaultSlotBytes, budget / 2);
  slot = std::max(round_up(slot, kSlotGranule), kSlotGranule);
  slot = std::min(slot, round_up(std::max<std::uint64_t>(largest_read, 1), kSlotGranule));
  // Slots: as many as the budget holds, 2 .. 16 (or more when a slot size was forced and
  // the budget holds them), no more than the largest file needs.
  const std::uint64_t fit = std::max<std::uint64_t>(2, budget / slot);
  std::uint64_t slots = slot_bytes != 0 ? fit : std::min(fit, kMaxSlots);
  const std::uint64_t needed = (largest_read + slot - 1) / slot;
  slots = std::clamp<std::uint64_t>(needed, 2, slots);
  const std::size_t wanted = readers != 0 ? readers : default_readers();
  return StagingPlan{static_cast<std::size_t>(slots), slot,
                     std::clamp<std::size_t>(wanted, 1, static_cast<std::size_t>(slots))};
}

StagingPlan plan_staging_from_env(std::uint64_t budget, std::uint64_t largest_read) {
  StagingPlan plan = plan_staging(budget, largest_read, env_count("WARPLOAD_STAGING_SLOT_BYTES"),
                                  static_cast<std::size_t>(env_count("WARPLOAD_STAGING_READERS")));
  plan.map_every = staging_memory_from_env().map_every;
  return plan;
}

StagingMemoryChoice staging_memory_from_env() noexcept {
  const char* value = std::getenv("WARPLOAD_STAGING_MEMORY");
  const std::string_view memory = value != nullptr ? value : "";
  StagingMemoryChoice choice;
  choice.pinned = memory == "pinned";
  if (memory == "mapped") choice.map_every = 1;
  if (memory.starts_with("mapped:")) {
    choice.map_every = std::max<std::size_t>(std::strtoul(value + 7, nullptr, 10), 1);
  }
  return choice;
}

void run_staged_load(Storage& storage, std::span<const StagedFile> files, Device device,
                     const StagingPlan& plan, ReadControl* control,
                     std::shared_ptr<Allocator> slot_memory) {
  const std::vector<Piece> pieces = cut_into_pieces(files, plan.slot_bytes);
  if (pieces.empty()) return;
  BounceRing ring(device, plan, std::move(slot_memory));

  std::mutex error_mutex;
  std::exception_ptr first_error;
  std::atomic<std::size_t> cursor{0};
  // Readers run on the GPU's NUMA node when it is known and libnuma is there (device/numa.hpp);
  // the storage workers they start inherit the placement.
  const int numa_node = cuda_device_numa_node(device.index);

  auto reader = [&]() noexcept {
    const NumaPlacement placement(numa_node);
    std::size_t p = 0;
    try {
      while ((p = cursor.fetch_add(1)) < pieces.size()) {
        bool acquired = false;
        try {
          acquired = ring.acquire(p);
        } catch (const Error& e) {  // the slot's previous copy failed (or the context did)
          rethrow_for(e, pieces[p >= ring.size() ? p - ring.size() : p], device);
        }
        if (!acquired) return;
        const Piece& piece = pieces[p];
        if (control != nullptr && control->cancel.load()) {
          throw CancelledError(piece.file->file->path().string() + ": load cancelled");
        }
        const StorageFile& file = *piece.file->file;
        const std::byte* in_slot = nullptr;  // file byte piece.offset, where it now is
        if (plan.map_every != 0 && p % plan.map_every == 0 && file.fd() >= 0 && !file.direct()) {
          std::shared_ptr<Buffer> mapped;
          try {
            mapped = map_range(file, piece.offset,
                               std::min(piece.length, file.size() - piece.offset), device.index);
          } catch (const IoError&) {
            throw;
          } catch (const Error& e) {  // the registration: name the file, range and device
            rethrow_for(e, piece, device);
          }
          in_slot = mapped->data();
          ring.hold(p, std::move(mapped));
          if (control != nullptr) control->bytes_done += piece.length;
        } else {
          std::byte* slot = ring.slot(p);
          const ReadRequest request{piece.file->file, piece.offset, piece.length, slot};
          storage.read(std::span(&request, 1), control);
          in_slot = slot;
        }
        // The data-section bytes of this piece, and where they go.
        const StagedFile& f = *piece.file;
        const std::uint64_t first = std::max(piece.offset, f.data_begin);
        const std::uint64_t last = std::min(piece.offset + piece.length, f.data_end);
        try {
          ring.copy_out(p, in_slot + (first - piece.offset), last > first ? last - first : 0,
                        f.dest + (first - f.data_begin));
        } catch (const Error& e) {
          rethrow_for(e, piece, device);
        }
      }
    } catch (...) {
      {
        std::lock_guard lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
      ring.stop();
    }
  };

  {
    std::vector<std::jthread> helpers;
    try {
      for (std::size_t i = 1; i < plan.readers; ++i) helpers.emplace_back(reader);
    } catch (...) {
      ring.stop();
      throw;
    }
    reader();
  }                                                      // joins the helpers
  if (first_error) std::rethrow_exception(first_error);  // ~BounceRing drains first
  for (std::size_t s = 0; s < ring.size() && s < pieces.size(); ++s) {
    try {
      ring.synchronize(s);
    } catch (const Error& e) {  // name the last piece this slot copied
      const std::size_t last = (pieces.size() - 1 - s) / ring.size() * ring.size() + s;
      rethrow_for(e, pieces[last], device);
    }
  }
}

}  // namespace warpload::detail
