// Device loads through the staged pipeline (storage -> pinned ring -> async copies), against the
// fake CUDA driver (tests/fake_cuda/), or the real one when WARPLOAD_GPU_REAL=1 (tests/gpu/run.sh;
// the fake-only checks -- fault switches, counters, copy delay -- then skip).
//
// Expected bytes come from the test's own random data; device memory is read back with the
// shim's copy_to_host() (cuMemcpyDtoH).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/staged_pipeline.hpp"
#include "device/cuda_shim.hpp"
#include "fake_cuda/fake_cuda_api.h"
#include "support/fault_storage.hpp"
#include "support/random_checkpoint.hpp"
#include "support/temp_dir.hpp"
#include "support/thread_collective.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

bool real_gpu() {
  const char* v = std::getenv("WARPLOAD_GPU_REAL");
  return v != nullptr && std::string(v) == "1";
}

// The fake driver's test-only entry points (tests/fake_cuda/fake_cuda_api.h), looked up in the
// library the shim loaded; all null against the real driver.
struct FakeDriver {
  fake_cuda_live_allocations_fn live_allocations = nullptr;
  fake_cuda_live_pinned_allocations_fn live_pinned_allocations = nullptr;
  fake_cuda_live_pinned_bytes_fn live_pinned_bytes = nullptr;
  fake_cuda_live_streams_fn live_streams = nullptr;
  fake_cuda_live_events_fn live_events = nullptr;
  fake_cuda_async_copies_fn async_copies = nullptr;
  fake_cuda_pageable_async_copies_fn pageable_async_copies = nullptr;
  fake_cuda_reset_fn reset = nullptr;
  fake_cuda_registration_calls_fn registration_calls = nullptr;
  fake_cuda_live_registrations_fn live_registrations = nullptr;

  static const FakeDriver& get() {
    static const FakeDriver driver = [] {
      FakeDriver d;
      if (real_gpu()) return d;
      (void)detail::cuda_api();
      void* lib = dlopen(WARPLOAD_FAKE_CUDA, RTLD_NOW | RTLD_NOLOAD);
      if (lib == nullptr) return d;
      auto sym = [lib](auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      };
      sym(d.live_allocations, "fake_cuda_live_allocations");
      sym(d.live_pinned_allocations, "fake_cuda_live_pinned_allocations");
      sym(d.live_pinned_bytes, "fake_cuda_live_pinned_bytes");
      sym(d.live_streams, "fake_cuda_live_streams");
      sym(d.live_events, "fake_cuda_live_events");
      sym(d.async_copies, "fake_cuda_async_copies");
      sym(d.pageable_async_copies, "fake_cuda_pageable_async_copies");
      sym(d.reset, "fake_cuda_reset");
      sym(d.registration_calls, "fake_cuda_registration_calls");
      sym(d.live_registrations, "fake_cuda_live_registrations");
      return d;
    }();
    return driver;
  }
  [[nodiscard]] bool usable() const noexcept {
    return live_allocations && live_pinned_allocations && live_pinned_bytes && live_streams &&
           live_events && async_copies && pageable_async_copies && reset && registration_calls &&
           live_registrations;
  }
};

// A fake-driver switch (FAKE_CUDA_*) for one scope: set and re-read now, cleared and re-read at
// scope exit.
class FakeSwitch {
 public:
  FakeSwitch(const char* name, const std::string& value) : name_(name) {
    setenv(name, value.c_str(), 1);
    FakeDriver::get().reset();
  }
  ~FakeSwitch() {
    unsetenv(name_);
    FakeDriver::get().reset();
  }
  FakeSwitch(const FakeSwitch&) = delete;
  FakeSwitch& operator=(const FakeSwitch&) = delete;

 private:
  const char* name_;
};

// Everything the fake counts as live; equal before and after a load that failed.
struct LiveObjects {
  long long device, pinned, registered, streams, events;
  static LiveObjects now() {
    const FakeDriver& d = FakeDriver::get();
    return {d.live_allocations(), d.live_pinned_allocations(), d.live_registrations(),
            d.live_streams(), d.live_events()};
  }
  bool operator==(const LiveObjects&) const = default;
};

