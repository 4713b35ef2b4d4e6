// Collective: the communication multi-rank loads need (warpload/distributed.hpp), over any
// transport — NCCL (make_nccl_collective, loaded at run time), torch.distributed (the Python
// package's adapter) or threads (tests/support/thread_collective.hpp) — and CollectiveError,
// what every implementation throws when an operation fails or a peer does not arrive in time.
//
// Ownership: a Collective owns its communicator; buffers passed to it are the caller's and
// must live in memory() for the call. Thread safety: one operation at a time per Collective.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "warpload/error.hpp"
#include "warpload/memory.hpp"

namespace warpload {

// A collective operation failed: a timeout (errno ETIMEDOUT), a lost peer, or an error of the
// communication library (message names the operation, rank, world and the library's reason).
// After one, the communicator is unusable; every rank sees an error.
class CollectiveError : public IoError {
 public:
  CollectiveError(const std::string& message, int error_number)
      : IoError(message, error_number, 0) {}
};

// The communication a DistributedLoader needs, over any transport: NCCL (make_nccl_collective),
// torch.distributed (the Python package's adapter), or threads (tests). Buffers are in
// memory(). Every operation is collective unless noted; sizes are in bytes and must agree
// across ranks as stated. Implementations must bound every wait by a timeout and throw
// CollectiveError when it expires. Not thread-safe: one operation at a time.
class Collective {
 public:
  struct Transfer {
    int peer = 0;
    std::span<std::byte> data;
  };

  virtual ~Collective() = default;
  [[nodiscard]] virtual int rank() const noexcept = 0;
  [[nodiscard]] virtual int size() const noexcept = 0;
  // Where buffers passed to the operations must live (kHost or kDevice).
  [[nodiscard]] virtual MemoryKind memory() const noexcept = 0;

  // out[r] receives rank r's `in`; every span has the same size on every rank. `in` may be
  // out[rank()] itself.
  virtual void all_gather(std::span<const std::byte> in,
                          std::span<const std::span<std::byte>> out) = 0;
  // Rank `root`'s `data` is copied to every other rank's `data` (same size everywhere).
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  // Point to point: posts every send and receive, then waits for all of them. At most one
  // send and one receive per peer per call; sizes must match the peer's side. Only the ranks
  // named take part (not collective over the whole group).
  virtual void exchange(std::span<const Transfer> sends, std::span<const Transfer> receives) = 0;
  // Host strings: every rank's `status` ("" = fine), indexed by rank. The error agreement.
  [[nodiscard]] virtual std::vector<std::string> all_gather_status(const std::string& status) = 0;
};

// NCCL, loaded at run time (libnccl.so.2, or $WARPLOAD_NCCL_LIB) through src/device/nccl_shim.
// Buffers are device memory of `cuda_device` (the local device, not the global rank).
struct NcclUniqueId {
  std::byte bytes[128];
};
// Made by one rank and sent to the others by the caller (any out-of-band channel). Throws
// UnsupportedError naming the library when NCCL (or the CUDA driver) cannot be loaded.
[[nodiscard]] NcclUniqueId nccl_unique_id();
// Joins the communicator: blocks until all `world` ranks have joined, at most `timeout_ms`
// (then CollectiveError ETIMEDOUT; NCCL's init cannot be interrupted, so one helper thread
// stays blocked in it). `timeout_ms` also bounds every later operation: past it the
// communicator is aborted and CollectiveError thrown.
[[nodiscard]] std::shared_ptr<Collective> make_nccl_collective(const NcclUniqueId& id, int rank,
                                                               int world, int cuda_device,
                                                               int timeout_ms = 600000);
// Whether libnccl.so.2 loads with every symbol warpload uses (never throws).
[[nodiscard]] bool nccl_available() noexcept;

}  // namespace warpload
