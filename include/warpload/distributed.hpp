// Multi-rank loading: every byte of a checkpoint is read from storage by exactly one rank, and
// the ranks exchange what each needs over a Collective (docs/distributed.md).
//
//   auto comm = warpload::make_nccl_collective(id, rank, world, /*cuda_device=*/local_rank);
//   warpload::DistributedLoader loader(my_host_collective);   // any host-memory Collective
//   loader.add("/models/llama");                               // same files on every rank
//   loader.load(warpload::Delivery::kOnRequest);               // reads 1/world of the bytes
//   warpload::TensorView w = loader.shard("mlp.up.weight", 0); // this rank's block only
//
// The plan (plan_ranks): the data sections to load are laid end to end in a "stream", each
// segment placed so that its stream offset is congruent to its file offset modulo the
// granularity (4096), then the stream is cut into `world` slots of equal size S (a multiple of
// the granularity). Rank r reads the file bytes that fall in stream [r*S, (r+1)*S): files are
// split by bytes, not assigned whole, so every rank reads the same amount (± granularity per
// segment end), and split points are aligned file offsets, so O_DIRECT reads need no bytes
// from a neighbour's share.
//
// SPMD: every method marked "collective" must be called by every rank of the Collective, in
// the same order, with the same arguments (the same files added in the same order); the
// loaders check that their plans agree at load().
//
// Failures: load() ends with an error agreement step (every rank all-gathers a status), so an
// I/O error or a malformed file on one rank makes load() throw on every rank: the failing
// rank throws its own exception, the others an exception of the same kind whose message
// starts "rank R of W: " followed by the failing rank's message (which names the file). A
// rank that cannot reach load() (its add() threw) calls fail() instead. A peer that never
// arrives is the Collective's timeout: CollectiveError (an IoError, errno ETIMEDOUT).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "warpload/collective.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"
#include "warpload/loader.hpp"
#include "warpload/memory.hpp"

namespace warpload {

// ---- the plan --------------------------------------------------------------------------------

// Consecutive tensors [first, last) (data order) of one planned file.
using Segment = TensorSpan;

// File bytes [begin, end) (offsets in the file's data section) that one rank reads.
struct RankRead {
  std::size_t segment = 0;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

struct RankPlan {
  int world = 1;
  std::uint64_t granularity = 4096;
  std::vector<Segment> segments;
  std::vector<std::uint64_t> data_begin;     // per segment: data-section offset of its first byte
  std::vector<std::uint64_t> data_end;       // per segment: one past its last byte
  std::vector<std::uint64_t> stream;         // per segment: stream offset of its first byte
  std::uint64_t stream_bytes = 0;            // end of the last segment in the stream
  std::uint64_t slot_bytes = 0;              // S: rank r owns stream [r*S, (r+1)*S)
  std::uint64_t data_bytes = 0;              // sum of the segments' lengths
  std::vector<std::vector<RankRead>> reads;  // per rank, in stream order