void PrintTo(const LiveObjects& l, std::ostream* os) {
  *os << "{device " << l.device << ", pinned " << l.pinned << ", registered " << l.registered
      << ", streams " << l.streams << ", events " << l.events << "}";
}

using testing::TensorSpec;

using Expected = testing::TensorBytes;

void write_file(const fs::path& path, const std::vector<TensorSpec>& specs, std::uint32_t seed,
                std::size_t header_alignment, Expected& expected) {
  testing::write_random_file(path, specs, seed, expected, header_alignment);
}

// Two files of a few hundred KiB: many 64 KiB pieces, tensors crossing piece boundaries, an
// empty tensor, and an unpadded (odd-length) header in the second file.
Expected write_checkpoint(const TempDir& dir) {
  Expected expected;
  write_file(dir / "model-00001-of-00002.safetensors",
             {{"embed", DType::kBF16, {512, 130}},
              {"q_proj", DType::kF32, {96, 97}},
              {"empty", DType::kF32, {0, 4}},
              {"norm", DType::kF32, {96}}},
             1, 8, expected);
  write_file(dir / "model-00002-of-00002.safetensors",
             {{"up_proj", DType::kF8_E4M3, {256, 520}},
              {"scale", DType::kU8, {3}},
              {"lm_head", DType::kU8, {700, 123}}},
             2, 1, expected);
  return expected;
}

int ordinal(const std::string& device) { return Device::parse(device).index; }

void expect_on_device(const Loader& loader, const Expected& expected, const std::string& device) {
  for (const auto& [name, bytes] : expected) {
    SCOPED_TRACE(name);
    const TensorView v = loader.tensor(name);
    EXPECT_EQ(v.memory, MemoryKind::kDevice);
    ASSERT_EQ(v.nbytes, bytes.size());
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u);
    if (bytes.empty()) continue;
    std::vector<std::byte> back(bytes.size());
    detail::copy_to_host(back.data(), v.data, back.size(), ordinal(device));
    EXPECT_EQ(std::memcmp(back.data(), bytes.data(), bytes.size()), 0);
  }
}

class GpuPipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!real_gpu()) setenv("WARPLOAD_CUDA_LIB", WARPLOAD_FAKE_CUDA, 1);
  }
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA driver or device";
    if (!real_gpu()) {
      ASSERT_TRUE(FakeDriver::get().usable()) << "fake driver entry points missing";
      FakeDriver::get().reset();
    }
  }
};

#define SKIP_ON_REAL_GPU() \
  if (real_gpu()) GTEST_SKIP() << "fake-driver-only check (WARPLOAD_GPU_REAL=1)"

// The ring's shape (no device needed): 4 MiB slots, 2 .. 16 of them within the budget, one
// reader per core; the overrides replace slot size and readers, the budget still caps.
TEST(StagingPlan, ShapeFollowsBudgetFileSizeAndOverrides) {
  constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
  const std::size_t cores = std::clamp<std::size_t>(std::thread::hardware_concurrency(), 2, 16);
  auto plan = detail::plan_staging(256 * kMiB, 8192 * kMiB);
  EXPECT_EQ(plan.slot_bytes, 4 * kMiB);
  EXPECT_EQ(plan.slots, 16u);
  EXPECT_EQ(plan.readers, cores);
  plan = detail::plan_staging(128 << 10, 8192 * kMiB);  // tiny budget: 2 x 64 KiB
  EXPECT_EQ(plan.slot_bytes, std::uint64_t{64} << 10);
  EXPECT_EQ(plan.slots, 2u);
  EXPECT_EQ(plan.readers, 2u);
  plan = detail::plan_staging(256 * kMiB, (1 << 20) + 5);  // small files: slots no larger
  EXPECT_EQ(plan.slot_bytes, kMiB + (64 << 10));
  EXPECT_EQ(plan.slots, 2u);
  plan = detail::plan_staging(128 * kMiB, 8192 * kMiB, 16 * kMiB, 8);
  EXPECT_EQ(plan.slot_bytes, 16 * kMiB);
  EXPECT_EQ(plan.slots, 8u);
  EXPECT_EQ(plan.readers, 8u);
  plan = detail::plan_staging(1024 * kMiB, 8192 * kMiB, 4 * kMiB, 100);  // forced: 256 slots
  EXPECT_EQ(plan.slots, 256u);
  EXPECT_EQ(plan.readers, 100u);
  plan = detail::plan_staging(16 * kMiB, 8192 * kMiB, 4 * kMiB, 100);
  EXPECT_EQ(plan.slots, 4u);
  EXPECT_EQ(plan.readers, 4u);  // never more readers than slots
}

