// Where a staged device load's ring slots come from (docs/architecture.md, "Ring memory").
//
// A backend that names StagingMemory (3FS: iovs of the files' mount) gets a process-wide pool
// per (device, StagingMemory::key): slots are made from its allocator, page-locked once with
// make_registered_allocator(), and go back to the pool, still registered, when the ring drops
// them, so later loads neither create nor register memory. Every other backend gets page-locked
// memory for the one load: anonymous huge-page memory, touched, then registered with
// cuMemHostRegister (the default: half the page-locking time of cuMemHostAlloc on the H200
// machine), or with $WARPLOAD_STAGING_MEMORY=pinned cuMemHostAlloc (make_pinned_allocator;
// read at each call; docs/performance.md compares them).
//
// Pools are emptied by release_staging_pools() (warpload/device.hpp) and at exit.
// Thread safety: everything here may be used from any thread; several loads may share a pool
// (each slot is lent to one ring at a time).
#pragma once

#include <memory>
#include <string>

#include "warpload/device.hpp"
#include "warpload/memory.hpp"
#include "warpload/storage.hpp"

namespace warpload::detail {

// The allocator a ring for `device` takes its slots from (see the top of this file), and what
// it is (LoadStats::staging_memory: "pinned", "registered", or "pool: " + the memory's key).
// Throws like make_pinned_allocator().
struct RingMemory {
  std::shared_ptr<Allocator> slots;
  std::string description;
};
[[nodiscard]] RingMemory ring_slot_allocator(Device device, const StagingMemory& memory);

}  // namespace warpload::detail