  // Data bytes rank `rank` reads (sum of its RankReads).
  [[nodiscard]] std::uint64_t rank_bytes(int rank) const noexcept;
  // A digest of everything that must agree across ranks (files' sizes and data offsets,
  // segments, world, granularity); compared at load().
  [[nodiscard]] std::uint64_t fingerprint() const noexcept;
};

// Plans `segments` of `files` over `world` ranks. `granularity` is a power of two >= every
// alignment a backend may ask for (4096 covers O_DIRECT on common file systems). Throws
// std::invalid_argument for world < 1, a bad granularity or a segment outside its file.
[[nodiscard]] RankPlan plan_ranks(std::span<const PlannedFile> files,
                                  std::span<const Segment> segments, int world,
                                  std::uint64_t granularity = 4096);

// ---- the loader ------------------------------------------------------------------------------

enum class Delivery : std::uint8_t {
  kAll,        // load() all-gathers: every rank holds every loaded tensor; tensor()/shard()
               // are local, zero-copy views
  kOnRequest,  // load() keeps only this rank's share; tensor(), shard() and push() are
               // collective calls that move just the bytes the caller needs
};

struct DistributedOptions {
  std::uint64_t granularity = 4096;
  // Bytes each rank contributes per all-gather round (a multiple of the granularity): rounds
  // keep every collective short, so the Collective's timeout measures stalls, not transfers.
  std::uint64_t round_bytes = std::uint64_t{64} << 20;
  // The ranks share one storage (one node's page cache or a shared file system): a shard that
  // is one byte range of the file (dim 0, or a tensor with one row) is read by the rank that
  // needs it instead of being sent (docs/distributed.md, "the direct-read rule").
  bool shared_storage = false;
};

struct DistributedStats {
  LoadStats load;                    // this rank's read phase (bytes: data bytes it read)
  std::uint64_t bytes_read = 0;      // bytes this rank read from storage (all load()s)
  std::uint64_t bytes_sent = 0;      // payload this rank sent over the collective
  std::uint64_t bytes_received = 0;  // payload this rank received over the collective
  std::uint64_t direct_bytes = 0;    // shard bytes read from storage by the direct-read rule
};

// Memory follows the collective: a host collective (torch.distributed's gloo, threads) loads
// host memory (LoadOptions::device "cpu"); a device collective (NCCL) loads this rank's local
// device (LoadOptions::device "cuda:N", buffers from LoadOptions::allocator if it is a device
// allocator, else cuMemAlloc): each rank's reads reach its share of the device buffer through
// the staged pipeline and the all-gather runs on the device, so every view is device memory.
// Device loads support Delivery::kAll only (shard() is then a view: nothing moves).
// LoadOptions::on_progress reports this rank's bytes read; LoadOptions::cancel stops this
// rank's reads, and the error agreement then fails every rank (CancelledError naming it).
// Lifetime as Loader: views keep their buffers alive. Not thread-safe.
class DistributedLoader {
 public:
  explicit DistributedLoader(std::shared_ptr<Collective> collective, LoadOptions options = {},
                             DistributedOptions distributed = {});
  ~DistributedLoader();
  DistributedLoader(const DistributedLoader&) = delete;
  DistributedLoader& operator=(const DistributedLoader&) = delete;

  // As Loader::add (local: headers are read and validated by every rank).
  void add(const std::filesystem::path& path);
  [[nodiscard]] const std::vector<PlannedFile>& files() const noexcept;
  [[nodiscard]] std::uint64_t total_bytes() const noexcept;
  [[nodiscard]] std::vector<std::string> keys() const;
  [[nodiscard]] const TensorInfo& info(std::string_view name) const;
  [[nodiscard]] const PlannedFile& file_of(std::string_view name) const;
  [[nodiscard]] int rank() const noexcept;
  [[nodiscard]] int world() const noexcept;

  // Collective. Reads this rank's share of every tensor of `segments` (all files when
  // omitted), agrees on errors, then delivers as `delivery` says. Throws as described at the
  // top; UnsupportedError when already loaded (release() first).
  LoadStats load(Delivery delivery = Delivery::kAll);
  LoadStats load(std::span<const Segment> segments, Delivery delivery);
  // Collective, instead of load() on a rank that cannot load: the peers' load() throws with
  // `error`'s message (kind kept for warpload errors); this call throws CollectiveError only
  // when the agreement itself fails.
  void fail(const std::exception& error);

  [[nodiscard]] bool loaded() const noexcept;
  [[nodiscard]] const RankPlan& plan() const;

  // The whole tensor (kOnRequest: collective, broadcast of the pieces from their readers).
  [[nodiscard]] TensorView tensor(std::string_view name);
  // This rank's block along `dim`, Loader::shard's rule (blocks of ceil(size / world)).
  // kOnRequest: collective; the readers send each rank only its block's bytes (or the rank
  // reads it itself under DistributedOptions::shared_storage). The view is contiguous for
  // kOnRequest; for kAll it is Loader::shard's zero-copy (possibly strided) view.
  [[nodiscard]] TensorView shard(std::string_view name, int dim);
  // kOnRequest: collective; the whole tensor reaches rank `dst` only (nullopt elsewhere).
  [[nodiscard]] std::optional<TensorView> push(std::string_view name, int dst);

  [[nodiscard]] const DistributedStats& stats() const noexcept;
  // Drops this loader's buffers (views keep theirs); load() may be called again. noexcept.
  void release() noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace warpload
