// 3FS straight into device memory: device loads through "3fs" whose staging ring is made of
// USRBIO iovs registered with the CUDA driver, pooled across loads (docs/architecture.md, "Ring
// memory"). Runs the real backend against the USRBIO emulator and the fake CUDA driver together;
// both report what they see besides bytes (their README's test hooks): every read's destination,
// every copy's source, registrations and iov creations. Bytes are compared with what the test
// wrote, read back from the fake device with cuMemcpyDtoH.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "device/cuda_shim.hpp"
#include "fake_cuda/fake_cuda_api.h"
#include "storage/hf3fs_shim.hpp"
#include "support/cli_process.hpp"
#include "support/process_counters.hpp"
#include "support/random_checkpoint.hpp"
#include "support/sanitizers.hpp"
#include "support/temp_dir.hpp"
#include "support/thread_collective.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::count_entries;
using testing::count_shm_mappings;
using testing::TempDir;
using Expected = testing::TensorBytes;

constexpr std::uint64_t kSlotBytes = 256 << 10;

// The test hooks of both doubles, looked up in the libraries the shims loaded.
struct Hooks {
  fake_cuda_live_registrations_fn live_registrations = nullptr;
  fake_cuda_registration_calls_fn registration_calls = nullptr;
  fake_cuda_registered_async_copies_fn registered_copies = nullptr;
  fake_cuda_pageable_async_copies_fn pageable_copies = nullptr;
  fake_cuda_host_registered_fn host_registered = nullptr;
  fake_cuda_set_copy_observer_fn set_copy_observer = nullptr;
  fake_cuda_reset_fn reset = nullptr;
  int (*in_iov)(const void*, size_t) = nullptr;
  long long (*iovcreate_calls)() = nullptr;
  void (*set_io_observer)(void (*)(const void*, size_t)) = nullptr;

  static const Hooks& get() {
    static const Hooks hooks = [] {
      Hooks h;
      (void)detail::cuda_api();
      (void)detail::hf3fs_available();
      void* cuda = dlopen(WARPLOAD_FAKE_CUDA, RTLD_NOW | RTLD_NOLOAD);
      void* emu = dlopen(WARPLOAD_USRBIO_EMULATOR, RTLD_NOW | RTLD_NOLOAD);
      if (cuda == nullptr || emu == nullptr) return h;
      auto sym = [](void* lib, auto& fn, const char* name) {
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      };
      sym(cuda, h.live_registrations, "fake_cuda_live_registrations");
      sym(cuda, h.registration_calls, "fake_cuda_registration_calls");
      sym(cuda, h.registered_copies, "fake_cuda_registered_async_copies");
      sym(cuda, h.pageable_copies, "fake_cuda_pageable_async_copies");
      sym(cuda, h.host_registered, "fake_cuda_host_registered");
      sym(cuda, h.set_copy_observer, "fake_cuda_set_copy_observer");
      sym(cuda, h.reset, "fake_cuda_reset");
      sym(emu, h.in_iov, "hf3fs_emu_in_iov");
      sym(emu, h.iovcreate_calls, "hf3fs_emu_iovcreate_calls");
      sym(emu, h.set_io_observer, "hf3fs_emu_set_io_observer");
      return h;
    }();
    return hooks;
  }
  [[nodiscard]] bool usable() const noexcept {
    return live_registrations && registration_calls && registered_copies && pageable_copies &&
           host_registered && set_copy_observer && reset && in_iov && iovcreate_calls &&
           set_io_observer;
  }
};

// What the observers saw. A read or copy "outside" did not touch a registered iov: a CPU copy
// (staging iov, pinned slot) happened somewhere on its way.
std::atomic<long long> g_reads{0}, g_reads_outside{0}, g_copies{0}, g_copies_outside{0};

bool in_registered_iov(const void* p, size_t n) {
  const Hooks& h = Hooks::get();
  return h.in_iov(p, n) == 1 && h.host_registered(p, n) == 1;
}
void on_read(const void* p, size_t n) {
  if (n <= 1) return;  // io_depth fillers: 1-byte reads into the ring's private iov
  ++g_reads;
  if (!in_registered_iov(p, n)) ++g_reads_outside;
}
void on_copy(const void* p, size_t n) {
  ++g_copies;
  if (!in_registered_iov(p, n)) ++g_copies_outside;
}

