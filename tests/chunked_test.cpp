// ChunkedReader (warpload/chunked.hpp): the bounded-memory engine under Python's
// iterate_weights and `warpload load --memory-limit`. Bytes are compared with what the test
// wrote (support/random_checkpoint.hpp) and the independent reader; the bound is measured with
// host_bytes_in_use(), the engine's own count of live host buffers.

#include "warpload/chunked.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/fault_storage.hpp"
#include "support/random_checkpoint.hpp"
#include "support/reference_reader.hpp"
#include "support/temp_dir.hpp"
#include "warpload/error.hpp"
#include "warpload/memory.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr std::uint64_t kKiB = 1024;

LoadOptions posix_options() {
  LoadOptions o;
  o.backend = "posix";
  o.use_config = false;
  return o;
}

// Three files: aligned, unpadded (odd data offsets: tensors that must be realigned), and one
// without tensors.
std::shared_ptr<CheckpointPlan> write_checkpoint(const TempDir& dir, testing::TensorBytes& bytes) {
  testing::write_random_file(dir / "a.safetensors",
                             {{"a.big", DType::kF32, {64, 1000}},
                              {"a.small", DType::kBF16, {3, 5}},
                              {"a.empty", DType::kF32, {0, 7}},
                              {"a.mid", DType::kI64, {4000}}},
                             1, bytes, 8);
  testing::write_random_file(dir / "b.safetensors",
                             {{"b.u8", DType::kU8, {77}},
                              {"b.f64", DType::kF64, {9000}},
                              {"b.f16", DType::kF16, {11, 13}}},
                             2, bytes, 1);
  testing::write_random_file(dir / "c.safetensors", {}, 3, bytes, 8);
  auto plan = std::make_shared<CheckpointPlan>();
  plan->add(dir / "a.safetensors");
  plan->add(dir / "b.safetensors");
  plan->add(dir / "c.safetensors");
  return plan;
}

TEST(PlanChunks, ConsecutiveTensorsWithinTheBudgetALargerOneAlone) {
  TempDir dir;
  testing::TensorBytes bytes;
  const auto plan = write_checkpoint(dir, bytes);
  // budget 0: a chunk per file that has tensors.
  const auto per_file = plan_chunks(plan->files(), 0);
  ASSERT_EQ(per_file.size(), 2u);
  EXPECT_EQ(per_file[0].bytes + per_file[1].bytes, plan->total_bytes());
  for (const std::uint64_t budget : {std::uint64_t{1}, 100 * kKiB, 300 * kKiB, 10 * kKiB * kKiB}) {
    SCOPED_TRACE(budget);
    const auto chunks = plan_chunks(plan->files(), budget);
    std::vector<std::string> names;
    std::uint64_t total = 0;
    for (const ChunkPlan& c : chunks) {
      std::uint64_t sum = 0;
      std::uint64_t largest = 0;
      for (const TensorSpan& s : c.spans) {
        ASSERT_LT(s.first, s.last);
        for (std::size_t t = s.first; t < s.last; ++t) {
          const TensorInfo& info = plan->files()[s.file].header.tensors[t];
          names.push_back(info.name);
          sum += info.nbytes();
          largest = std::max(largest, info.nbytes());
        }
      }
      EXPECT_EQ(sum, c.bytes);
      EXPECT_TRUE(c.bytes <= budget || largest == c.bytes) << "only a lone tensor may exceed";
      total += c.bytes;
    }
    EXPECT_EQ(total, plan->total_bytes());
    EXPECT_EQ(names, plan->keys());  // every tensor once, in plan order
  }
  EXPECT_EQ(chunk_budget(0, 3), 0u);
  EXPECT_EQ(chunk_budget(900, 3), 300u);
  EXPECT_EQ(chunk_budget(2, 3), 1u);
}

