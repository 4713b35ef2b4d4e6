#include "core/rank_plan.hpp"

#include <algorithm>
#include <stdexcept>

#include "common/align.hpp"
#include "common/printable.hpp"
#include "warpload/dtype.hpp"
#include "warpload/error.hpp"

namespace warpload {
namespace {

using detail::align_up;

// FNV-1a over 64-bit words: a digest, not a security measure.
struct Fnv {
  std::uint64_t h = 1469598103934665603ULL;
  void add(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ULL;
    }
  }
};

}  // namespace

std::uint64_t RankPlan::rank_bytes(int rank) const noexcept {
  if (rank < 0 || static_cast<std::size_t>(rank) >= reads.size()) return 0;
  std::uint64_t n = 0;
  for (const RankRead& r : reads[static_cast<std::size_t>(rank)]) n += r.end - r.begin;
  return n;
}

std::uint64_t RankPlan::fingerprint() const noexcept {
  Fnv f;
  f.add(static_cast<std::uint64_t>(world));
  f.add(granularity);
  f.add(segments.size());
  for (std::size_t i = 0; i < segments.size(); ++i) {
    f.add(segments[i].file);
    f.add(segments[i].first);
    f.add(segments[i].last);
    f.add(data_begin[i]);
    f.add(data_end[i]);
    f.add(stream[i]);
  }
  f.add(slot_bytes);
  return f.h;
}

RankPlan plan_ranks(std::span<const PlannedFile> files, std::span<const Segment> segments,
                    int world, std::uint64_t granularity) {
  if (world < 1) throw std::invalid_argument("plan_ranks: world " + std::to_string(world) + " < 1");
  if (granularity == 0 || (granularity & (granularity - 1)) != 0) {
    throw std::invalid_argument("plan_ranks: granularity " + std::to_string(granularity) +
                                " is not a power of two");
  }
  RankPlan plan;
  plan.world = world;
  plan.granularity = granularity;
  plan.segments.assign(segments.begin(), segments.end());
  plan.reads.resize(static_cast<std::size_t>(world));
  std::uint64_t cursor = 0;  // stream end so far
  for (const Segment& s : segments) {
    if (s.file >= files.size()) {
      throw std::invalid_argument("plan_ranks: segment of file " + std::to_string(s.file) +
                                  " but only " + std::to_string(files.size()) + " files");
    }
    const Header& h = files[s.file].header;
    if (s.first > s.last || s.last > h.tensors.size()) {
      throw std::invalid_argument(files[s.file].path.string() + ": segment of tensors [" +
                                  std::to_string(s.first) + ", " + std::to_string(s.last) +
                                  ") is outside the file's " + std::to_string(h.tensors.size()) +
                                  " tensors");
    }
    const std::uint64_t b = s.first < s.last ? h.tensors[s.first].begin : 0;
    const std::uint64_t e = s.first < s.last ? h.tensors[s.last - 1].end : 0;
    // Stream offset congruent to the file offset modulo the granularity: aligned file reads
    // then land on aligned stream positions, and slot boundaries are aligned file offsets.
    const std::uint64_t base = align_up(cursor, granularity) + (h.data_offset() + b) % granularity;
    plan.data_begin.push_back(b);
    plan.data_end.push_back(e);
    plan.stream.push_back(base);
    plan.data_bytes += e - b;
    // The gap after a segment reaches the next granularity boundary, where an aligned read of
    // its last bytes may write.
    cursor = e > b ? base + (e - b) : cursor;
  }
  plan.stream_bytes = cursor;
  const auto w = static_cast<std::uint64_t>(world);
  plan.slot_bytes = cursor == 0 ? 0 : align_up(cursor / w + (cursor % w != 0 ? 1 : 0), granularity);
  if (plan.slot_bytes == 0) return plan;
  for (std::size_t i = 0; i < plan.segments.size(); ++i) {
    const std::uint64_t length = plan.data_end[i] - plan.data_begin[i];
    if (length == 0) continue;
    std::uint64_t at = plan.stream[i];
    const std::uint64_t stop = at + length;
    while (at < stop) {
      const std::uint64_t rank = at / plan.slot_bytes;
      const std::uint64_t slot_end = (rank + 1) * plan.slot_bytes;
      const std::uint64_t piece_end = std::min(stop, slot_end);
      plan.reads[rank].push_back(RankRead{i, plan.data_begin[i] + (at - plan.stream[i]),
                                          plan.data_begin[i] + (piece_end - plan.stream[i])});
      at = piece_end;
    }
  }
  return plan;
}