class IovRing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("WARPLOAD_CUDA_LIB", WARPLOAD_FAKE_CUDA, 1);
    setenv("WARPLOAD_HF3FS_LIB", WARPLOAD_USRBIO_EMULATOR, 1);
    setenv("WARPLOAD_STAGING_SLOT_BYTES", std::to_string(kSlotBytes).c_str(), 1);
  }
  static void TearDownTestSuite() { unsetenv("WARPLOAD_STAGING_SLOT_BYTES"); }

  void SetUp() override {
    for (const char* name : kEmulatorSwitches) unsetenv(name);
    ASSERT_TRUE(cuda_available()) << "fake CUDA driver did not load";
    ASSERT_TRUE(Hooks::get().usable()) << "test hooks missing from the fake driver or emulator";
    static_cast<void>(release_staging_pools());
    Hooks::get().reset();
    fs::create_directory(mount_ / "3fs-virt");
    expected_ = write_checkpoint();
    shm_before_ = count_shm_mappings();
    registrations_before_ = Hooks::get().live_registrations();
    g_reads = g_reads_outside = g_copies = g_copies_outside = 0;
    Hooks::get().set_io_observer(on_read);
    Hooks::get().set_copy_observer(on_copy);
  }
  void TearDown() override {
    Hooks::get().set_io_observer(nullptr);
    Hooks::get().set_copy_observer(nullptr);
    static_cast<void>(release_staging_pools());
    for (const char* name : kEmulatorSwitches) unsetenv(name);
  }

  static constexpr const char* kEmulatorSwitches[] = {
      "WARPLOAD_EMU_FAIL_OFFSET",  "WARPLOAD_EMU_FAIL_PATH_SUFFIX", "WARPLOAD_EMU_MAX_IO_BYTES",
      "WARPLOAD_EMU_DELAY_OFFSET", "WARPLOAD_EMU_DELAY_MS",         "WARPLOAD_EMU_WORKERS"};

  // Two files, tensors crossing slot boundaries, odd data offsets (header alignment 1).
  Expected write_checkpoint() {
    Expected expected;
    testing::write_random_file(mount_ / "model-00001-of-00002.safetensors",
                               {{"embed", DType::kBF16, {512, 700}},
                                {"norm", DType::kF32, {333}},
                                {"empty", DType::kF32, {0, 2}}},
                               7, expected, 1);
    testing::write_random_file(mount_ / "model-00002-of-00002.safetensors",
                               {{"mlp", DType::kU8, {1100, 997}}, {"bias", DType::kF32, {77}}}, 8,
                               expected, 8);
    return expected;
  }

  [[nodiscard]] LoadOptions options() const {
    LoadOptions o;
    o.backend = "3fs";
    o.device = "cuda:0";
    o.use_config = false;
    o.staging_bytes = 8 * kSlotBytes;
    return o;
  }

  void expect_on_device(auto& loader) const {
    for (const auto& [name, bytes] : expected_) {
      SCOPED_TRACE(name);
      const TensorView v = loader.tensor(name);
      ASSERT_EQ(v.memory, MemoryKind::kDevice);
      ASSERT_EQ(v.nbytes, bytes.size());
      if (bytes.empty()) continue;
      std::vector<std::byte> back(bytes.size());
      detail::copy_to_host(back.data(), v.data, back.size(), 0);
      EXPECT_EQ(std::memcmp(back.data(), bytes.data(), bytes.size()), 0);
    }
  }

  LoadStats load_and_check(const LoadOptions& o) {
    Loader loader(o);
    loader.add(mount_.path());
    const LoadStats stats = loader.load();
    expect_on_device(loader);
    return stats;
  }

  // No tensor byte went through a CPU copy: the daemon wrote every piece into a registered iov
  // and the copy engine read every piece from one.
  static void expect_no_cpu_copy() {
    EXPECT_GT(g_reads.load(), 0);
    EXPECT_EQ(g_reads_outside.load(), 0) << "reads that landed outside registered iovs";
    EXPECT_GT(g_copies.load(), 0);
    EXPECT_EQ(g_copies_outside.load(), 0) << "copies whose source was not a registered iov";
    EXPECT_EQ(Hooks::get().pageable_copies(), 0);
  }

  // Every slot, registration, /dev/shm mapping and iov link made since SetUp is gone.
  void expect_pools_released() const {
    EXPECT_EQ(staging_pool_bytes(), 0u);
    EXPECT_EQ(Hooks::get().live_registrations(), registrations_before_);
    EXPECT_EQ(count_shm_mappings(), shm_before_);
    EXPECT_EQ(count_entries((mount_.path() / "3fs-virt" / "iovs").c_str()), 0u);
  }

  TempDir mount_;
  Expected expected_;
  std::size_t shm_before_ = 0;
  long long registrations_before_ = 0;
};