TEST(ChunkedReader, EveryTensorByteExactInPlanOrder) {
  TempDir dir;
  testing::TensorBytes bytes;
  const auto plan = write_checkpoint(dir, bytes);
  for (const std::string backend : {"posix", "uring", "mmap", "auto"}) {
    for (const std::uint64_t limit :
         {std::uint64_t{0}, std::uint64_t{1}, 200 * kKiB, 4096 * kKiB}) {
      for (const bool prefetch : {true, false}) {
        SCOPED_TRACE(backend + " limit " + std::to_string(limit) + (prefetch ? " prefetch" : ""));
        LoadOptions o = posix_options();
        o.backend = backend;
        ChunkedReader reader(plan, o, ChunkOptions{limit, prefetch});
        std::vector<std::string> names;
        while (auto chunk = reader.next()) {
          for (const TensorView& v : *chunk) {
            names.push_back(v.name);
            const auto& expected = bytes.at(v.name);
            ASSERT_EQ(v.nbytes, expected.size()) << v.name;
            EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u)
                << v.name;
            EXPECT_TRUE(expected.empty() || std::memcmp(v.data, expected.data(), v.nbytes) == 0)
                << v.name;
          }
        }
        EXPECT_EQ(names, plan->keys());
        EXPECT_FALSE(reader.next().has_value());
        EXPECT_EQ(reader.stats().bytes, plan->total_bytes());
        EXPECT_EQ(reader.stats().backend, backend);
      }
    }
  }
}

// The bound: loaded bytes held by the reader never exceed memory_limit plus one tensor larger
// than a chunk, while the caller holds each tensor until it takes the next one.
TEST(ChunkedReader, HostMemoryStaysWithinTheLimit) {
  TempDir dir;
  testing::TensorBytes bytes;
  std::vector<testing::TensorSpec> specs;
  for (int i = 0; i < 24; ++i) {
    specs.push_back({"t" + std::to_string(i), DType::kU8, {(i % 5 + 1) * 100 * kKiB}});
  }
  testing::write_random_file(dir / "m.safetensors", specs, 4, bytes, 8);
  auto plan = std::make_shared<CheckpointPlan>();
  plan->add(dir / "m.safetensors");
  const std::uint64_t largest = 500 * kKiB;
  for (const bool prefetch : {true, false}) {
    const std::uint64_t limit = 1200 * kKiB;
    const std::uint64_t base = host_bytes_in_use();
    std::uint64_t peak = 0;
    {
      ChunkedReader reader(plan, posix_options(), ChunkOptions{limit, prefetch});
      std::size_t chunks = 0;
      TensorView held;  // the caller's last tensor pins its chunk
      while (auto chunk = reader.next()) {
        ++chunks;
        for (TensorView& v : *chunk) {
          held = std::move(v);
          // Let a read ahead finish, so that its buffers count too.
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
          peak = std::max(peak, host_bytes_in_use() - base);
        }
        chunk.reset();
      }
      EXPECT_GT(chunks, 3u);
    }
    EXPECT_EQ(host_bytes_in_use(), base) << "every buffer freed with the last view";
    // Buffers are whole pages: allow one page per range on top of the tensor bytes.
    EXPECT_LE(peak, limit + largest + 8 * 4096) << (prefetch ? "prefetch" : "no prefetch");
    EXPECT_GT(peak, 0u);
  }
}

TEST(ChunkedReader, ProgressCountsOverTheWholeReader) {
  TempDir dir;
  testing::TensorBytes bytes;
  const auto plan = write_checkpoint(dir, bytes);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  std::mutex mutex;
  LoadOptions o = posix_options();
  o.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    const std::lock_guard lock(mutex);
    calls.emplace_back(done, total);
  };
  ChunkedReader reader(plan, o, ChunkOptions{200 * kKiB, true});
  while (reader.next()) {
  }
  const std::lock_guard lock(mutex);
  ASSERT_FALSE(calls.empty());
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, plan->total_bytes());
    EXPECT_LE(calls[i].first, plan->total_bytes());
    if (i > 0) EXPECT_GE(calls[i].first, calls[i - 1].first) << "monotonic";
  }
  EXPECT_EQ(calls.back().first, plan->total_bytes());
}