TEST_F(GpuPipelineTest, EveryBackendByteExactOnTwoDevices) {
  TempDir dir;
  const Expected expected = write_checkpoint(dir);
  // Slow copies: a slot refilled before its event completed would change bytes in flight.
  std::optional<FakeSwitch> delay;
  if (!real_gpu()) delay.emplace("FAKE_CUDA_COPY_DELAY_US", "2000");
  for (const std::string& backend : available_storage_names()) {
    if (backend == "3fs") continue;  // needs a 3FS mount (usrbio_test covers it)
    for (const bool direct : {false, true}) {
      if (direct && backend != "posix" && backend != "uring") continue;
      for (const std::string device : {"cuda:0", "cuda:1"}) {
        if (Device::parse(device).index >= detail::cuda_device_count()) continue;
        SCOPED_TRACE(backend + (direct ? " --direct " : " ") + device);
        LoadOptions options;
        options.backend = backend;
        options.storage.direct = direct;
        options.use_config = false;
        options.device = device;
        options.staging_bytes = 128 << 10;  // 2 slots of 64 KiB, each reused many times
        Loader loader(options);
        loader.add(dir.path());
        const LoadStats stats = loader.load();
        EXPECT_EQ(stats.device, device);
        EXPECT_EQ(stats.bytes, loader.total_bytes());
        expect_on_device(loader, expected, device);
      }
    }
  }
  if (!real_gpu()) {  // every copy came out of the pinned ring, none from pageable memory
    EXPECT_GT(FakeDriver::get().async_copies(), 0);
    EXPECT_EQ(FakeDriver::get().pageable_async_copies(), 0);
  }
}

// The ring's memory, whatever it is: registered huge pages, or (the experiment) page-cache
// mappings registered in place for buffered files while O_DIRECT files still read into slots.
// Slow copies make a mapping released or a slot refilled too early show as wrong bytes.
TEST_F(GpuPipelineTest, RegisteredAndMappedRingsAreByteExact) {
  TempDir dir;
  const Expected expected = write_checkpoint(dir);
  std::optional<FakeSwitch> delay;
  if (!real_gpu()) delay.emplace("FAKE_CUDA_COPY_DELAY_US", "2000");
  for (const char* memory : {"pinned", "registered", "mapped", "mapped:2"}) {
    setenv("WARPLOAD_STAGING_MEMORY", memory, 1);
    for (const bool direct : {false, true}) {
      SCOPED_TRACE(std::string(memory) + (direct ? " --direct" : ""));
      LoadOptions options;
      options.backend = "posix";
      options.storage.direct = direct;
      options.use_config = false;
      options.device = "cuda:0";
      options.staging_bytes = 128 << 10;
      Loader loader(options);
      loader.add(dir.path());
      const long long registrations = real_gpu() ? 0 : FakeDriver::get().registration_calls();
      const LoadStats stats = loader.load();
      EXPECT_EQ(stats.bytes, loader.total_bytes());
      expect_on_device(loader, expected, "cuda:0");
      if (real_gpu()) continue;
      // registered: each of the 2 slots once; mapped: each 64 KiB piece of a buffered file
      // (several per file), none for O_DIRECT files (read into the 2 registered slots: 2).
      const long long made = FakeDriver::get().registration_calls() - registrations;
      if (std::string(memory) == "registered") EXPECT_EQ(made, 2);
      if (std::string(memory) == "pinned") EXPECT_EQ(made, 0);
      if (std::string(memory).starts_with("mapped") && !direct) EXPECT_GT(made, 2);
      if (std::string(memory).starts_with("mapped") && direct) EXPECT_EQ(made, 2);
    }
  }
  unsetenv("WARPLOAD_STAGING_MEMORY");
  if (!real_gpu()) {
    EXPECT_EQ(FakeDriver::get().pageable_async_copies(), 0);
    EXPECT_EQ(FakeDriver::get().live_pinned_allocations(), 0);
  }
}