TEST_F(IovRing, DaemonWritesRegisteredIovsAndTheCopyEngineReadsThem) {
  const LoadStats stats = load_and_check(options());
  EXPECT_EQ(stats.backend, "3fs");
  EXPECT_EQ(stats.staging_memory,
            "pool: 3fs " + fs::canonical(mount_.path()).string() + " block 0");
  expect_no_cpu_copy();
  EXPECT_EQ(Hooks::get().registered_copies(), g_copies.load());
  // The ring is the pool: at most the staging budget, all of it iovs registered once.
  EXPECT_GT(staging_pool_bytes(), 0u);
  EXPECT_LE(staging_pool_bytes(), options().staging_bytes);
  EXPECT_EQ(static_cast<std::uint64_t>(Hooks::get().registration_calls()) * kSlotBytes,
            staging_pool_bytes());
}

TEST_F(IovRing, LaterLoadsReuseThePoolAndReleaseFreesIt) {
  static_cast<void>(load_and_check(options()));
  const long long registrations = Hooks::get().registration_calls();
  const long long iovs = Hooks::get().iovcreate_calls();
  const std::uint64_t pool = staging_pool_bytes();
  ASSERT_GT(registrations, 0);
  for (int i = 0; i < 3; ++i) static_cast<void>(load_and_check(options()));
  EXPECT_EQ(Hooks::get().registration_calls(), registrations) << "registered again";
  EXPECT_EQ(Hooks::get().iovcreate_calls(), iovs) << "an iov was created again (or staging)";
  EXPECT_EQ(staging_pool_bytes(), pool);
  expect_no_cpu_copy();

  EXPECT_EQ(release_staging_pools(), pool);
  expect_pools_released();
  EXPECT_EQ(release_staging_pools(), 0u);
  // A load after the release makes a new pool.
  static_cast<void>(load_and_check(options()));
  EXPECT_GT(Hooks::get().registration_calls(), registrations);
}

// What the emulators model still holds on the device path: short results, out-of-order
// completions from several workers, io_depth batches completed with fillers, and I/Os cut at
// iov block boundaries.
TEST_F(IovRing, HoldsUnderShortResultsReorderingBatchesAndBlocks) {
  struct Case {
    const char* name;
    const char* env;
    const char* value;
    int io_depth;
    std::uint64_t iov_block_size;
  };
  for (const Case& c :
       {Case{"short results", "WARPLOAD_EMU_MAX_IO_BYTES", "10007", 0, 0},
        Case{"4 workers, out of order", "WARPLOAD_EMU_WORKERS", "4", 0, 0},
        Case{"io_depth 3", nullptr, nullptr, 3, 0}, Case{"io_depth -5", nullptr, nullptr, -5, 0},
        Case{"iov blocks of 64 KiB", nullptr, nullptr, 0, 64 << 10},
        Case{"blocks and short results", "WARPLOAD_EMU_MAX_IO_BYTES", "50000", 0, 128 << 10}}) {
    SCOPED_TRACE(c.name);
    if (c.env != nullptr) setenv(c.env, c.value, 1);
    g_reads = g_reads_outside = g_copies = g_copies_outside = 0;
    LoadOptions o = options();
    o.storage.usrbio.io_depth = c.io_depth;
    o.storage.usrbio.iov_block_size = c.iov_block_size;
    o.storage.block_size = 96 << 10;  // several I/Os per slot
    static_cast<void>(load_and_check(o));
    expect_no_cpu_copy();
    if (c.env != nullptr) unsetenv(c.env);
  }
  static_cast<void>(release_staging_pools());
  expect_pools_released();
}