// A read error in a chunk (read ahead or not) surfaces at the next() that wanted the chunk,
// naming the file and the offset; nothing of that chunk is handed out.
TEST(ChunkedReader, ReadErrorsNameTheFileAndHandOutNothing) {
  TempDir dir;
  testing::TensorBytes bytes;
  const auto plan = write_checkpoint(dir, bytes);
  // In a.mid, past the end of b.safetensors (the fault hits every file at that offset).
  const PlannedFile& a = plan->files()[0];
  const std::uint64_t bad = a.header.data_offset() + a.header.tensors[3].begin + 100;
  ASSERT_GT(bad, plan->files()[1].header.file_size);
  for (const bool prefetch : {true, false}) {
    SCOPED_TRACE(prefetch ? "prefetch" : "no prefetch");
    LoadOptions o = posix_options();
    o.custom_storage = std::make_shared<testing::FaultInjectingStorage>(
        make_storage("posix"), testing::FaultPlan{testing::Fault::kIoError, bad});
    const std::uint64_t base = host_bytes_in_use();
    {
      ChunkedReader reader(plan, o, ChunkOptions{200 * kKiB, prefetch});
      std::vector<std::string> names;
      bool failed = false;
      try {
        while (auto chunk = reader.next()) {
          for (const TensorView& v : *chunk) names.push_back(v.name);
        }
      } catch (const IoError& e) {
        failed = true;
        EXPECT_NE(std::string(e.what()).find("a.safetensors"), std::string::npos) << e.what();
        EXPECT_LE(e.offset(), bad);
      }
      EXPECT_TRUE(failed);
      EXPECT_EQ(std::count(names.begin(), names.end(), "a.mid"), 0);
      EXPECT_EQ(std::count(names.begin(), names.end(), "a.big"), 1);  // the chunk before it
    }
    EXPECT_EQ(host_bytes_in_use(), base);
  }
}

// cancel() stops a read ahead nobody will take, and the reader is destroyed promptly.
TEST(ChunkedReader, CancelStopsTheReadAhead) {
  TempDir dir;
  testing::TensorBytes bytes;
  const auto plan = write_checkpoint(dir, bytes);
  LoadOptions o = posix_options();
  o.storage.threads = 1;
  o.storage.block_size = 4096;
  const std::uint64_t base = host_bytes_in_use();
  {
    ChunkedReader reader(plan, o, ChunkOptions{100 * kKiB, true});
    ASSERT_TRUE(reader.next().has_value());  // the next chunk is now being read ahead
    reader.cancel();
    EXPECT_THROW(
        {
          while (reader.next()) {
          }
        },
        CancelledError);
  }
  EXPECT_EQ(host_bytes_in_use(), base);
  // A reader abandoned mid-way (its destructor cancels and waits) leaks nothing either.
  {
    ChunkedReader reader(plan, o, ChunkOptions{100 * kKiB, true});
    ASSERT_TRUE(reader.next().has_value());
  }
  EXPECT_EQ(host_bytes_in_use(), base);
}

TEST(ChunkedReader, VerifyCatchesSilentCorruption) {
  TempDir dir;
  testing::TensorBytes bytes;
  const auto plan = write_checkpoint(dir, bytes);
  const PlannedFile& a = plan->files()[0];
  const std::uint64_t bad = a.header.data_offset() + a.header.tensors[3].begin + 7;  // a.mid
  LoadOptions o = posix_options();
  o.verify = true;
  {
    ChunkedReader reader(plan, o, ChunkOptions{100 * kKiB, true});
    while (reader.next()) {
    }
    EXPECT_GT(reader.stats().verify_seconds, 0.0);
  }
  o.custom_storage = std::make_shared<testing::FaultInjectingStorage>(
      make_storage("posix"), testing::FaultPlan{testing::Fault::kCorrupt, bad});
  ChunkedReader reader(plan, o, ChunkOptions{100 * kKiB, true});
  try {
    while (reader.next()) {
    }
    FAIL() << "corruption not noticed";
  } catch (const IoError& e) {
    EXPECT_EQ(e.offset(), bad);
    EXPECT_NE(std::string(e.what()).find("a.mid"), std::string::npos) << e.what();
  }
}

TEST(ChunkedReader, NullPlanIsAnArgumentError) {
  EXPECT_THROW(ChunkedReader(nullptr, posix_options()), std::invalid_argument);
}

}  // namespace
}  // namespace warpload