TEST_F(GpuPipelineTest, DefaultStagingAndProgress) {
  TempDir dir;
  const Expected expected = write_checkpoint(dir);
  LoadOptions options;
  options.backend = "posix";
  options.use_config = false;
  options.device = "cuda";
  std::uint64_t last_done = 0;
  std::uint64_t last_total = 0;
  options.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    last_done = done;
    last_total = total;
  };
  Loader loader(options);
  loader.add(dir.path());
  const LoadStats stats = loader.load();
  EXPECT_EQ(stats.device, "cuda:0");
  EXPECT_EQ(last_total, loader.total_bytes());
  EXPECT_EQ(last_done, last_total);
  expect_on_device(loader, expected, "cuda:0");
  // Views outlive the loader.
  const TensorView v = loader.tensor("lm_head");
  loader.release();
  std::vector<std::byte> back(v.nbytes);
  detail::copy_to_host(back.data(), v.data, back.size(), 0);
  EXPECT_EQ(std::memcmp(back.data(), expected.at("lm_head").data(), back.size()), 0);
}

TEST_F(GpuPipelineTest, BadDeviceNames) {
  TempDir dir;
  write_checkpoint(dir);
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", "CUDA:0"}) {
    LoadOptions options;
    options.device = bad;
    options.use_config = false;
    Loader loader(options);
    loader.add(dir.path());
    EXPECT_THROW((void)loader.load(), std::invalid_argument) << bad;
  }
  LoadOptions options;
  options.device = "cuda:7";
  options.use_config = false;
  Loader loader(options);
  loader.add(dir.path());
  try {
    (void)loader.load();
    FAIL() << "cuda:7 loaded";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:7"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(loader.loaded());
}

TEST_F(GpuPipelineTest, HostAllocatorForDeviceIsInvalid) {
  TempDir dir;
  write_checkpoint(dir);
  LoadOptions options;
  options.device = "cuda:0";
  options.use_config = false;
  options.allocator = make_host_allocator();
  Loader loader(options);
  loader.add(dir.path());
  EXPECT_THROW((void)loader.load(), std::invalid_argument);
}

// Files from writers that pack tensors in any order: an F32 at data-section offset 3, an I64
// at offset 19. Each such tensor is moved on the device into an aligned buffer of its own.
TEST_F(GpuPipelineTest, MisalignedTensorsAreRealignedOnTheDevice) {
  TempDir dir;
  Expected expected;
  write_file(dir / "odd.safetensors",
             {{"a", DType::kU8, {3}}, {"b", DType::kF32, {4}}, {"c", DType::kI64, {2}}}, 3, 8,
             expected);
  for (const std::string& backend : {std::string("posix"), std::string("mmap")}) {
    SCOPED_TRACE(backend);
    LoadOptions options;
    options.device = "cuda:0";
    options.backend = backend;
    options.use_config = false;
    Loader loader(options);
    loader.add(dir / "odd.safetensors");
    (void)loader.load();
    for (const auto& [name, bytes] : expected) {
      const TensorView v = loader.tensor(name);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u) << name;
    }
    expect_on_device(loader, expected, "cuda:0");
  }
}

TEST_F(GpuPipelineTest, ReadErrorIsIoErrorNamingFile) {
  TempDir dir;
  write_checkpoint(dir);
  const fs::path second = dir / "model-00002-of-00002.safetensors";
  const std::optional<LiveObjects> live_before =
      real_gpu() ? std::nullopt : std::optional(LiveObjects::now());
  {
    auto storage = std::make_shared<testing::FaultInjectingStorage>(
        make_storage("posix"), testing::FaultPlan{testing::Fault::kIoError, 200000});
    LoadOptions options;
    options.device = "cuda:0";
    options.custom_storage = storage;
    options.staging_bytes = 128 << 10;
    Loader loader(options);
    loader.add(second);
    try {
      (void)loader.load();
      FAIL() << "load with an I/O error succeeded";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(second.filename().string()), std::string::npos)
          << e.what();
      EXPECT_EQ(e.error_number(), EIO);
    }
    EXPECT_FALSE(loader.loaded());
  }
  if (live_before) {
    EXPECT_EQ(LiveObjects::now(), *live_before);
  }
}

