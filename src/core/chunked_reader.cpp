#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>
#include <utility>

#include "core/read_executor.hpp"
#include "core/tensor_view.hpp"
#include "core/verify.hpp"
#include "warpload/chunked.hpp"

namespace warpload {

std::uint64_t chunk_budget(std::uint64_t memory_limit, unsigned parts) noexcept {
  return memory_limit == 0 ? 0 : std::max<std::uint64_t>(memory_limit / std::max(parts, 1U), 1);
}

std::vector<ChunkPlan> plan_chunks(std::span<const PlannedFile> files, std::uint64_t budget) {
  std::vector<ChunkPlan> chunks;
  ChunkPlan current;
  for (std::size_t f = 0; f < files.size(); ++f) {
    const auto& tensors = files[f].header.tensors;
    std::size_t first = 0;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const std::uint64_t nbytes = tensors[i].nbytes();
      if (budget != 0 && current.bytes > 0 && nbytes > budget - std::min(budget, current.bytes)) {
        if (i > first) current.spans.push_back(TensorSpan{f, first, i});
        chunks.push_back(std::move(current));
        current = ChunkPlan{};
        first = i;
      }
      current.bytes += nbytes;
    }
    if (tensors.size() > first) current.spans.push_back(TensorSpan{f, first, tensors.size()});
    if (budget == 0 && !current.spans.empty()) {
      chunks.push_back(std::move(current));
      current = ChunkPlan{};
    }
  }
  if (!current.spans.empty()) chunks.push_back(std::move(current));
  return chunks;
}

struct ChunkedReader::State {
  std::shared_ptr<const CheckpointPlan> plan;
  LoadOptions options;
  std::vector<ChunkPlan> chunks;
  std::uint64_t total = 0;
  std::unique_ptr<detail::ReadExecutor> executor;
  // Progress of the chunk being read is reported from `base` on (set before each read).
  struct Progress {
    std::function<void(std::uint64_t, std::uint64_t)> user;
    std::atomic<std::uint64_t> base{0};
    std::uint64_t total = 0;
  };
  std::shared_ptr<Progress> progress = std::make_shared<Progress>();
  std::size_t next_index = 0;
  std::uint64_t chunk_start = 0;  // bytes of the chunks before next_index
  bool prefetch = true;
  struct Chunk {
    std::vector<TensorView> views;
    LoadStats stats;  // of this chunk's read
  };
  std::future<Chunk> ahead;  // the chunk next_index, being read ahead
  LoadStats stats;           // summed in next(), on the caller's thread

  Chunk read(std::size_t index, std::uint64_t start);
  void wait_ahead() noexcept {
    if (!ahead.valid()) return;
    executor->cancel();
    try {
      (void)ahead.get();
    } catch (...) {  // NOLINT(bugprone-empty-catch): nobody wants that chunk any more
    }
  }
};

