// Multi-rank loading (warpload/distributed.hpp): the byte plan, shard geometry, and the
// DistributedLoader over ThreadCollective (ranks are threads of this process). Expected bytes
// come from the test's own random data and a single-process Loader.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <numeric>
#include <thread>
#include <vector>

#include "core/rank_plan.hpp"
#include "device/cuda_shim.hpp"
#include "device/nccl_shim.hpp"
#include "support/fault_storage.hpp"
#include "support/random_checkpoint.hpp"
#include "support/sanitizers.hpp"
#include "support/temp_dir.hpp"
#include "support/thread_collective.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

// memcmp of n bytes; n == 0 is equal whatever the pointers (an empty vector's data() may be null).
bool same_bytes(const void* a, const void* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n) == 0;
}

namespace fs = std::filesystem;
using testing::TempDir;
using testing::TensorSpec;

struct Checkpoint {
  std::vector<fs::path> files;
  testing::TensorBytes bytes;
};

// Three files: uneven shapes, a 0-d and an empty tensor, a sub-byte dtype, and a middle file
// larger than the other two together. `header_alignment` 1 gives odd data offsets.
Checkpoint write_checkpoint(const TempDir& dir, std::size_t header_alignment = 8) {
  Checkpoint c;
  const std::vector<std::vector<TensorSpec>> files = {
      {{"a.w", DType::kBF16, {37, 19}},
       {"a.scalar", DType::kF32, {}},
       {"a.empty", DType::kU8, {0, 5}},
       {"a.i64", DType::kI64, {5}},
       {"a.f4", DType::kF4, {4, 6}},
       {"a.wide", DType::kBF16, {3, 1000}}},
      {{"b.big", DType::kU8, {300000}}, {"b.f32", DType::kF32, {123, 77}}},
      {{"c.h", DType::kF16, {7, 3}}},
  };
  for (std::size_t f = 0; f < files.size(); ++f) {
    const fs::path path = dir / ("model-0000" + std::to_string(f) + ".safetensors");
    testing::write_random_file(path, files[f], static_cast<std::uint32_t>(f + 11), c.bytes,
                               header_alignment);
    c.files.push_back(path);
  }
  return c;
}

using testing::run_ranks;

void expect_no_errors(const std::vector<std::exception_ptr>& errors) {
  for (std::size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank " << r << ": " << e.what();
    }
  }
}

