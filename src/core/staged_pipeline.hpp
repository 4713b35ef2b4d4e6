// The staged pipeline: how a load reaches device memory when the storage backend cannot read
// into it (StorageCapabilities::device_memory false, i.e. every backend but a future GDS one).
//
//   storage->read() ──► ring of pinned host slots ──► cuMemcpyHtoDAsync ──► device buffer
//
// Every file's read range (the same aligned superset the host path reads) is cut into
// slot-sized pieces, taken in order. For piece p, slot p % slots: wait until the slot's
// previous copy has completed (its event), read the piece into the slot with the backend's
// ordinary read() (so every backend, O_DIRECT included, works unchanged), enqueue the copy of
// the piece's data-section bytes on the slot's stream and record the slot's event. Two reader
// threads (StagingPlan::readers) take consecutive pieces, so the reads of the next slots
// overlap the copies of the previous ones. A slot is reused only after its event completes.
//
// Placement: only the data section is copied; file `i`'s byte `data_begin + k` lands at
// `dest + k`. The header bytes of the aligned superset stay in the slot.
//
// Memory: host memory is the ring only (slots x slot bytes of page-locked memory), whatever
// the checkpoint size. What the slots are made of (cuMemHostAlloc, registered huge pages, or
// the backend's own memory such as 3FS iovs, pooled across loads) is the caller's choice.
//
// Errors: the first failure (read, CUDA call, asynchronous copy) is rethrown after every
// stream has been synchronized, so no copy still reads a slot or writes a destination when
// run_staged_load() returns or throws. Read errors come from the backend (IoError naming the
// file and offset); CUDA failures are Errors naming the file, the byte range and the device.
// Cancellation (ReadControl::cancel) throws CancelledError.
//
// Placement: the reader threads (the caller's own for the call's duration, then restored) run
// on the GPU's NUMA node when libnuma is present and sysfs knows the node (device/numa.hpp).
//
// Thread safety: one call runs one load; it starts and joins its own reader thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "warpload/device.hpp"
#include "warpload/memory.hpp"
#include "warpload/storage.hpp"

namespace warpload::detail {

// One file's part of a staged load.
struct StagedFile {
  StorageFile* file = nullptr;
  std::uint64_t read_begin = 0;  // aligned superset read from the file: [read_begin, read_end)
  std::uint64_t read_end = 0;    // (may run past the end of an O_DIRECT file, ReadRequest rules)
  std::uint64_t data_begin = 0;  // bytes [data_begin, data_end) of the file are copied ...
  std::uint64_t data_end = 0;
  std::byte* dest = nullptr;  // ... to device address [dest, dest + data_end - data_begin)
};

struct StagingPlan {
  std::size_t slots = 0;         // >= 2
  std::uint64_t slot_bytes = 0;  // multiple of 64 KiB (so of every file's alignment)
  std::size_t readers = 2;       // reader threads, 1 .. slots
  // Experiment (WARPLOAD_STAGING_MEMORY=mapped or mapped:K): every K-th piece (K = 1: all)
  // of a buffered file with a descriptor is not read into a slot but mapped from the page cache
  // and page-locked in place (cuMemHostRegister READ_ONLY) by its reader, the copy engine
  // reading the mapping, while the other pieces take the CPU-copy path: the two use different
  // resources (the CPU copy, the driver's page pinning), so a mix may pass either alone. 0:
  // never.
  std::size_t map_every = 0;
};

// Slots for a staging budget (a cap on bytes of pinned memory; at least 2 x 64 KiB is used
// whatever the budget): slots of 4 MiB (at most budget / 2), 2 .. 16 of them within the
// budget, no more (and no larger) than the `largest_read` bytes of one file's read range
// need; one reader per core, 2 .. 16, never more than slots. With the default 256 MiB budget
// the ring is 64 MiB: page-locking is paid on every load, and a larger ring was slower
// (docs/performance.md).
// `slot_bytes` / `readers` other than 0 replace the slot size (rounded up to 64 KiB) and the
// reader count (the budget still caps the ring).
[[nodiscard]] StagingPlan plan_staging(std::uint64_t budget, std::uint64_t largest_read,
                                       std::uint64_t slot_bytes = 0,
                                       std::size_t readers = 0) noexcept;

// plan_staging() with the developer overrides $WARPLOAD_STAGING_SLOT_BYTES and
// $WARPLOAD_STAGING_READERS (plain integers; for measuring the pipeline's shape,
// tests/gpu/staging_sweep.sh) and $WARPLOAD_STAGING_MEMORY=mapped[:K] (map_every), read at
// each call.
[[nodiscard]] StagingPlan plan_staging_from_env(std::uint64_t budget, std::uint64_t largest_read);

// $WARPLOAD_STAGING_MEMORY, the one place it is read (at each call): "pinned" (cuMemHostAlloc
// slots instead of registered huge pages, for backends without memory of their own) or
// "mapped[:K]" (StagingPlan::map_every = K, 1 without ":K"); anything else is the default.
struct StagingMemoryChoice {
  bool pinned = false;
  std::size_t map_every = 0;
};
[[nodiscard]] StagingMemoryChoice staging_memory_from_env() noexcept;

// Runs the pipeline for `files` onto `device` (see the top of this file), its slots taken from
// `slot_memory` (page-locked host memory for `device`: core/staging_pool.hpp says which; each
// slot is allocated by the reader of its first piece and dropped when the call returns).
// `control` may be null. Throws as described above.
void run_staged_load(Storage& storage, std::span<const StagedFile> files, Device device,
                     const StagingPlan& plan, ReadControl* control,
                     std::shared_ptr<Allocator> slot_memory);

}  // namespace warpload::detail