TEST_F(GpuPipelineTest, AllocationFailureIsOutOfMemory) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const FakeSwitch fail("FAKE_CUDA_FAIL_ALLOC_AFTER", "1");  // the second file's buffer fails
  const LiveObjects live_before = LiveObjects::now();
  LoadOptions options;
  options.device = "cuda:0";
  options.use_config = false;
  Loader loader(options);
  loader.add(dir.path());
  EXPECT_THROW((void)loader.load(), OutOfMemoryError);
  EXPECT_FALSE(loader.loaded());
  EXPECT_EQ(LiveObjects::now(), live_before);
}

TEST_F(GpuPipelineTest, CopyFailureLeaksNothing) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  const Expected expected = write_checkpoint(dir);
  const LiveObjects live_before = LiveObjects::now();
  {
    const FakeSwitch fail("FAKE_CUDA_FAIL_COPY_AFTER", "5");
    LoadOptions options;
    options.device = "cuda:0";
    options.use_config = false;
    options.backend = "posix";
    options.staging_bytes = 128 << 10;
    Loader loader(options);
    loader.add(dir.path());
    try {
      (void)loader.load();
      FAIL() << "load with a failing copy succeeded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(".safetensors"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(loader.loaded());
  }
  EXPECT_EQ(LiveObjects::now(), live_before);
  // The same loader setup works once the fault is gone.
  LoadOptions options;
  options.device = "cuda:0";
  options.use_config = false;
  options.backend = "posix";
  Loader loader(options);
  loader.add(dir.path());
  (void)loader.load();
  expect_on_device(loader, expected, "cuda:0");
}

std::uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

TEST_F(GpuPipelineTest, HostMemoryStaysBoundedByTheRing) {
  TempDir dir;
  constexpr std::uint64_t kTensorBytes = std::uint64_t{8} << 20;
  SafetensorsWriter writer;
  for (int i = 0; i < 8; ++i) {  // 64 MiB
    writer.add("w" + std::to_string(i), DType::kU8, {kTensorBytes},
               [i](std::byte* dest, std::size_t size, std::uint64_t offset) {
                 for (std::size_t k = 0; k < size; ++k) {
                   dest[k] = static_cast<std::byte>((offset + k) * 31 + i);
                 }
               });
  }
  writer.write(dir / "big.safetensors");
  constexpr std::uint64_t kCheckpoint = 8 * kTensorBytes;
  LoadOptions options;
  options.device = "cuda:0";
  options.use_config = false;
  options.backend = "posix";  // not mmap: mapped file pages count in RSS
  options.staging_bytes = 4 << 20;
  Loader loader(options);
  loader.add(dir / "big.safetensors");
  // Keep the primary context alive across the measurement: creating it costs a real driver
  // far more host memory than the ring.
  const auto warm = make_cuda_allocator(Device::parse("cuda:0"))->allocate(256, 256);
  const std::uint64_t before = peak_rss_bytes();
  (void)loader.load();
  const std::uint64_t growth = peak_rss_bytes() - before;
  // The fake's device memory is host memory (the checkpoint once); a pipeline staging the
  // whole checkpoint in host memory would add it a second time.
#if !defined(__SANITIZE_THREAD__)  // TSan's shadow of every touched byte counts in RSS too
  const std::uint64_t device_share = real_gpu() ? 0 : kCheckpoint;
  EXPECT_LT(growth, device_share + kCheckpoint / 4) << "peak RSS grew by " << growth;
#else
  (void)growth;
#endif
  std::vector<std::byte> back(kTensorBytes);
  const TensorView v = loader.tensor("w5");
  detail::copy_to_host(back.data(), v.data, back.size(), 0);
  for (std::size_t k = 0; k < back.size(); k += 4099) {
    ASSERT_EQ(back[k], static_cast<std::byte>(k * 31 + 5)) << k;
  }
}

// ---- multi-rank loads into device memory (a device collective, as NCCL's) ------------------