// Bytes of a (possibly strided) view, in row-major order of its shape.
std::vector<std::byte> gather_bytes(const TensorView& v) {
  const std::uint32_t bits = dtype_bits(v.dtype);
  if (v.contiguous || bits % 8 != 0) {
    return {v.data, v.data + v.nbytes};
  }
  const std::size_t elem = bits / 8;
  std::vector<std::byte> out;
  std::vector<std::int64_t> index(v.shape.size(), 0);
  const std::uint64_t n = v.numel();
  for (std::uint64_t i = 0; i < n; ++i) {
    std::int64_t off = 0;
    for (std::size_t d = 0; d < index.size(); ++d) off += index[d] * v.strides[d];
    out.insert(out.end(), v.data + off * static_cast<std::int64_t>(elem),
               v.data + (off + 1) * static_cast<std::int64_t>(elem));
    for (std::size_t d = index.size(); d-- > 0;) {
      if (++index[d] < v.shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

Loader single_load(const Checkpoint& c) {
  LoadOptions o;
  o.backend = "posix";
  o.use_config = false;
  Loader l(o);
  for (const auto& f : c.files) l.add(f);
  (void)l.load();
  return l;
}

LoadOptions posix_options() {
  LoadOptions o;
  o.backend = "posix";
  o.use_config = false;
  o.storage.threads = 2;
  return o;
}

// ---- the plan ----------------------------------------------------------------------------

TEST(PlanRanks, EveryByteOnceBalancedAndAligned) {
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  Loader catalog;
  for (const auto& f : c.files) catalog.add(f);
  std::vector<Segment> segments;
  for (std::size_t f = 0; f < catalog.files().size(); ++f) {
    segments.push_back({f, 0, catalog.files()[f].header.tensors.size()});
  }
  for (int world : {1, 2, 3, 4, 5, 8}) {
    SCOPED_TRACE(world);
    const RankPlan plan = plan_ranks(catalog.files(), segments, world, 4096);
    EXPECT_EQ(plan.data_bytes, catalog.total_bytes());
    // Coverage: per file, the union of every rank's reads is the data section, no overlap.
    std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> per_file(c.files.size());
    std::uint64_t sum = 0;
    for (int r = 0; r < world; ++r) {
      for (const RankRead& rr : plan.reads[static_cast<std::size_t>(r)]) {
        per_file[plan.segments[rr.segment].file].push_back({rr.begin, rr.end});
        const std::uint64_t data_offset =
            catalog.files()[plan.segments[rr.segment].file].header.data_offset();
        // A cut inside a data section is an aligned file offset.
        if (rr.begin != plan.data_begin[rr.segment]) {
          EXPECT_EQ((data_offset + rr.begin) % 4096, 0u);
        }
        if (rr.end != plan.data_end[rr.segment]) {
          EXPECT_EQ((data_offset + rr.end) % 4096, 0u);
        }
      }
      sum += plan.rank_bytes(r);
      // Balance: no rank reads more than its share plus one granule per segment boundary.
      EXPECT_LE(plan.rank_bytes(r),
                plan.data_bytes / static_cast<std::uint64_t>(world) + 4096 * (segments.size() + 1));
    }
    EXPECT_EQ(sum, catalog.total_bytes());
    for (std::size_t f = 0; f < per_file.size(); ++f) {
      auto& ranges = per_file[f];
      std::sort(ranges.begin(), ranges.end());
      std::uint64_t at = 0;
      for (const auto& [b, e] : ranges) {
        EXPECT_EQ(b, at);
        at = e;
      }
      EXPECT_EQ(at, catalog.files()[f].header.data_size());
    }
  }
  EXPECT_THROW((void)plan_ranks(catalog.files(), segments, 0), std::invalid_argument);
  EXPECT_THROW((void)plan_ranks(catalog.files(), segments, 2, 3000), std::invalid_argument);
}

TEST(PlanRanks, BlockGeometryMatchesBruteForce) {
  TensorInfo t;
  t.name = "w";
  t.dtype = DType::kF32;
  t.shape = {5, 7, 3};
  t.begin = 0;
  t.end = 5 * 7 * 3 * 4;
  for (int world : {1, 2, 3, 4, 8}) {
    for (int dim : {0, 1, 2, -1}) {
      std::vector<bool> seen(t.nbytes(), false);
      for (int q = 0; q < world; ++q) {
        const auto b = detail::block_bytes(t, q, world, dim, "f");
        std::vector<std::uint64_t> offsets;
        detail::for_each_overlap(b, 0, t.nbytes(),
                                 [&](std::uint64_t off, std::uint64_t block_off, std::uint64_t n) {
                                   EXPECT_EQ(block_off, offsets.size());
                                   for (std::uint64_t i = 0; i < n; ++i) offsets.push_back(off + i);
                                 });
        EXPECT_EQ(offsets.size(), b.bytes());
        // Brute force: element (i, j, k) is in q's block when its index along dim is.
        const std::size_t d = static_cast<std::size_t>(dim < 0 ? dim + 3 : dim);
        std::vector<std::uint64_t> expected;
        for (std::uint64_t i = 0; i < 5; ++i)
          for (std::uint64_t j = 0; j < 7; ++j)
            for (std::uint64_t k = 0; k < 3; ++k) {
              const std::uint64_t idx[3] = {i, j, k};
              const auto x = static_cast<std::int64_t>(idx[d]);
              if (x < b.begin || x >= b.end) continue;
              const std::uint64_t e = (i * 7 + j) * 3 + k;
              for (int y = 0; y < 4; ++y) expected.push_back(e * 4 + static_cast<std::uint64_t>(y));
            }
        EXPECT_EQ(offsets, expected) << "world " << world << " dim " << dim << " rank " << q;
        for (auto o : offsets) {
          EXPECT_FALSE(seen[o]);
          seen[o] = true;
        }
        // A window of the tensor sees exactly the block's bytes inside it.
        std::vector<std::uint64_t> window;
        detail::for_each_overlap(b, 50, 200,
                                 [&](std::uint64_t off, std::uint64_t, std::uint64_t n) {
                                   for (std::uint64_t i = 0; i < n; ++i) window.push_back(off + i);
                                 });
        std::vector<std::uint64_t> expected_window;
        for (auto o : expected) {
          if (o >= 50 && o < 200) expected_window.push_back(o);
        }
        EXPECT_EQ(window, expected_window);
      }
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](bool s) { return s; }));
    }
  }
}

// ---- the loader --------------------------------------------------------------------------

class DistributedLoad : public ::testing::TestWithParam<int> {};

TEST_P(DistributedLoad, AllDeliveryEqualsSingleLoad) {
  const int world = GetParam();
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  Loader reference = single_load(c);
  std::vector<std::uint64_t> read(static_cast<std::size_t>(world));
  auto errors = run_ranks(world, std::chrono::seconds(20), [&](int r, auto collective) {
    DistributedOptions d;
    d.round_bytes = 8192;  // several all-gather rounds
    DistributedLoader loader(collective, posix_options(), d);
    for (const auto& f : c.files) loader.add(f);
    (void)loader.load(Delivery::kAll);
    read[static_cast<std::size_t>(r)] = loader.stats().bytes_read;
    for (const auto& [name, expected] : c.bytes) {
      const TensorView v = loader.tensor(name);
      ASSERT_EQ(v.nbytes, expected.size()) << name;
      EXPECT_TRUE(same_bytes(v.data, expected.data(), expected.size())) << name;
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u);
      const TensorInfo& info = loader.info(name);
      if (info.shape.empty() || info.dtype == DType::kF4) continue;
      for (int dim = 0; dim < static_cast<int>(info.shape.size()); ++dim) {
        const TensorView got = loader.shard(name, dim);
        const TensorView want = reference.shard(name, r, world, dim);
        EXPECT_EQ(got.shape, want.shape) << name;
        EXPECT_EQ(gather_bytes(got), gather_bytes(want)) << name << " dim " << dim;
      }
    }
  });
  expect_no_errors(errors);
  // Each byte read once: the ranks' own counters add up to the checkpoint's data bytes.
  EXPECT_EQ(std::accumulate(read.begin(), read.end(), std::uint64_t{0}), reference.total_bytes());
}