// -EIO in the middle of a batch: the load fails naming the file and offset, nothing partly
// filled is handed out, and the pool (still registered) serves the next load.
TEST_F(IovRing, ReadErrorNamesFileAndOffsetAndThePoolServesTheNextLoad) {
  const std::uint64_t offset = 600000;
  setenv("WARPLOAD_EMU_FAIL_OFFSET", std::to_string(offset).c_str(), 1);
  setenv("WARPLOAD_EMU_FAIL_PATH_SUFFIX", "model-00002-of-00002.safetensors", 1);
  {
    Loader loader(options());
    loader.add(mount_.path());
    try {
      static_cast<void>(loader.load());
      FAIL() << "the load succeeded";
    } catch (const IoError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("model-00002-of-00002.safetensors"), std::string::npos) << message;
      EXPECT_EQ(e.error_number(), EIO) << message;
      // The failing I/O covers the offset the emulator fails.
      EXPECT_LE(e.offset(), offset) << message;
      EXPECT_NE(message.find(std::to_string(e.offset())), std::string::npos) << message;
    }
    EXPECT_THROW(static_cast<void>(loader.tensor("mlp")), std::exception);
  }
  unsetenv("WARPLOAD_EMU_FAIL_OFFSET");
  unsetenv("WARPLOAD_EMU_FAIL_PATH_SUFFIX");
  const long long registrations = Hooks::get().registration_calls();
  g_reads = g_reads_outside = g_copies = g_copies_outside = 0;
  static_cast<void>(load_and_check(options()));
  expect_no_cpu_copy();
  EXPECT_EQ(Hooks::get().registration_calls(), registrations);
  static_cast<void>(release_staging_pools());
  expect_pools_released();
}

// Target "staging", chosen explicitly, keeps per-load slots (registered huge pages) filled
// through the staging iov, one CPU copy (what tune compares the iov ring against); nothing is
// pooled and nothing stays registered.
TEST_F(IovRing, TargetStagingUsesPerLoadSlotsThroughTheStagingIov) {
  LoadOptions o = options();
  o.storage.usrbio.target = UsrbioTarget::kStaging;
  const LoadStats stats = load_and_check(o);
  EXPECT_EQ(stats.staging_memory, "registered");
  EXPECT_EQ(staging_pool_bytes(), 0u);
  EXPECT_GT(g_reads_outside.load(), 0);  // the daemon wrote the staging iov, not the slots
  EXPECT_EQ(Hooks::get().live_registrations(), registrations_before_);
}

// Other backends keep per-load slots: registered huge pages by default, cuMemHostAlloc on
// request; neither is pooled or left registered.
TEST_F(IovRing, OtherBackendsUseRegisteredOrPinnedSlotsPerLoad) {
  LoadOptions o = options();
  o.backend = "posix";
  EXPECT_EQ(load_and_check(o).staging_memory, "registered");
  EXPECT_GT(Hooks::get().registered_copies(), 0);
  Hooks::get().reset();
  setenv("WARPLOAD_STAGING_MEMORY", "pinned", 1);
  EXPECT_EQ(load_and_check(o).staging_memory, "pinned");
  unsetenv("WARPLOAD_STAGING_MEMORY");
  EXPECT_EQ(Hooks::get().registered_copies(), 0);
  EXPECT_EQ(Hooks::get().pageable_copies(), 0);
  EXPECT_EQ(Hooks::get().live_registrations(), registrations_before_);  // freed with the load
  EXPECT_EQ(staging_pool_bytes(), 0u);
}

// Multi-rank: each rank's DistributedLoader reads its slice through the same pooled iov ring
// (one process, so one pool), then all-gathers on the device.
TEST_F(IovRing, DistributedLoaderWithADeviceCollectiveUsesThePool) {
  for (const int world : {1, 2, 3}) {
    SCOPED_TRACE("world " + std::to_string(world));
    g_reads = g_reads_outside = g_copies = g_copies_outside = 0;
    const std::string error = testing::first_rank_error(testing::run_ranks(
        world, std::chrono::seconds(30),
        [&](int /*rank*/, std::shared_ptr<Collective> collective) {
          DistributedLoader loader(std::move(collective), options());
          loader.add(mount_.path());
          const LoadStats stats = loader.load(Delivery::kAll);
          EXPECT_EQ(stats.device, "cuda:0");
          EXPECT_TRUE(stats.staging_memory.starts_with("pool: 3fs ")) << stats.staging_memory;
          expect_on_device(loader);
        },
        MemoryKind::kDevice));
    EXPECT_EQ(error, "");
    expect_no_cpu_copy();
  }
  static_cast<void>(release_staging_pools());
  expect_pools_released();
}

// ---- the CLI process: the pool is released at exit, after an error, and on Ctrl-C ----------