ChunkedReader::State::Chunk ChunkedReader::State::read(std::size_t index, std::uint64_t start) {
  const ChunkPlan& chunk = chunks[index];
  const auto& files = plan->files();
  std::vector<detail::Placement> placed;
  placed.reserve(chunk.spans.size());
  try {
    for (const TensorSpan& span : chunk.spans) {
      const Header& h = files[span.file].header;
      const std::uint64_t b0 = h.tensors[span.first].begin;
      const std::uint64_t b1 = h.tensors[span.last - 1].end;
      // Tensors keep their data-section alignment (phase b0), as in a whole-file load.
      placed.push_back(executor->place(span.file, h.data_offset() + b0, h.data_offset() + b1, b0));
      executor->add(span.file, h.data_offset() + b0, h.data_offset() + b1, placed.back().dest);
    }
  } catch (...) {
    executor->discard();  // the destinations die with `placed`
    throw;
  }
  progress->base.store(start);
  LoadStats round = executor->run(chunk.bytes);

  Allocator& allocator = *executor->allocator();
  const int device = allocator.kind() == MemoryKind::kDevice ? executor->device().index : -1;
  std::vector<TensorView> views;
  for (std::size_t r = 0; r < chunk.spans.size(); ++r) {
    const TensorSpan& span = chunk.spans[r];
    const PlannedFile& file = files[span.file];
    const Header& h = file.header;
    // Where tensor t of the span landed: its realigned copy, or its place in the range.
    std::vector<std::shared_ptr<Buffer>> side(span.last - span.first);
    auto at = [&](std::size_t t) -> std::byte* {
      if (side[t - span.first]) return side[t - span.first]->data();
      return placed[r].dest + (h.tensors[t].begin - h.tensors[span.first].begin);
    };
    for (std::size_t t = span.first; t < span.last; ++t) {
      side[t - span.first] = detail::realigned_copy(allocator, h.tensors[t], at(t),
                                                    executor->device().index, file.path);
    }
    if (options.verify) {
      const auto verify_start = std::chrono::steady_clock::now();
      detail::verify_loaded_tensors(file.path, h, span.first, span.last, device,
                                    [&](const TensorInfo& t) -> const std::byte* {
                                      return at(static_cast<std::size_t>(&t - h.tensors.data()));
                                    });
      round.verify_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - verify_start).count();
    }
    const std::string name = file.path.string();
    for (std::size_t t = span.first; t < span.last; ++t) {
      const TensorInfo& info = h.tensors[t];
      std::shared_ptr<const Buffer> owner =
          side[t - span.first] ? std::shared_ptr<const Buffer>(side[t - span.first])
                               : placed[r].buffer;
      std::byte* data = info.nbytes() == 0 ? placed[r].buffer->data() : at(t);
      views.push_back(detail::make_tensor_view(info, data, std::move(owner), name));
    }
  }
  return Chunk{std::move(views), std::move(round)};
}

ChunkedReader::ChunkedReader(std::shared_ptr<const CheckpointPlan> plan, LoadOptions options,
                             ChunkOptions chunks)
    : state_(std::make_unique<State>()) {
  if (!plan) throw std::invalid_argument("ChunkedReader: no plan");
  State& s = *state_;
  s.plan = std::move(plan);
  s.chunks =
      plan_chunks(s.plan->files(), chunk_budget(chunks.memory_limit, chunks.prefetch ? 3 : 2));
  for (const ChunkPlan& c : s.chunks) s.total += c.bytes;
  // Progress counts over the whole reader: each chunk's reads are reported from its start.
  s.progress->user = std::move(options.on_progress);
  s.progress->total = s.total;
  if (s.progress->user) {
    options.on_progress = [p = s.progress](std::uint64_t done, std::uint64_t chunk_total) {
      p->user(p->base.load() + std::min(done, chunk_total), p->total);
    };
  }
  s.options = std::move(options);
  s.executor = std::make_unique<detail::ReadExecutor>(s.options, s.plan->files());
  s.stats.backend = s.executor->storage().capabilities().name;
  s.stats.device = s.executor->device().name();
  s.prefetch = chunks.prefetch;
}

ChunkedReader::~ChunkedReader() {
  if (state_) state_->wait_ahead();
}

const std::vector<ChunkPlan>& ChunkedReader::chunks() const noexcept { return state_->chunks; }
std::uint64_t ChunkedReader::total_bytes() const noexcept { return state_->total; }
const LoadStats& ChunkedReader::stats() const noexcept { return state_->stats; }
void ChunkedReader::cancel() noexcept { state_->executor->cancel(); }

std::optional<std::vector<TensorView>> ChunkedReader::next() {
  State& s = *state_;
  if (s.next_index >= s.chunks.size()) return std::nullopt;
  const std::size_t index = s.next_index;
  // A read ahead's error is rethrown here, at the next() that wanted its chunk.
  State::Chunk chunk = s.ahead.valid() ? s.ahead.get() : s.read(index, s.chunk_start);
  // The latest read's stats, with the times and bytes of every read so far.
  const LoadStats before = std::exchange(s.stats, chunk.stats);
  s.stats.bytes += before.bytes;
  s.stats.seconds += before.seconds;
  s.stats.verify_seconds += before.verify_seconds;
  s.next_index = index + 1;
  s.chunk_start += s.chunks[index].bytes;
  if (s.prefetch && s.next_index < s.chunks.size()) {
    s.ahead = std::async(std::launch::async, [&s, i = s.next_index, start = s.chunk_start] {
      return s.read(i, start);
    });
  }
  return std::move(chunk.views);
}

}  // namespace warpload