TEST_P(DistributedLoad, OnRequestMovesOnlyWhatEachRankAsks) {
  const int world = GetParam();
  for (bool shared : {false, true}) {
    SCOPED_TRACE(shared ? "shared storage" : "exchange");
    TempDir dir;
    const Checkpoint c = write_checkpoint(dir, shared ? 8 : 1);  // odd data offsets too
    Loader reference = single_load(c);
    std::vector<DistributedStats> stats(static_cast<std::size_t>(world));
    auto errors = run_ranks(world, std::chrono::seconds(20), [&](int r, auto collective) {
      DistributedOptions d;
      d.shared_storage = shared;
      DistributedLoader loader(collective, posix_options(), d);
      for (const auto& f : c.files) loader.add(f);
      (void)loader.load(Delivery::kOnRequest);
      for (const auto& [name, expected] : c.bytes) {
        const TensorView v = loader.tensor(name);
        ASSERT_EQ(v.nbytes, expected.size()) << name;
        EXPECT_TRUE(same_bytes(v.data, expected.data(), expected.size())) << name;
        const TensorInfo& info = loader.info(name);
        for (int dim = 0; dim < static_cast<int>(info.shape.size()); ++dim) {
          if (info.dtype == DType::kF4 && dim != 0) continue;
          const TensorView got = loader.shard(name, dim);
          const TensorView want = reference.shard(name, r, world, dim);
          EXPECT_EQ(got.shape, want.shape) << name;
          EXPECT_TRUE(got.contiguous);
          EXPECT_EQ(gather_bytes(got), gather_bytes(want)) << name << " dim " << dim;
        }
        const int dst = world - 1;
        const auto pushed = loader.push(name, dst);
        ASSERT_EQ(pushed.has_value(), r == dst);
        if (pushed) {
          EXPECT_TRUE(same_bytes(pushed->data, expected.data(), expected.size()));
        }
      }
      stats[static_cast<std::size_t>(r)] = loader.stats();
    });
    expect_no_errors(errors);
    std::uint64_t read = 0;
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    for (const auto& s : stats) {
      read += s.bytes_read;
      sent += s.bytes_sent;
      received += s.bytes_received;
    }
    EXPECT_EQ(read, reference.total_bytes());
    if (world == 1) {
      EXPECT_EQ(received + sent, 0u);
    }
    if (world > 1) {
      EXPECT_GT(received, 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, DistributedLoad, ::testing::Values(1, 2, 3, 4, 5));

TEST(DistributedLoader, ShardMovesOnlyTheBlock) {
  // One tensor, world 4, kOnRequest: what a rank receives for its dim-1 block is at most the
  // block itself (never the whole tensor).
  TempDir dir;
  testing::TensorBytes bytes;
  const fs::path path = dir / "m.safetensors";
  testing::write_random_file(path, {{"w", DType::kF32, {64, 1024}}}, 3, bytes);
  const int world = 4;
  std::vector<DistributedStats> stats(world);
  auto errors = run_ranks(world, std::chrono::seconds(20), [&](int r, auto collective) {
    DistributedLoader loader(collective, posix_options());
    loader.add(path);
    (void)loader.load(Delivery::kOnRequest);
    const auto before = loader.stats().bytes_received;
    const TensorView v = loader.shard("w", 1);
    EXPECT_EQ(v.nbytes, 64u * 256 * 4);
    EXPECT_LE(loader.stats().bytes_received - before, v.nbytes);
    stats[static_cast<std::size_t>(r)] = loader.stats();
  });
  expect_no_errors(errors);
  std::uint64_t received = 0;
  for (const auto& s : stats) received += s.bytes_received;
  // Each rank already read about a quarter of its block (its slot is about a quarter of the
  // rows): about 3/4 of the tensor moves in all, never a whole tensor to anyone.
  EXPECT_GT(received, 64u * 1024 * 4 * 70 / 100);
  EXPECT_LT(received, 64u * 1024 * 4 * 80 / 100);
}

TEST(DistributedLoader, IoErrorOnOneRankFailsEveryRank) {
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  const int world = 3;
  auto errors = run_ranks(world, std::chrono::seconds(20), [&](int r, auto collective) {
    LoadOptions o = posix_options();
    if (r == 1) {
      // Rank 1 reads the middle of the big file; every read covering this offset fails.
      o.custom_storage = std::make_shared<testing::FaultInjectingStorage>(
          make_storage("posix"), testing::FaultPlan{testing::Fault::kIoError, 150000});
    }
    DistributedLoader loader(collective, o);
    for (const auto& f : c.files) loader.add(f);
    (void)loader.load(Delivery::kAll);
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(errors[static_cast<std::size_t>(r)]) << "rank " << r << " did not fail";
    try {
      std::rethrow_exception(errors[static_cast<std::size_t>(r)]);
    } catch (const IoError& e) {
      EXPECT_EQ(e.error_number(), EIO);
      const std::string what = e.what();
      EXPECT_NE(what.find("model-00001.safetensors"), std::string::npos) << what;
      if (r != 1) {
        EXPECT_NE(what.find("rank 1 of 3"), std::string::npos) << what;
      }
    }
  }
}

TEST(DistributedLoader, AddFailureOnOneRankFailsEveryRank) {
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  const fs::path broken = dir / "broken.safetensors";
  { std::ofstream(broken) << "not a safetensors file at all"; }
  const int world = 2;
  auto errors = run_ranks(world, std::chrono::seconds(20), [&](int r, auto collective) {
    DistributedLoader loader(collective, posix_options());
    try {
      for (const auto& f : c.files) loader.add(f);
      if (r == 0) loader.add(broken);  // rank 0's copy of the checkpoint is malformed
    } catch (const std::exception& e) {
      loader.fail(e);
      throw;
    }
    (void)loader.load(Delivery::kAll);
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_TRUE(errors[static_cast<std::size_t>(r)]);
    try {
      std::rethrow_exception(errors[static_cast<std::size_t>(r)]);
    } catch (const InvalidFileError& e) {
      EXPECT_NE(std::string(e.what()).find("broken.safetensors"), std::string::npos);
    }
  }
}

TEST(DistributedLoader, DifferentPlansAreRefused) {
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  auto errors = run_ranks(2, std::chrono::seconds(20), [&](int r, auto collective) {
    DistributedLoader loader(collective, posix_options());
    for (std::size_t f = 0; f < c.files.size() - static_cast<std::size_t>(r); ++f) {
      loader.add(c.files[f]);
    }
    (void)loader.load(Delivery::kAll);
  });
  for (const auto& e : errors) {
    ASSERT_TRUE(e);
    EXPECT_THROW(std::rethrow_exception(e), std::invalid_argument);
  }
}

TEST(DistributedLoader, MissingPeerTimesOut) {
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  const auto start = std::chrono::steady_clock::now();
  auto errors = run_ranks(3, std::chrono::milliseconds(500), [&](int r, auto collective) {
    if (r == 2) return;  // never arrives
    DistributedLoader loader(collective, posix_options());
    for (const auto& f : c.files) loader.add(f);
    (void)loader.load(Delivery::kAll);
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  // The first rank to give up reports the timeout; the group is then broken for the other.
  int timed_out = 0;
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(errors[static_cast<std::size_t>(r)]);
    try {
      std::rethrow_exception(errors[static_cast<std::size_t>(r)]);
    } catch (const CollectiveError& e) {
      if (e.error_number() == ETIMEDOUT) {
        ++timed_out;
        EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos);
      }
    }
  }
  EXPECT_GE(timed_out, 1);
}

// A sparse file of `bytes` of U8: reads cost syscalls, not disk.
fs::path write_sparse_checkpoint(const TempDir& dir, std::uint64_t bytes) {
  std::string header = "{\"t\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(bytes) +
                       "],\"data_offsets\":[0," + std::to_string(bytes) + "]}}";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  const fs::path path = dir / "sparse.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
  }
  fs::resize_file(path, 8 + header.size() + bytes);
  return path;
}

// Reads that each take at least `delay`: a rank reading through it cannot finish its share
// before the test cancels it, however fast the machine reads holes.
class SlowFile final : public StorageFile {
 public:
  SlowFile(std::unique_ptr<StorageFile> inner, std::chrono::microseconds delay)
      : StorageFile(inner->path(), -1, inner->size(), inner->alignment()),
        inner_(std::move(inner)),
        delay_(delay) {}
  [[nodiscard]] int fd() const noexcept override { return -1; }
  [[nodiscard]] std::int64_t read_some(std::byte* dest, std::size_t size,
                                       std::uint64_t offset) noexcept override {
    std::this_thread::sleep_for(delay_);
    return inner_->read_some(dest, size, offset);
  }

 private:
  std::unique_ptr<StorageFile> inner_;
  std::chrono::microseconds delay_;
};

class SlowStorage final : public StorageWrapper {
 public:
  SlowStorage(std::unique_ptr<Storage> target, std::chrono::microseconds delay)
      : StorageWrapper(std::move(target)), delay_(delay) {}
  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    return std::make_unique<SlowFile>(target().open(path), delay_);
  }

 private:
  std::chrono::microseconds delay_;
};

// Ctrl-C on one rank (LoadOptions::cancel) stops its reads; the error agreement then fails
// every rank, promptly and naming the cancelled rank.
TEST(DistributedLoader, CancelOnOneRankFailsEveryRank) {
  TempDir dir;
  const fs::path file = write_sparse_checkpoint(dir, std::uint64_t{1} << 30);
  std::atomic<bool> cancel{false};
  std::vector<std::string> messages(2);
  std::vector<int> cancelled(2, 0);  // not vector<bool>: its bits share a word across ranks
  const auto start = std::chrono::steady_clock::now();
  std::thread timer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    cancel.store(true);
  });
  auto errors = run_ranks(2, std::chrono::seconds(30), [&](int r, auto collective) {
    LoadOptions o = posix_options();
    o.storage.threads = 1;
    o.storage.block_size = 4096;  // 512 MiB of 4 KiB preads per rank: 0.2-3 s
    if (r == 0) {
      // Rank 0 needs over 6 s for its share (50 us a read), so the cancel at 200 ms always
      // finds it reading; rank 1 reads at full speed.
      o.cancel = &cancel;
      o.custom_storage = std::make_shared<SlowStorage>(make_storage("posix", o.storage),
                                                       std::chrono::microseconds(50));
    }
    DistributedLoader loader(collective, o);
    loader.add(file);
    try {
      (void)loader.load(Delivery::kAll);
    } catch (const CancelledError& e) {
      cancelled[static_cast<std::size_t>(r)] = 1;
      messages[static_cast<std::size_t>(r)] = e.what();
    }
  });
  timer.join();
  expect_no_errors(errors);
  EXPECT_TRUE(cancelled[0]) << messages[0];
  EXPECT_TRUE(cancelled[1]) << messages[1];
  EXPECT_NE(messages[1].find("rank 0 of 2"), std::string::npos) << messages[1];
  // Rank 1 reads its whole 512 MiB before the agreement tells it: 0.2-3 s in Release. Under a
  // sanitizer every pread is several times slower (3-17 s seen under TSan on 2 cores), so the
  // bound there only says "well before the collective's 30 s timeout".
#ifdef WARPLOAD_TEST_SANITIZED
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(25));
#else
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
#endif
}

