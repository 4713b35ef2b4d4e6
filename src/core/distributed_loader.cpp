#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "common/align.hpp"
#include "common/error_codec.hpp"
#include "common/printable.hpp"
#include "core/rank_plan.hpp"
#include "core/read_executor.hpp"
#include "core/tensor_view.hpp"
#include "device/cuda_shim.hpp"
#include "warpload/device.hpp"
#include "warpload/distributed.hpp"
#include "warpload/dtype.hpp"

namespace warpload {
namespace {

using detail::align_down;

// ---- the error agreement -------------------------------------------------------------------
// A rank's status travels as text: "<fingerprint>\n" followed by "ok" or the error's encoding
// (common/error_codec.hpp), so a peer can rethrow the same kind.

struct Status {
  std::string fingerprint;
  std::string error;  // encoded; empty when the rank is fine
};

Status parse_status(const std::string& text) {
  const auto newline = text.find('\n');
  Status s;
  s.fingerprint = text.substr(0, newline);
  const std::string rest = newline == std::string::npos ? "" : text.substr(newline + 1);
  if (rest != "ok") s.error = rest;
  return s;
}

// Every rank's status; throws on every rank when one failed or the plans differ.
void agree(Collective& collective, const std::string& fingerprint,
           const std::exception_ptr& local) {
  const std::string mine = fingerprint + "\n" + (local ? detail::encode_error(local) : "ok");
  const std::vector<std::string> all = collective.all_gather_status(mine);
  const int world = collective.size();
  for (int q = 0; q < static_cast<int>(all.size()); ++q) {
    const Status s = parse_status(all[static_cast<std::size_t>(q)]);
    if (s.error.empty()) continue;
    if (q == collective.rank() && local) std::rethrow_exception(local);
    detail::throw_decoded_error(
        s.error, "rank " + std::to_string(q) + " of " + std::to_string(world) + ": ");
  }
  const Status first = parse_status(all.front());
  for (int q = 1; q < static_cast<int>(all.size()); ++q) {
    if (parse_status(all[static_cast<std::size_t>(q)]).fingerprint != first.fingerprint) {
      throw std::invalid_argument(
          "rank " + std::to_string(q) + " of " + std::to_string(world) +
          " planned different files, file sizes or tensors than rank 0: every rank must add "
          "the same checkpoint files in the same order");
    }
  }
}

std::string hex(std::uint64_t v) {
  std::ostringstream out;
  out << std::hex << v;
  return out.str();
}

TensorView make_view(const TensorInfo& t, std::byte* data, std::shared_ptr<const Buffer> owner,
                     const std::string& file) {
  return detail::make_tensor_view(t, data, std::move(owner), file);
}

}  // namespace

struct DistributedLoader::State {
  std::shared_ptr<Collective> collective;
  LoadOptions options;
  DistributedOptions distributed;
  CheckpointPlan catalog;                       // files, headers, name index
  std::shared_ptr<Allocator> allocator;         // host buffers
  std::shared_ptr<Allocator> device_allocator;  // device loads (a device collective)
  Device device;

  RankPlan plan;
  Delivery delivery = Delivery::kAll;
  bool loaded = false;
  std::shared_ptr<Buffer> buffer;  // kAll: the whole stream; kOnRequest: this rank's slot
  std::uint64_t buffer_base = 0;   // stream offset of buffer->data()
  struct Placed {
    std::size_t segment;
    std::uint64_t stream;
  };
  std::unordered_map<std::string, Placed, NameHash, std::equal_to<>> placed;
  std::unordered_map<std::string, std::shared_ptr<Buffer>> realigned;
  std::unique_ptr<detail::ReadExecutor> direct_reader;  // shared_storage reads
  DistributedStats stats;

  explicit State(LoadOptions o) : options(std::move(o)) {}

  int rank() const { return collective->rank(); }
  int world() const { return collective->size(); }