namespace detail {

BlockBytes block_bytes(const TensorInfo& t, int rank, int world, int dim, const std::string& file) {
  const auto ndim = static_cast<int>(t.shape.size());
  const std::string what = file + ": tensor '" + printable(t.name) + "'";
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument(what + ": shard rank " + std::to_string(rank) +
                                " is not in [0, world=" + std::to_string(world) + ")");
  }
  if (ndim == 0) throw std::invalid_argument(what + ": cannot shard a 0-d tensor");
  if (dim < -ndim || dim >= ndim) {
    throw std::invalid_argument(what + ": dim " + std::to_string(dim) + " out of range for a " +
                                std::to_string(ndim) + "-d tensor");
  }
  BlockBytes out;
  out.dim = static_cast<std::size_t>(dim < 0 ? dim + ndim : dim);
  const auto size = static_cast<std::int64_t>(t.shape[out.dim]);
  const std::int64_t block = size / world + (size % world != 0 ? 1 : 0);
  out.begin = block >= size ? std::min<std::int64_t>(rank, 1) * size
                            : std::min<std::int64_t>(block * rank, size);
  out.end = out.begin + std::min<std::int64_t>(block, size - out.begin);
  if (t.numel() == 0 || out.end == out.begin) return out;  // nothing to move

  std::uint64_t outer = 1;
  for (std::size_t i = 0; i < out.dim; ++i) outer *= t.shape[i];
  std::uint64_t inner = 1;
  for (std::size_t i = out.dim + 1; i < t.shape.size(); ++i) inner *= t.shape[i];
  // Non-empty tensors: every product is bounded by the file size, so nothing overflows.
  const std::uint64_t unit_bits = inner * dtype_bits(t.dtype);  // one index along dim
  const auto b = static_cast<std::uint64_t>(out.begin);
  const auto e = static_cast<std::uint64_t>(out.end);
  const auto n = static_cast<std::uint64_t>(size);
  if (unit_bits % 8 == 0) {
    const std::uint64_t unit = unit_bits / 8;
    out.rows = (e - b == n || outer == 1) ? 1 : outer;
    out.row_stride = n * unit;
    out.offset = b * unit;
    out.length = e - b == n ? t.nbytes() : (e - b) * unit;  // whole tensor: one range
    return out;
  }
  if ((outer > 1 && e - b != n) || (b * unit_bits) % 8 != 0 || (e * unit_bits) % 8 != 0) {
    throw UnsupportedError(what + ": shard " + std::to_string(rank) + "/" + std::to_string(world) +
                           " of a " + std::string(dtype_name(t.dtype)) + " tensor along dim " +
                           std::to_string(out.dim) + " does not start and end on whole bytes");
  }
  out.rows = 1;
  out.row_stride = t.nbytes();
  out.offset = e - b == n ? 0 : b * unit_bits / 8;
  out.length = e - b == n ? t.nbytes() : (e - b) * unit_bits / 8;
  return out;
}

void for_each_overlap(const BlockBytes& block, std::uint64_t lo, std::uint64_t hi,
                      const std::function<void(std::uint64_t, std::uint64_t, std::uint64_t)>& fn) {
  if (block.rows == 0 || block.length == 0 || lo >= hi) return;
  std::uint64_t first = 0;
  std::uint64_t last = block.rows - 1;
  if (block.rows > 1) {
    if (lo >= block.offset + block.length)
      first = (lo - block.offset - block.length) / block.row_stride + 1;
    if (hi <= block.offset) return;
    last = std::min(last, (hi - block.offset - 1) / block.row_stride);
  }
  for (std::uint64_t o = first; o <= last && o < block.rows; ++o) {
    const std::uint64_t a = o * block.row_stride + block.offset;
    const std::uint64_t z = a + block.length;
    const std::uint64_t from = std::max(a, lo);
    const std::uint64_t to = std::min(z, hi);
    if (from < to) fn(from, o * block.length + (from - a), to - from);
  }
}

TensorView block_view(TensorView whole, const BlockBytes& block) {
  whole.shape[block.dim] = block.end - block.begin;
  whole.contiguous = block.rows <= 1;
  whole.data += block.offset;
  whole.nbytes = block.bytes() == 0 ? 0 : (block.rows - 1) * block.row_stride + block.length;
  return whole;
}

}  // namespace detail
}  // namespace warpload