struct Child {
  pid_t pid = -1;
};

Child spawn_cli(const std::vector<std::string>& args, const std::vector<std::string>& env,
                const fs::path& err, const fs::path& out = "/dev/null") {
  return Child{testing::spawn_process(WARPLOAD_CLI_PATH, args, env, out, err)};
}

int wait_status(pid_t pid) { return testing::wait_exit_status(pid); }

std::string slurp(const fs::path& p) { return testing::read_whole_file(p); }

// The /dev/shm segments behind the mount's iov links right now.
std::set<fs::path> iov_segments(const fs::path& mount) {
  std::set<fs::path> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(mount / "3fs-virt" / "iovs", ec)) {
    out.insert(fs::read_symlink(entry.path(), ec));
  }
  return out;
}

class IovRingProcess : public IovRing {
 protected:
  // Runs `warpload load` on the mount into cuda:0 and returns its exit status; `during` runs
  // while it loads (with its pid).
  // (`command`: another command line for the CLI.)
  int run_load(const std::vector<std::string>& extra_env,
               const std::function<void(pid_t)>& during = nullptr,
               std::vector<std::string> command = {}) {
    std::vector<std::string> env{"WARPLOAD_CUDA_LIB=" WARPLOAD_FAKE_CUDA,
                                 "WARPLOAD_HF3FS_LIB=" WARPLOAD_USRBIO_EMULATOR,
                                 "FAKE_CUDA_EXIT_REPORT=" + (scratch_ / "report").string()};
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    if (command.empty()) {
      command = {
          "load",      mount_.path().string(),        "--backend", "3fs", "--device", "cuda:0",
          "--staging", std::to_string(8 * kSlotBytes)};
    }
    const Child child = spawn_cli(command, env, scratch_ / "stderr");
    if (child.pid < 0) return -1;
    if (during) during(child.pid);
    return wait_status(child.pid);
  }

  // At exit nothing was left registered, and no iov (link or /dev/shm segment) remained.
  void expect_clean_exit(const std::set<fs::path>& seen_segments = {}) {
    EXPECT_EQ(slurp(scratch_ / "report").substr(0, 16), "registrations 0\n")
        << slurp(scratch_ / "report");
    EXPECT_EQ(count_entries((mount_.path() / "3fs-virt" / "iovs").c_str()), 0u);
    for (const fs::path& segment : seen_segments) EXPECT_FALSE(fs::exists(segment)) << segment;
  }

  TempDir scratch_;
};

TEST_F(IovRingProcess, NormalExitReleasesThePool) {
  EXPECT_EQ(run_load({}), 0) << slurp(scratch_ / "stderr");
  expect_clean_exit();
}

TEST_F(IovRingProcess, ErrorExitReleasesThePool) {
  EXPECT_EQ(run_load({"WARPLOAD_EMU_FAIL_OFFSET=600000",
                      "WARPLOAD_EMU_FAIL_PATH_SUFFIX=model-00002-of-00002.safetensors"}),
            5)
      << slurp(scratch_ / "stderr");
  EXPECT_NE(slurp(scratch_ / "stderr").find("model-00002-of-00002.safetensors"), std::string::npos);
  expect_clean_exit();
}

TEST_F(IovRingProcess, CtrlCReleasesThePool) {
  // `load`, then `bench` (its load loop honours Ctrl-C the same way).
  for (const bool bench : {false, true}) {
    SCOPED_TRACE(bench ? "bench" : "load");
    std::set<fs::path> segments;
    std::vector<std::string> command;
    if (bench) {
      command = {
          "bench", mount_.path().string(), "--device", "cuda:0", "--backends", "3fs", "--runs",
          "1"};
    }
    // One I/O of the second file stalls for 2 s: Ctrl-C arrives while the ring's iovs exist.
    const auto interrupt = [&](pid_t pid) {
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (segments.empty() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        segments = iov_segments(mount_.path());
      }
      kill(pid, SIGINT);
    };
    const int status = run_load({"WARPLOAD_EMU_DELAY_OFFSET=600000", "WARPLOAD_EMU_DELAY_MS=2000",
                                 "WARPLOAD_EMU_FAIL_PATH_SUFFIX=model-00002-of-00002.safetensors"},
                                interrupt, command);
    EXPECT_FALSE(segments.empty()) << "the load never made its iovs";
    EXPECT_EQ(status, 130) << slurp(scratch_ / "stderr");
    EXPECT_NE(slurp(scratch_ / "stderr").find("interrupted"), std::string::npos);
    expect_clean_exit(segments);
  }
}