  const Placed& find(std::string_view name) const {
    auto it = placed.find(name);
    if (it == placed.end()) {
      if (!catalog.contains(name)) {
        throw NotFoundError("no tensor named '" + detail::printable(name) + "'");
      }
      const std::string file = catalog.file_of(name).path.string();
      if (!loaded) {
        throw UnsupportedError(file + ": tensor '" + detail::printable(name) +
                               "' requested before load()");
      }
      throw UnsupportedError(file + ": tensor '" + detail::printable(name) +
                             "' is not in the segments of the last load()");
    }
    return it->second;
  }
  // Stream range [lo, hi) held by rank q.
  std::uint64_t slot_lo(int q) const { return static_cast<std::uint64_t>(q) * plan.slot_bytes; }
  std::uint64_t slot_hi(int q) const { return slot_lo(q) + plan.slot_bytes; }
  std::byte* at(std::uint64_t stream) const { return buffer->data() + (stream - buffer_base); }
  // The part [lo, hi) of tensor `t`'s stream bytes that rank q read, relative to the tensor's
  // first byte; {0, 0} when q read none of it.
  std::pair<std::uint64_t, std::uint64_t> held(int q, const Placed& p, const TensorInfo& t) const {
    const std::uint64_t lo = std::max(p.stream, slot_lo(q));
    const std::uint64_t hi = std::min(p.stream + t.nbytes(), slot_hi(q));
    return lo < hi ? std::pair{lo - p.stream, hi - p.stream}
                   : std::pair{std::uint64_t{0}, std::uint64_t{0}};
  }
};

DistributedLoader::DistributedLoader(std::shared_ptr<Collective> collective, LoadOptions options,
                                     DistributedOptions distributed)
    : state_(std::make_unique<State>(std::move(options))) {
  if (!collective) throw std::invalid_argument("DistributedLoader: no collective");
  if (distributed.round_bytes < distributed.granularity) {
    distributed.round_bytes = distributed.granularity;
  }
  distributed.round_bytes = align_down(distributed.round_bytes, distributed.granularity);
  state_->collective = std::move(collective);
  state_->distributed = distributed;
  state_->allocator = state_->options.allocator ? state_->options.allocator : make_host_allocator();
}

DistributedLoader::~DistributedLoader() = default;

void DistributedLoader::add(const std::filesystem::path& path) { state_->catalog.add(path); }
const std::vector<PlannedFile>& DistributedLoader::files() const noexcept {
  return state_->catalog.files();
}
std::uint64_t DistributedLoader::total_bytes() const noexcept {
  return state_->catalog.total_bytes();
}
std::vector<std::string> DistributedLoader::keys() const { return state_->catalog.keys(); }
const TensorInfo& DistributedLoader::info(std::string_view name) const {
  return state_->catalog.info(name);
}
const PlannedFile& DistributedLoader::file_of(std::string_view name) const {
  return state_->catalog.file_of(name);
}
int DistributedLoader::rank() const noexcept { return state_->collective->rank(); }
int DistributedLoader::world() const noexcept { return state_->collective->size(); }
bool DistributedLoader::loaded() const noexcept { return state_->loaded; }
const RankPlan& DistributedLoader::plan() const { return state_->plan; }
const DistributedStats& DistributedLoader::stats() const noexcept { return state_->stats; }

LoadStats DistributedLoader::load(Delivery delivery) {
  std::vector<Segment> all;
  const auto& files = state_->catalog.files();
  for (std::size_t f = 0; f < files.size(); ++f) {
    all.push_back(Segment{f, 0, files[f].header.tensors.size()});
  }
  return load(all, delivery);
}

void DistributedLoader::fail(const std::exception& error) {
  State& s = *state_;
  // The peers rethrow the same kind (the codec keeps it); this rank's copy is never rethrown.
  const std::exception_ptr local = detail::decode_error(detail::encode_error(error));
  try {
    agree(*s.collective, "-", local);
  } catch (const CollectiveError&) {
    throw;
  } catch (...) {
    // Expected: the agreement reports this rank's own failure; the caller rethrows it.
  }
}

LoadStats DistributedLoader::load(std::span<const Segment> segments, Delivery delivery) {
  State& s = *state_;
  if (s.loaded)
    throw UnsupportedError("load() called on a loaded DistributedLoader; release() first");
  const int me = s.rank();
  const int world = s.world();
  const auto& files = s.catalog.files();

  RankPlan plan;
  std::shared_ptr<Buffer> buffer;
  std::uint64_t base = 0;
  std::uint64_t bytes_read = 0;
  LoadStats read_stats;
  std::exception_ptr local;
  std::string fingerprint = "-";
  try {
    // Device memory goes with a device collective (NCCL): each rank's reads reach its share
    // of the device buffer through the staged pipeline, and the all-gather runs on the device.
    const Device device = Device::parse(s.options.device);
    const bool on_device = s.collective->memory() == MemoryKind::kDevice;
    if (on_device && !device.is_cuda()) {
      throw UnsupportedError(
          "the collective's buffers are device memory: set LoadOptions::device to this rank's "
          "local \"cuda:N\"");
    }
    if (!on_device && device.is_cuda()) {
      throw UnsupportedError(
          "DistributedLoader over a host collective loads host memory; device '" +
          s.options.device + "' needs a device collective (NCCL), or copy tensors afterwards");
    }
    if (on_device && delivery == Delivery::kOnRequest) {
      throw UnsupportedError(
          "Delivery::kOnRequest is host memory only; device loads use Delivery::kAll (shard() "
          "is then a view, nothing moves)");
    }
    plan = plan_ranks(files, segments, world, s.distributed.granularity);
    fingerprint = hex(plan.fingerprint());

    // The one read path (settings, storage, allocator as for Loader: GDS into device memory
    // where a device load can use it, the backend's own memory such as 3FS iovs for host loads).
    detail::ReadExecutor executor(s.options, files);
    s.device = executor.device();
    if (on_device) s.device_allocator = executor.allocator();
    const std::uint64_t S = plan.slot_bytes;
    const std::uint64_t G = plan.granularity;
    const std::uint64_t size =
        delivery == Delivery::kAll ? S * static_cast<std::uint64_t>(world) : S;
    base = delivery == Delivery::kAll ? 0 : S * static_cast<std::uint64_t>(me);
    // Open (and size-check) this rank's files first: a backend learns from them where its own
    // memory must come from (3FS iovs belong to the files' mount).
    const auto& reads = plan.reads[static_cast<std::size_t>(me)];
    for (const RankRead& r : reads) {
      const Segment& seg = plan.segments[r.segment];
      const std::uint64_t a = executor.alignment(seg.file);
      if (a == 0 || G % a != 0) {
        throw UnsupportedError(files[seg.file].path.string() + ": storage alignment " +
                               std::to_string(a) + " does not divide the plan's granularity " +
                               std::to_string(G));
      }
    }
    buffer = executor.allocator()->allocate(std::max<std::uint64_t>(size, 1), G);

    // Stream offsets are congruent to file offsets modulo G, a multiple of every file's
    // alignment, so each range's aligned superset lands aligned and inside the buffer.
    for (const RankRead& r : reads) {
      const Segment& seg = plan.segments[r.segment];
      const Header& h = files[seg.file].header;
      const std::uint64_t stream = plan.stream[r.segment] + (r.begin - plan.data_begin[r.segment]);
      executor.add(seg.file, h.data_offset() + r.begin, h.data_offset() + r.end,
                   buffer->data() + (stream - base));
    }
    // Progress is this rank's bytes; a cancelled rank fails its reads, and the error agreement
    // below then fails every rank.
    read_stats = executor.run(plan.rank_bytes(me));
    read_stats.bytes = plan.rank_bytes(me);
    bytes_read = executor.bytes_read();
  } catch (...) {
    local = std::current_exception();
  }
  agree(*s.collective, fingerprint, local);  // throws on every rank when one failed

  const std::uint64_t S = plan.slot_bytes;
  if (delivery == Delivery::kAll && S > 0 && world > 1) {
    std::vector<std::span<std::byte>> out(static_cast<std::size_t>(world));
    for (std::uint64_t off = 0; off < S; off += s.distributed.round_bytes) {
      const std::uint64_t n = std::min(s.distributed.round_bytes, S - off);
      for (int q = 0; q < world; ++q) {
        out[static_cast<std::size_t>(q)] =
            std::span<std::byte>(buffer->data() + static_cast<std::uint64_t>(q) * S + off, n);
      }
      s.collective->all_gather(out[static_cast<std::size_t>(me)], out);
    }
    s.stats.bytes_sent += S * static_cast<std::uint64_t>(world - 1);
    s.stats.bytes_received += S * static_cast<std::uint64_t>(world - 1);
  }

  s.placed.clear();
  s.realigned.clear();
  for (std::size_t i = 0; i < plan.segments.size(); ++i) {
    const Segment& seg = plan.segments[i];
    const Header& h = files[seg.file].header;
    for (std::size_t t = seg.first; t < seg.last; ++t) {
      s.placed.emplace(h.tensors[t].name, State::Placed{i, plan.stream[i] + (h.tensors[t].begin -
                                                                             plan.data_begin[i])});
    }
  }
  if (delivery == Delivery::kAll) {
    // Views must be aligned to their element size (see Loader).
    Allocator& allocator =
        buffer && buffer->kind() == MemoryKind::kDevice ? *s.device_allocator : *s.allocator;
    for (const auto& [name, p] : s.placed) {
      if (auto side =
              detail::realigned_copy(allocator, s.catalog.info(name), buffer->data() + p.stream,
                                     s.device.index, s.catalog.file_of(name).path)) {
        s.realigned.emplace(name, std::move(side));
      }
    }
  }
  s.plan = std::move(plan);
  s.buffer = std::move(buffer);
  s.buffer_base = base;
  s.delivery = delivery;
  s.loaded = true;
  s.stats.bytes_read += bytes_read;
  s.stats.load = read_stats;
  return read_stats;
}

TensorView DistributedLoader::tensor(std::string_view name) {
  State& s = *state_;
  const State::Placed& p = s.find(name);
  const TensorInfo& t = s.catalog.info(name);
  const std::string file = s.catalog.file_of(name).path.string();
  if (s.delivery == Delivery::kAll) {
    if (auto it = s.realigned.find(t.name); it != s.realigned.end()) {
      return make_view(t, it->second->data(), it->second, file);
    }
    return make_view(t, t.nbytes() == 0 ? s.buffer->data() : s.at(p.stream), s.buffer, file);
  }
  auto dest = s.allocator->allocate(std::max<std::uint64_t>(t.nbytes(), 1), 64);
  const int me = s.rank();
  for (int q = 0; q < s.world(); ++q) {
    const auto [lo, hi] = s.held(q, p, t);
    if (lo >= hi) continue;
    std::span<std::byte> part(dest->data() + lo, hi - lo);
    if (q == me) std::memcpy(part.data(), s.at(p.stream + lo), part.size());
    s.collective->broadcast(part, q);
    if (q == me) {
      s.stats.bytes_sent += part.size() * static_cast<std::uint64_t>(s.world() - 1);
    } else {
      s.stats.bytes_received += part.size();
    }
  }
  return make_view(t, dest->data(), dest, file);
}

std::optional<TensorView> DistributedLoader::push(std::string_view name, int dst) {
  State& s = *state_;
  const State::Placed& p = s.find(name);
  const TensorInfo& t = s.catalog.info(name);
  const std::string file = s.catalog.file_of(name).path.string();
  if (dst < 0 || dst >= s.world()) {
    throw std::invalid_argument(file + ": push of tensor '" + detail::printable(t.name) +
                                "' to rank " + std::to_string(dst) + ", not in [0, " +
                                std::to_string(s.world()) + ")");
  }
  const int me = s.rank();
  if (s.delivery == Delivery::kAll) {
    if (me != dst) return std::nullopt;
    return tensor(name);
  }
  std::shared_ptr<Buffer> dest;
  if (me == dst) dest = s.allocator->allocate(std::max<std::uint64_t>(t.nbytes(), 1), 64);
  std::vector<Collective::Transfer> sends;
  std::vector<Collective::Transfer> receives;
  for (int q = 0; q < s.world(); ++q) {
    const auto [lo, hi] = s.held(q, p, t);
    if (lo >= hi) continue;
    if (me == dst && q == me) {
      std::memcpy(dest->data() + lo, s.at(p.stream + lo), hi - lo);
    } else if (me == dst) {
      receives.push_back({q, std::span<std::byte>(dest->data() + lo, hi - lo)});
      s.stats.bytes_received += hi - lo;
    } else if (q == me) {
      sends.push_back({dst, std::span<std::byte>(s.at(p.stream + lo), hi - lo)});
      s.stats.bytes_sent += hi - lo;
    }
  }
  if (!sends.empty() || !receives.empty()) s.collective->exchange(sends, receives);
  if (me != dst) return std::nullopt;
  return make_view(t, dest->data(), dest, file);
}

TensorView DistributedLoader::shard(std::string_view name, int dim) {
  State& s = *state_;
  const State::Placed& p = s.find(name);
  const TensorInfo& t = s.catalog.info(name);
  const std::string file = s.catalog.file_of(name).path.string();
  const int me = s.rank();
  const int world = s.world();
  std::vector<detail::BlockBytes> blocks;
  blocks.reserve(static_cast<std::size_t>(world));
  for (int q = 0; q < world; ++q) blocks.push_back(detail::block_bytes(t, q, world, dim, file));
  const detail::BlockBytes& mine = blocks[static_cast<std::size_t>(me)];

  if (s.delivery == Delivery::kAll) {
    return detail::block_view(tensor(name), mine);
  }

  TensorView v;
  v.name = t.name;
  v.dtype = t.dtype;
  v.shape.assign(t.shape.begin(), t.shape.end());
  v.shape[mine.dim] = mine.end - mine.begin;
  v.strides.assign(v.shape.size(), 1);
  for (std::size_t d = v.shape.size(); d-- > 1;) v.strides[d - 1] = v.strides[d] * v.shape[d];
  auto dest = s.allocator->allocate(std::max<std::uint64_t>(mine.bytes(), 1), 64);
  v.data = dest->data();
  v.nbytes = mine.bytes();
  v.memory = MemoryKind::kHost;
  v.owner = dest;
  if (t.nbytes() == 0) return v;

  // Tensor-relative range [lo, hi) that rank q holds.
  const auto [my_lo, my_hi] = s.held(me, p, t);
  // The part this rank read itself.
  detail::for_each_overlap(mine, my_lo, my_hi,
                           [&](std::uint64_t off, std::uint64_t block_off, std::uint64_t n) {
                             std::memcpy(dest->data() + block_off, s.at(p.stream + off), n);
                           });

  const bool every_block_contiguous = std::all_of(
      blocks.begin(), blocks.end(), [](const detail::BlockBytes& b) { return b.rows <= 1; });
  if (s.distributed.shared_storage && every_block_contiguous) {
    // The direct-read rule (docs/distributed.md): the rest of a one-range block comes from the
    // shared storage, not from the peers; the same decision on every rank, so no collective.
    // The one read path, as for load() (settings, backend), without this load's progress.
    if (!s.direct_reader) {
      LoadOptions o = s.options;
      o.on_progress = nullptr;
      o.cancel = nullptr;
      s.direct_reader = std::make_unique<detail::ReadExecutor>(o, s.catalog.files());
    }
    const TensorLocation where = s.catalog.find(name);
    const std::uint64_t first = s.catalog.files()[where.file].header.data_offset() + t.begin;
    std::uint64_t bytes = 0;
    auto add_range = [&](std::uint64_t lo, std::uint64_t hi) {
      detail::for_each_overlap(
          mine, lo, hi, [&](std::uint64_t off, std::uint64_t block_off, std::uint64_t n) {
            s.direct_reader->add_exact(where.file, first + off, first + off + n,
                                       dest->data() + block_off);
            bytes += n;
          });
    };
    try {
      add_range(0, my_lo);  // a rank that holds nothing has my_lo == my_hi == 0
      add_range(my_hi, t.nbytes());
    } catch (...) {
      s.direct_reader->discard();
      throw;
    }
    if (bytes > 0) (void)s.direct_reader->run(bytes);
    s.stats.direct_bytes += bytes;
    return v;
  }

  // Packs for one peer: one range goes as is; several are packed into a temporary.
  struct Pending {
    int peer;
    std::vector<std::byte> packed;
    std::vector<std::array<std::uint64_t, 3>> ranges;  // tensor offset, block offset, length
  };
  std::vector<Pending> outgoing;
  std::vector<Pending> incoming;
  std::vector<Collective::Transfer> sends;
  std::vector<Collective::Transfer> receives;
  for (int q = 0; q < world; ++q) {
    if (q == me) continue;
    Pending out{q, {}, {}};
    detail::for_each_overlap(blocks[static_cast<std::size_t>(q)], my_lo, my_hi,
                             [&](std::uint64_t off, std::uint64_t block_off, std::uint64_t n) {
                               out.ranges.push_back({off, block_off, n});
                             });
    if (!out.ranges.empty()) outgoing.push_back(std::move(out));
    const auto [lo, hi] = s.held(q, p, t);
    Pending in{q, {}, {}};
    detail::for_each_overlap(mine, lo, hi,
                             [&](std::uint64_t off, std::uint64_t block_off, std::uint64_t n) {
                               in.ranges.push_back({off, block_off, n});
                             });
    if (!in.ranges.empty()) incoming.push_back(std::move(in));
  }
  for (Pending& out : outgoing) {
    std::uint64_t total = 0;
    for (const auto& r : out.ranges) total += r[2];
    if (out.ranges.size() == 1) {
      sends.push_back({out.peer, std::span<std::byte>(s.at(p.stream + out.ranges[0][0]), total)});
    } else {
      out.packed.resize(total);
      std::uint64_t at = 0;
      for (const auto& r : out.ranges) {
        std::memcpy(out.packed.data() + at, s.at(p.stream + r[0]), r[2]);
        at += r[2];
      }
      sends.push_back({out.peer, std::span<std::byte>(out.packed)});
    }
    s.stats.bytes_sent += total;
  }
  for (Pending& in : incoming) {
    std::uint64_t total = 0;
    for (const auto& r : in.ranges) total += r[2];
    if (in.ranges.size() == 1) {
      receives.push_back({in.peer, std::span<std::byte>(dest->data() + in.ranges[0][1], total)});
    } else {
      in.packed.resize(total);
      receives.push_back({in.peer, std::span<std::byte>(in.packed)});
    }
    s.stats.bytes_received += total;
  }
  if (!sends.empty() || !receives.empty()) s.collective->exchange(sends, receives);
  for (const Pending& in : incoming) {
    if (in.ranges.size() == 1) continue;
    std::uint64_t at = 0;
    for (const auto& r : in.ranges) {
      std::memcpy(dest->data() + r[1], in.packed.data() + at, r[2]);
      at += r[2];
    }
  }
  return v;
}

void DistributedLoader::release() noexcept {
  State& s = *state_;
  s.buffer.reset();
  s.placed.clear();
  s.realigned.clear();
  s.loaded = false;
}

}  // namespace warpload