// Runs fn(rank, collective) on `world` threads whose collective claims device buffers (the
// fake driver's); returns the first failure's message, or "".
std::string run_device_ranks(int world,
                             const std::function<void(int, std::shared_ptr<Collective>)>& fn) {
  return testing::first_rank_error(
      testing::run_ranks(world, std::chrono::seconds(20), fn, MemoryKind::kDevice));
}

// Every rank reads its share through the staged pipeline into its device buffer; the
// all-gather runs on device memory; tensors (realigned ones included: odd data offsets) and
// shard views equal the single-process host load.
TEST_F(GpuPipelineTest, DistributedLoadIntoDeviceMemoryEqualsHostLoad) {
  SKIP_ON_REAL_GPU();  // the real NCCL path: distributed_test's Nccl.* on the GPU machine
  TempDir dir;
  Expected expected;
  write_file(dir / "a.safetensors",
             {{"a.w", DType::kBF16, {37, 19}},
              {"a.s", DType::kF32, {}},
              {"a.i64", DType::kI64, {5}},
              {"a.e", DType::kU8, {0, 3}}},
             21, 1, expected);
  write_file(dir / "b.safetensors",
             {{"b.big", DType::kU8, {300000}}, {"b.f", DType::kF32, {77, 9}}}, 22, 8, expected);
  LoadOptions host_options;
  host_options.backend = "posix";
  host_options.use_config = false;
  Loader reference(host_options);
  reference.add(dir.path());
  (void)reference.load();
  for (const int world : {1, 2, 3}) {
    SCOPED_TRACE("world " + std::to_string(world));
    const std::string error = run_device_ranks(world, [&](int r, auto collective) {
      LoadOptions o = host_options;
      o.device = "cuda:0";
      o.staging_bytes = 128 << 10;
      DistributedOptions d;
      d.round_bytes = 8192;
      DistributedLoader loader(collective, o, d);
      loader.add(dir.path());
      const LoadStats stats = loader.load(Delivery::kAll);
      EXPECT_EQ(stats.device, "cuda:0");
      for (const auto& [name, bytes] : expected) {
        const TensorView v = loader.tensor(name);
        EXPECT_EQ(v.memory, MemoryKind::kDevice) << name;
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u) << name;
        std::vector<std::byte> back(v.nbytes);
        if (!back.empty()) detail::copy_to_host(back.data(), v.data, back.size(), 0);
        EXPECT_EQ(back, bytes) << name;
        if (v.shape.empty() || v.nbytes == 0) continue;
        const TensorView got = loader.shard(name, 0);
        const TensorView want = reference.shard(name, r, world, 0);
        EXPECT_EQ(got.shape, want.shape) << name;
        std::vector<std::byte> shard(got.nbytes);
        if (!shard.empty()) detail::copy_to_host(shard.data(), got.data, shard.size(), 0);
        ASSERT_EQ(shard.size(), want.nbytes) << name;
        EXPECT_TRUE(shard.empty() || std::memcmp(shard.data(), want.data, want.nbytes) == 0)
            << name;
      }
    });
    EXPECT_EQ(error, "");
  }
}

TEST_F(GpuPipelineTest, DistributedDeviceLoadRefusesWhatItCannotDo) {
  TempDir dir;
  write_checkpoint(dir);
  const auto expect_refused = [&](MemoryKind memory, const std::string& device, Delivery delivery,
                                  const std::string& says) {
    auto group = std::make_shared<testing::ThreadGroup>(1, std::chrono::seconds(5), memory);
    LoadOptions o;
    o.backend = "posix";
    o.use_config = false;
    o.device = device;
    DistributedLoader loader(group->member(0), o);
    loader.add(dir.path());
    try {
      (void)loader.load(delivery);
      ADD_FAILURE() << "loaded: " << says;
    } catch (const UnsupportedError& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  expect_refused(MemoryKind::kDevice, "cpu", Delivery::kAll, "cuda:N");
  expect_refused(MemoryKind::kHost, "cuda:0", Delivery::kAll, "device collective");
  expect_refused(MemoryKind::kDevice, "cuda:0", Delivery::kOnRequest, "kOnRequest");
}

}  // namespace
}  // namespace warpload