TEST(DistributedLoader, MisuseIsReported) {
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  auto errors = run_ranks(1, std::chrono::seconds(5), [&](int, auto collective) {
    DistributedLoader loader(collective, posix_options());
    loader.add(c.files[0]);
    EXPECT_THROW((void)loader.tensor("a.w"), UnsupportedError);  // before load()
    EXPECT_THROW((void)loader.tensor("nope"), NotFoundError);
    (void)loader.load(Delivery::kOnRequest);
    EXPECT_THROW((void)loader.load(Delivery::kOnRequest), UnsupportedError);
    EXPECT_THROW((void)loader.shard("a.scalar", 0), std::invalid_argument);
    EXPECT_THROW((void)loader.push("a.w", 3), std::invalid_argument);
    loader.release();
    (void)loader.load(Delivery::kAll);  // loads again after release()
    EXPECT_EQ(loader.tensor("a.w").nbytes, 37u * 19 * 2);
  });
  expect_no_errors(errors);
}

// ---- NCCL --------------------------------------------------------------------------------

TEST(Nccl, MissingLibraryIsUnsupportedNamingIt) {
  try {
    (void)detail::load_nccl_api("/nonexistent/libnccl.so.2");
    FAIL() << "loaded a library that does not exist";
  } catch (const UnsupportedError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("/nonexistent/libnccl.so.2"), std::string::npos) << what;
    EXPECT_NE(what.find("WARPLOAD_NCCL_LIB"), std::string::npos) << what;
  }
  // A library without NCCL's symbols names the first missing one.
  try {
    (void)detail::load_nccl_api("libc.so.6");
    FAIL() << "libc passed for NCCL";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("ncclGetVersion"), std::string::npos) << e.what();
  }
}

