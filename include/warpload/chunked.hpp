// ChunkedReader: a checkpoint read in bounded memory, one chunk of consecutive tensors at a
// time, the next chunk read ahead while the caller uses the current one. For checkpoints larger
// than memory (hashing, verifying, streaming into an engine that copies each tensor away):
//
//   auto plan = std::make_shared<warpload::CheckpointPlan>();
//   plan->add("/models/huge");
//   warpload::ChunkedReader reader(plan, {}, {.memory_limit = std::uint64_t{2} << 30});
//   while (auto chunk = reader.next()) {
//     for (const warpload::TensorView& t : *chunk) consume(t);
//   }
//
// Chunks: consecutive tensors in plan order (file order, then data order), at most
// memory_limit / 3 bytes each with prefetch (the chunk handed out, the one being read ahead, and
// the previous one a view the caller still holds may pin) and memory_limit / 2 without; a tensor
// larger than that is a chunk of its own. So the tensor bytes the reader holds stay within
// memory_limit, plus at most one tensor larger than a chunk. memory_limit 0: one file per chunk.
//
// Reads go through the one read path (settings, backend, allocator, progress, cancel, verify:
// LoadOptions as for Loader; a CUDA device gets device memory through the staged pipeline or
// GDS). Each range of a chunk lands in a Buffer of its own; views keep theirs alive, so a chunk
// stays in memory for as long as the caller holds one of its views.
//
// Errors: next() throws what a load throws (naming file and offset) for the chunk it returns,
// and nothing of that chunk is handed out. A read ahead's error surfaces at the next() that
// wanted its chunk. Thread safety: one thread calls next(); cancel() may be called from any
// thread. The destructor stops a read ahead and waits for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "warpload/loader.hpp"
#include "warpload/plan.hpp"
#include "warpload/tensor_view.hpp"

namespace warpload {

struct ChunkPlan {
  std::vector<TensorSpan> spans;
  std::uint64_t bytes = 0;  // tensor bytes of the chunk
};

// Cuts the planned `files` into chunks of consecutive tensors of at most `budget` bytes (a
// larger tensor is a chunk of its own); budget 0: one chunk per file (files without tensors
// make none).
[[nodiscard]] std::vector<ChunkPlan> plan_chunks(std::span<const PlannedFile> files,
                                                 std::uint64_t budget);
// The budget ChunkedReader uses for `memory_limit` (0: none) split in `parts`.
[[nodiscard]] std::uint64_t chunk_budget(std::uint64_t memory_limit, unsigned parts) noexcept;

struct ChunkOptions {
  std::uint64_t memory_limit = 0;  // bytes; 0 = one file per chunk
  bool prefetch = true;            // read the next chunk while the caller uses this one
};

class ChunkedReader {
 public:
  // Throws std::invalid_argument for a plan that is null; errors of the load's set-up (a
  // backend or device that cannot be used, a config that cannot be read) as Loader::load().
  ChunkedReader(std::shared_ptr<const CheckpointPlan> plan, LoadOptions options,
                ChunkOptions chunks = {});
  ~ChunkedReader();
  ChunkedReader(const ChunkedReader&) = delete;
  ChunkedReader& operator=(const ChunkedReader&) = delete;

  [[nodiscard]] const std::vector<ChunkPlan>& chunks() const noexcept;
  // Sum of the chunks' bytes (what on_progress counts to).
  [[nodiscard]] std::uint64_t total_bytes() const noexcept;
  // The next chunk's tensors in plan order, or nullopt after the last chunk.
  [[nodiscard]] std::optional<std::vector<TensorView>> next();
  // Stops the read in progress (next() or a read ahead) with CancelledError; the next chunk
  // read after it throws CancelledError too. Any thread.
  void cancel() noexcept;
  // The read phases so far, summed (bytes, seconds, verify_seconds), with the backend's name.
  [[nodiscard]] const LoadStats& stats() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace warpload