// Host memory of a 3fs device load is the ring, which is the pool: a 64 MiB checkpoint through
// a 4 MiB budget grows the CLI's RSS by the device copy (the fake's device memory is host
// memory) plus at most the budget and 5% of the checkpoint, never a second copy.
TEST_F(IovRingProcess, HostMemoryIsThePoolNotTheCheckpoint) {
#ifdef WARPLOAD_TEST_SANITIZED
  GTEST_SKIP() << "RSS counts sanitizer shadow memory";
#endif
  TempDir dir;
  fs::create_directory(dir / "3fs-virt");
  constexpr std::uint64_t kTensor = std::uint64_t{8} << 20;
  SafetensorsWriter writer;
  for (int i = 0; i < 8; ++i) {
    writer.add("w" + std::to_string(i), DType::kU8, {kTensor},
               [i](std::byte* dest, std::size_t size, std::uint64_t offset) {
                 for (std::size_t k = 0; k < size; ++k) {
                   dest[k] = static_cast<std::byte>((offset + k) * 13 + i);
                 }
               });
  }
  writer.write(dir / "big.safetensors");
  constexpr std::uint64_t kBudget = 4 << 20;
  const Child child = spawn_cli(
      {"load", dir.path().string(), "--backend", "3fs", "--device", "cuda:0", "--staging",
       std::to_string(kBudget), "--json"},
      {"WARPLOAD_CUDA_LIB=" WARPLOAD_FAKE_CUDA, "WARPLOAD_HF3FS_LIB=" WARPLOAD_USRBIO_EMULATOR},
      scratch_ / "stderr", scratch_ / "stdout");
  ASSERT_EQ(wait_status(child.pid), 0) << slurp(scratch_ / "stderr");
  const std::string json = slurp(scratch_ / "stdout");
  const auto number = [&json](const std::string& key) {
    const auto at = json.find("\"" + key + "\":");
    return at == std::string::npos ? std::uint64_t{0}
                                   : std::stoull(json.substr(at + key.size() + 3));
  };
  EXPECT_NE(json.find("\"staging_memory\":\"pool: 3fs "), std::string::npos) << json;
  const std::uint64_t checkpoint = number("bytes");
  ASSERT_EQ(checkpoint, 8 * kTensor);
  EXPECT_LE(number("host_rss_growth_bytes"), checkpoint + kBudget + checkpoint / 20) << json;
}

// `tune --device` times candidates as device loads: for 3fs both targets, the registered iov
// ring and pinned slots through the staging iov, and writes the winner.
TEST_F(IovRingProcess, TuneComparesTheIovRingWithStagingOnTheDevice) {
  const fs::path config = scratch_ / "config.json";
  const Child child = spawn_cli(
      {"tune", mount_.path().string(), "--backend", "3fs", "--device", "cuda:0", "--quick",
       "--config", config.string()},
      {"WARPLOAD_CUDA_LIB=" WARPLOAD_FAKE_CUDA, "WARPLOAD_HF3FS_LIB=" WARPLOAD_USRBIO_EMULATOR},
      scratch_ / "stderr", scratch_ / "stdout");
  ASSERT_GT(child.pid, 0);
  EXPECT_EQ(wait_status(child.pid), 0) << slurp(scratch_ / "stderr");
  const std::string table = slurp(scratch_ / "stdout");
  EXPECT_NE(table.find("target=iov"), std::string::npos) << table;
  EXPECT_NE(table.find("target=staging"), std::string::npos) << table;
  EXPECT_NE(slurp(config).find("\"backend\":\"3fs\""), std::string::npos) << slurp(config);
  // A device that cannot be used fails the command once, before any candidate.
  const Child bad = spawn_cli({"tune", mount_.path().string(), "--device", "cuda:9", "--quick",
                               "--config", (scratch_ / "bad.json").string()},
                              {"WARPLOAD_CUDA_LIB=" WARPLOAD_FAKE_CUDA}, scratch_ / "stderr");
  EXPECT_EQ(wait_status(bad.pid), 6) << slurp(scratch_ / "stderr");
  EXPECT_FALSE(fs::exists(scratch_ / "bad.json"));
}

}  // namespace
}  // namespace warpload