// On a GPU machine (tests/gpu/run.sh sets WARPLOAD_GPU_REAL=1): a one-rank NCCL communicator
// all-gathers and broadcasts a tensor loaded to cuda:0, then a DistributedLoader loads the
// checkpoint to cuda:0 over it; the bytes must equal a host load's.
TEST(Nccl, SingleRankCollectiveMovesALoadedTensor) {
  const char* real = std::getenv("WARPLOAD_GPU_REAL");
  if (real == nullptr || std::string(real) != "1") {
    GTEST_SKIP() << "needs a GPU and NCCL (tests/gpu/run.sh sets WARPLOAD_GPU_REAL=1)";
  }
  if (!nccl_available()) GTEST_SKIP() << "libnccl.so.2 not found (set WARPLOAD_NCCL_LIB)";
  TempDir dir;
  const Checkpoint c = write_checkpoint(dir);
  Loader host = single_load(c);
  LoadOptions o = posix_options();
  o.device = "cuda:0";
  Loader device(o);
  for (const auto& f : c.files) device.add(f);
  (void)device.load();
  auto comm = make_nccl_collective(nccl_unique_id(), 0, 1, 0, 60000);
  EXPECT_EQ(comm->memory(), MemoryKind::kDevice);
  auto allocator = make_cuda_allocator(Device::parse("cuda:0"));
  const TensorView v = device.tensor("b.f32");
  auto out = allocator->allocate(v.nbytes, 256);
  const std::span<std::byte> slot(out->data(), v.nbytes);
  comm->all_gather(std::span<const std::byte>(v.data, v.nbytes),
                   std::span<const std::span<std::byte>>(&slot, 1));
  comm->broadcast(slot, 0);
  std::vector<std::byte> back(v.nbytes);
  detail::copy_to_host(back.data(), out->data(), back.size(), 0);
  const TensorView want = host.tensor("b.f32");
  EXPECT_TRUE(same_bytes(back.data(), want.data, want.nbytes));
  EXPECT_EQ(comm->all_gather_status("ok"), std::vector<std::string>{"ok"});

  // The DistributedLoader over NCCL: reads staged into device memory, all-gather on the device.
  LoadOptions on_device = posix_options();
  on_device.device = "cuda:0";
  DistributedLoader loader(comm, on_device);
  for (const auto& f : c.files) loader.add(f);
  EXPECT_EQ(loader.load(Delivery::kAll).device, "cuda:0");
  for (const auto& [name, expected] : c.bytes) {
    const TensorView got = loader.tensor(name);
    EXPECT_EQ(got.memory, MemoryKind::kDevice) << name;
    std::vector<std::byte> bytes(got.nbytes);
    if (!bytes.empty()) detail::copy_to_host(bytes.data(), got.data, bytes.size(), 0);
    EXPECT_EQ(bytes, expected) << name;
  }
}

// On a GPU machine: rank 0 of a world of 2 whose rank 1 never comes must not wait forever in
// ncclCommInitRank; the call gives up at the timeout and says why.
TEST(Nccl, MissingRankAtInitTimesOut) {
  const char* real = std::getenv("WARPLOAD_GPU_REAL");
  if (real == nullptr || std::string(real) != "1") {
    GTEST_SKIP() << "needs a GPU and NCCL (tests/gpu/run.sh sets WARPLOAD_GPU_REAL=1)";
  }
  if (!nccl_available()) GTEST_SKIP() << "libnccl.so.2 not found (set WARPLOAD_NCCL_LIB)";
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)make_nccl_collective(nccl_unique_id(), 0, 2, 0, 2000);
    FAIL() << "joined a communicator whose other rank never came";
  } catch (const CollectiveError& e) {
    EXPECT_NE(std::string(e.what()).find("not every rank joined"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace warpload
