// The "3fs" backend against the USRBIO emulator (tests/usrbio_emulator/): the real backend code
// reaches the emulator through the dlopen shim, exactly as it would reach libhf3fs_api_shared.so.
// Each test makes a scratch "mount" (a folder holding 3fs-virt/), writes safetensors files into
// it and compares what loads against the bytes it wrote (never against warpload's readers).
// Error tests also check that nothing leaks: shared-memory mappings, the mount's iov links
// (3fs-virt/iovs/) and descriptors.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "storage/hf3fs_shim.hpp"
#include "support/process_counters.hpp"
#include "support/temp_dir.hpp"
#include "support/thread_collective.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::count_entries;
using testing::count_shm_mappings;
using testing::TempDir;

// One file's tensors and their bytes.
struct WrittenFile {
  fs::path path;
  std::map<std::string, std::vector<std::byte>> bytes;
};

// `tensors` U8 tensors of `bytes_each` random bytes; header alignment 1 puts the data section at
// an odd offset so I/Os start at every residue.
WrittenFile write_file(const fs::path& path, unsigned tensors, std::size_t bytes_each,
                       std::uint32_t seed) {
  WrittenFile out{path, {}};
  std::mt19937 rng(seed);
  SafetensorsWriter writer;
  writer.set_header_alignment(1);
  for (unsigned i = 0; i < tensors; ++i) {
    const std::string name = "layer." + std::to_string(i) + std::string(seed % 5, 'w');
    auto& data = out.bytes[name];
    data.resize(bytes_each + i * 7);
    for (auto& b : data) b = static_cast<std::byte>(rng());
    writer.add(name, DType::kU8, {data.size()}, std::span<const std::byte>(data));
  }
  writer.write(path);
  return out;
}

void expect_loaded(const Loader& loader, const WrittenFile& file) {
  for (const auto& [name, expected] : file.bytes) {
    SCOPED_TRACE(name);
    const TensorView view = loader.tensor(name);
    ASSERT_EQ(view.nbytes, expected.size());
    EXPECT_EQ(std::memcmp(view.data, expected.data(), expected.size()), 0);
  }
}

// Loads `file` with `options` and checks every tensor's bytes.
void load_and_expect(const LoadOptions& options, const WrittenFile& file) {
  Loader loader(options);
  loader.add(file.path);
  static_cast<void>(loader.load());
  expect_loaded(loader, file);
}

// Finds a shared library that is certainly not the USRBIO client (for the missing-symbol test).
std::string some_other_library() {
  for (const char* name : {"liburing.so.2", "libxxhash.so.0", "libm.so.6"}) {
    void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) continue;
    dlclose(handle);
    for (const char* dir : {"/usr/lib/x86_64-linux-gnu/", "/lib/x86_64-linux-gnu/", "/usr/lib64/",
                            "/usr/lib/aarch64-linux-gnu/", "/usr/lib/"}) {
      const std::string path = std::string(dir) + name;
      if (fs::exists(path)) return path;
    }
  }
  return {};
}

class Usrbio : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(WARPLOAD_USRBIO_EMULATOR)) GTEST_SKIP() << "USRBIO emulator not built";
    setenv("WARPLOAD_HF3FS_LIB", WARPLOAD_USRBIO_EMULATOR, 1);
    unsetenv("HF3FS_LIB_DIR");
    unsetenv("WARPLOAD_EMU_FAIL_OFFSET");
    unsetenv("WARPLOAD_EMU_FAIL_PATH_SUFFIX");
    unsetenv("WARPLOAD_EMU_MAX_IO_BYTES");
    fs::create_directory(mount_ / "3fs-virt");
    // Load the library before counting: dlopen itself may open descriptors once.
    static_cast<void>(detail::hf3fs_available());
    shm_before_ = count_shm_mappings();
    fds_before_ = count_entries("/proc/self/fd");
  }
  void TearDown() override {
    unsetenv("WARPLOAD_EMU_FAIL_OFFSET");
    unsetenv("WARPLOAD_EMU_MAX_IO_BYTES");
    unsetenv("WARPLOAD_EMU_DELAY_OFFSET");
    unsetenv("WARPLOAD_EMU_DELAY_MS");
  }

  // Every iov, ring and descriptor made since SetUp is gone.
  void expect_nothing_leaked() {
    EXPECT_EQ(count_shm_mappings(), shm_before_);
    EXPECT_EQ(count_entries("/proc/self/fd"), fds_before_);
    EXPECT_EQ(count_entries((mount_.path() / "3fs-virt" / "iovs").c_str()), 0u);
  }

  // Zero copy unless a test says otherwise: tests that pass their own allocator (or kStaging)
  // cover the staging path.
  static LoadOptions options_3fs() {
    LoadOptions options;
    options.backend = "3fs";
    options.storage.usrbio.target = UsrbioTarget::kIov;
    return options;
  }

  TempDir mount_;
  std::size_t shm_before_ = 0;
  std::size_t fds_before_ = 0;
};

struct Settings {
  unsigned rings;
  int entries;
  std::uint64_t chunk;
  std::uint64_t iov_block_size;
  std::uint64_t staging_bytes;
  bool own_allocator;  // the caller's host memory: every I/O goes through staging
  int io_depth;
  UsrbioTarget target = UsrbioTarget::kIov;
};

TEST_F(Usrbio, LoadsByteExactAcrossSettings) {
  std::vector<WrittenFile> files;
  for (std::uint32_t i = 0; i < 3; ++i) {
    files.push_back(write_file(mount_ / ("shard" + std::to_string(i) + ".safetensors"), 5,
                               (300 << 10) + i * 4099, 11 + i));
  }
  const Settings cases[] = {
      {0, 0, 0, 0, 0, false, 0, UsrbioTarget::kAuto},     // defaults
      {0, 0, 0, 0, 0, false, 0, UsrbioTarget::kStaging},  // staging chosen, not forced
      {1, 1, 64 << 10, 0, 0, false, 0},                   // one ring, one entry
      {4, 3, 100'000, 0, 0, false, 0},                    // odd chunk, tiny rings
      {3, 16, 1 << 20, 64 << 10, 0, false, 0},            // iov blocks smaller than the chunk
      {2, 8, 100'000, 48 << 10, 0, false, -4},         // blocks not dividing the chunk; io_depth<0
      {2, 8, 1 << 20, 0, 0, true, 0},                  // staging, default size
      {3, 4, 1 << 20, 0, 100'000, true, 0},            // staging smaller than the chunk
      {2, 4, 256 << 10, 96 << 10, 200'000, true, -2},  // staging in blocks
      // io_depth > 0: batches of exactly io_depth, the last one completed by fillers
      {2, 8, 100'000, 0, 0, false, 3},
      {1, 5, 64 << 10, 0, 0, false, 5},                                 // io_depth == entries
      {3, 6, 64 << 10, 48 << 10, 0, false, 4},                          // with iov blocks
      {2, 4, 256 << 10, 0, 300'000, false, 3, UsrbioTarget::kStaging},  // staging slots < batch
      {1, 1, 1 << 20, 0, 0, true, 1},                                   // one entry, batches of one
  };
  for (const Settings& s : cases) {
    SCOPED_TRACE(
        "rings " + std::to_string(s.rings) + " entries " + std::to_string(s.entries) + " chunk " +
        std::to_string(s.chunk) + " block " + std::to_string(s.iov_block_size) + " staging " +
        std::to_string(s.staging_bytes) + (s.own_allocator ? " own allocator" : "") + " io_depth " +
        std::to_string(s.io_depth) + " target " + std::string(usrbio_target_name(s.target)));
    LoadOptions options = options_3fs();
    options.storage.block_size = s.chunk;
    options.storage.usrbio.rings = s.rings;
    options.storage.usrbio.entries = s.entries;
    options.storage.usrbio.iov_block_size = s.iov_block_size;
    options.storage.usrbio.staging_bytes = s.staging_bytes;
    options.storage.usrbio.io_depth = s.io_depth;
    options.storage.usrbio.target = s.target;
    if (s.own_allocator) options.allocator = make_host_allocator();
    {
      Loader loader(options);
      loader.add(mount_.path());
      const LoadStats stats = loader.load();
      EXPECT_EQ(stats.backend, "3fs");
      for (const WrittenFile& f : files) expect_loaded(loader, f);
    }
    expect_nothing_leaked();
  }
}

TEST_F(Usrbio, ShortReadsFromTheDaemonAreContinued) {
  const WrittenFile file = write_file(mount_ / "a.safetensors", 3, 1 << 20, 3);
  setenv("WARPLOAD_EMU_MAX_IO_BYTES", "12345", 1);  // every I/O returns at most this much
  for (const bool own : {false, true}) {
    LoadOptions options = options_3fs();
    if (own) options.allocator = make_host_allocator();
    load_and_expect(options, file);
  }
  expect_nothing_leaked();
}

TEST_F(Usrbio, IsListedWhenTheLibraryLoads) {
  const auto names = available_storage_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "3fs"), names.end());
  EXPECT_EQ(make_storage("3fs")->capabilities().name, "3fs");
}

TEST_F(Usrbio, FileNotOnAMountIsUnsupported) {
  TempDir elsewhere;
  const WrittenFile file = write_file(elsewhere / "plain.safetensors", 1, 1000, 1);
  {
    Loader loader(options_3fs());
    loader.add(file.path);
    try {
      static_cast<void>(loader.load());
      FAIL() << "expected UnsupportedError";
    } catch (const UnsupportedError& e) {
      EXPECT_NE(std::string(e.what()).find(file.path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("not on a 3FS mount"), std::string::npos) << e.what();
    }
  }
  expect_nothing_leaked();
}

TEST_F(Usrbio, ConfiguredMountOtherThanTheFilesFailsRegistration) {
  TempDir elsewhere;
  const WrittenFile file = write_file(elsewhere / "plain.safetensors", 1, 1000, 1);
  {
    LoadOptions options = options_3fs();
    options.storage.usrbio.mount_point = mount_.path().string();
    Loader loader(options);
    loader.add(file.path);
    try {
      static_cast<void>(loader.load());
      FAIL() << "expected IoError";
    } catch (const IoError& e) {
      EXPECT_EQ(e.error_number(), EBADF);
      EXPECT_NE(std::string(e.what()).find(file.path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("hf3fs_reg_fd"), std::string::npos) << e.what();
    }
  }
  expect_nothing_leaked();
}

// A missing client library is a missing capability (UnsupportedError, like every shim's), not
// a missing file: the message names the path tried and the variables to set.
TEST_F(Usrbio, MissingLibraryIsUnsupportedNamingIt) {
  const std::string missing = (mount_ / "no-such-lib.so").string();
  setenv("WARPLOAD_HF3FS_LIB", missing.c_str(), 1);
  EXPECT_FALSE(detail::hf3fs_available());
  const auto names = available_storage_names();
  EXPECT_EQ(std::find(names.begin(), names.end(), "3fs"), names.end());
  try {
    static_cast<void>(make_storage("3fs"));
    FAIL() << "expected UnsupportedError";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("WARPLOAD_HF3FS_LIB"), std::string::npos) << e.what();
  }
  // HF3FS_LIB_DIR is the fallback when WARPLOAD_HF3FS_LIB is unset.
  unsetenv("WARPLOAD_HF3FS_LIB");
  setenv("HF3FS_LIB_DIR", mount_.path().c_str(), 1);
  EXPECT_EQ(detail::hf3fs_library_path(), (mount_.path() / "libhf3fs_api_shared.so").string());
  EXPECT_THROW(static_cast<void>(make_storage("3fs")), UnsupportedError);
  setenv("HF3FS_LIB_DIR", fs::path(WARPLOAD_USRBIO_EMULATOR).parent_path().c_str(), 1);
  EXPECT_NO_THROW(static_cast<void>(make_storage("3fs")));
  unsetenv("HF3FS_LIB_DIR");
  expect_nothing_leaked();
}

TEST_F(Usrbio, LibraryWithoutTheSymbolsIsUnsupported) {
  const std::string other = some_other_library();
  if (other.empty()) GTEST_SKIP() << "no other shared library found to stand in";
  setenv("WARPLOAD_HF3FS_LIB", other.c_str(), 1);
  EXPECT_FALSE(detail::hf3fs_available());
  try {
    static_cast<void>(make_storage("3fs"));
    FAIL() << "expected UnsupportedError";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find(other), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hf3fs_is_hf3fs"), std::string::npos) << e.what();
  }
}

TEST_F(Usrbio, IoDepthBeyondTheRingIsRejected) {
  StorageOptions options;
  options.usrbio.entries = 8;
  for (const int depth : {9, -9}) {
    options.usrbio.io_depth = depth;
    EXPECT_THROW(static_cast<void>(make_storage("3fs", options)), UnsupportedError) << depth;
  }
  for (const int depth : {8, -8, 1, 0}) {
    options.usrbio.io_depth = depth;
    EXPECT_NO_THROW(static_cast<void>(make_storage("3fs", options))) << depth;
  }
}

// With io_depth > 0 the daemon runs nothing until io_depth I/Os are submitted: a load whose
// I/O count is not a multiple of it must still finish (fillers), and promptly.
TEST_F(Usrbio, IoDepthBatchesThatDoNotDivideTheWorkFinish) {
  const WrittenFile file = write_file(mount_ / "a.safetensors", 1, 1000, 7);  // one small I/O
  for (const UsrbioTarget target : {UsrbioTarget::kIov, UsrbioTarget::kStaging}) {
    LoadOptions options = options_3fs();
    options.storage.usrbio.entries = 16;
    options.storage.usrbio.io_depth = 16;
    options.storage.usrbio.target = target;
    options.storage.usrbio.stall_timeout_ms = 5000;
    const auto started = std::chrono::steady_clock::now();
    load_and_expect(options, file);
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(4));
  }
  expect_nothing_leaked();
}

// kIov: the tensors live in iovs (shared memory mapped while the loader holds them); kStaging:
// ordinary memory, and no iov outlives the read.
TEST_F(Usrbio, TargetDecidesWhereTheBytesLive) {
  const WrittenFile file = write_file(mount_ / "a.safetensors", 2, 1 << 20, 9);
  for (const UsrbioTarget target : {UsrbioTarget::kIov, UsrbioTarget::kStaging}) {
    SCOPED_TRACE(std::string(usrbio_target_name(target)));
    LoadOptions options = options_3fs();
    options.storage.usrbio.target = target;
    Loader loader(options);
    loader.add(file.path);
    static_cast<void>(loader.load());
    expect_loaded(loader, file);
    const std::size_t iov_links = count_entries((mount_.path() / "3fs-virt" / "iovs").c_str());
    if (target == UsrbioTarget::kIov) {
      EXPECT_GE(iov_links, 1u);
      EXPECT_GT(count_shm_mappings(), shm_before_);
    } else {
      EXPECT_EQ(iov_links, 0u);
      EXPECT_EQ(count_shm_mappings(), shm_before_);
    }
  }
  expect_nothing_leaked();
  EXPECT_EQ(resolve_usrbio_target(UsrbioTarget::kIov), UsrbioTarget::kIov);
  EXPECT_EQ(resolve_usrbio_target(UsrbioTarget::kStaging), UsrbioTarget::kStaging);
  EXPECT_NE(resolve_usrbio_target(UsrbioTarget::kAuto), UsrbioTarget::kAuto);
}

// The one read path: a multi-rank host load through 3fs reads into iovs exactly where Loader
// does (zero copy: the ranks' stream buffers are iovs while the loaders hold them), and each
// rank's slice lands at its place in the stream.
TEST_F(Usrbio, DistributedLoaderReadsZeroCopyIntoIovs) {
  const WrittenFile a = write_file(mount_ / "a.safetensors", 3, (1 << 20) + 333, 5);
  const WrittenFile b = write_file(mount_ / "b.safetensors", 2, 70000, 6);
  for (const int world : {1, 2, 3}) {
    SCOPED_TRACE("world " + std::to_string(world));
    std::vector<std::size_t> links_held(static_cast<std::size_t>(world));
    std::vector<std::string> backends(static_cast<std::size_t>(world));
    const auto errors = testing::run_ranks(
        world, std::chrono::seconds(30), [&](int rank, const std::shared_ptr<Collective>& c) {
          DistributedLoader loader(c, options_3fs());
          loader.add(a.path);
          loader.add(b.path);
          backends[static_cast<std::size_t>(rank)] = loader.load(Delivery::kAll).backend;
          for (const WrittenFile* file : {&a, &b}) {
            for (const auto& [name, expected] : file->bytes) {
              const TensorView view = loader.tensor(name);
              ASSERT_EQ(view.nbytes, expected.size()) << name;
              EXPECT_EQ(std::memcmp(view.data, expected.data(), expected.size()), 0) << name;
            }
          }
          links_held[static_cast<std::size_t>(rank)] =
              count_entries((mount_.path() / "3fs-virt" / "iovs").c_str());
          (void)c->all_gather_status("");  // every rank counts while every loader holds its iov
        });
    EXPECT_EQ(testing::first_rank_error(errors), "");
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(backends[static_cast<std::size_t>(r)], "3fs");
      // Each rank's stream buffer is an iov of its own (staging iovs are gone after a read).
      EXPECT_GE(links_held[static_cast<std::size_t>(r)], 1u);
    }
  }
  expect_nothing_leaked();
}

// The emulator refuses an I/O that crosses an iov block (as 3FS does); the backend avoids it.
TEST_F(Usrbio, RingFullAndBlockBoundariesFollowTheAbi) {
  const detail::Hf3fsApi& api = detail::hf3fs_api();
  const std::string mount = mount_.path().string();
  const WrittenFile file = write_file(mount_ / "a.safetensors", 2, 1 << 20, 5);
  {
    hf3fs_iov iov{};
    ASSERT_EQ(api.iovcreate(&iov, mount.c_str(), 1 << 20, 64 << 10, -1), 0);
    hf3fs_ior ior{};
    ASSERT_EQ(api.iorcreate4(&ior, mount.c_str(), 4, true, 0, 0, -1, 0), 0);
    const int fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_LE(api.reg_fd(fd, 0), 0);
    EXPECT_EQ(api.reg_fd(fd, 0), EINVAL);  // already registered: a positive errno
    EXPECT_EQ(api.prep_io(&ior, &iov, true, iov.base + 1000, fd, 0, 64 << 10, nullptr), -EINVAL);
    // A full ring refuses the next I/O with -EAGAIN until its completions are reaped.
    for (int i = 0; i < 4; ++i) {
      EXPECT_GE(api.prep_io(&ior, &iov, true, iov.base + i * 4096, fd, i * 4096, 4096, nullptr), 0);
    }
    EXPECT_EQ(api.prep_io(&ior, &iov, true, iov.base, fd, 0, 4096, nullptr), -EAGAIN);
    ASSERT_EQ(api.submit_ios(&ior), 0);
    hf3fs_cqe cqes[4];
    for (int reaped = 0; reaped < 4;) {
      const int n = api.wait_for_ios(&ior, cqes, 4, 4 - reaped, nullptr);
      ASSERT_GT(n, 0);
      for (int i = 0; i < n; ++i) EXPECT_EQ(cqes[i].result, 4096);
      reaped += n;
    }
    EXPECT_GE(api.prep_io(&ior, &iov, true, iov.base, fd, 0, 4096, nullptr), 0);
    ASSERT_EQ(api.submit_ios(&ior), 0);
    ASSERT_EQ(api.wait_for_ios(&ior, cqes, 4, 1, nullptr), 1);
    api.dereg_fd(fd);
    EXPECT_EQ(api.prep_io(&ior, &iov, true, iov.base, fd, 0, 100, nullptr), -EBADF);
    ::close(fd);
    api.iordestroy(&ior);
    api.iovdestroy(&iov);
  }
  LoadOptions options = options_3fs();
  options.storage.block_size = 1 << 20;
  options.storage.usrbio.iov_block_size = 64 << 10;
  load_and_expect(options, file);
  expect_nothing_leaked();
}

TEST_F(Usrbio, ReadErrorNamesFileAndOffset) {
  const WrittenFile file = write_file(mount_ / "bad.safetensors", 4, 1 << 20, 7);
  const std::uint64_t fail_at = fs::file_size(file.path) - 100'000;
  setenv("WARPLOAD_EMU_FAIL_OFFSET", std::to_string(fail_at).c_str(), 1);
  for (const int io_depth : {0, 5}) {  // 5: the failure leaves a batch for fillers to complete
    for (const bool own : {false, true}) {
      SCOPED_TRACE(std::string(own ? "staging" : "zero copy") + " io_depth " +
                   std::to_string(io_depth));
      LoadOptions options = options_3fs();
      options.storage.block_size = 256 << 10;
      options.storage.usrbio.rings = 3;
      options.storage.usrbio.io_depth = io_depth;
      options.storage.usrbio.stall_timeout_ms = 5000;
      if (own) options.allocator = make_host_allocator();
      {
        Loader loader(options);
        loader.add(file.path);
        try {
          static_cast<void>(loader.load());
          FAIL() << "expected IoError";
        } catch (const IoError& e) {
          EXPECT_EQ(e.error_number(), EIO);
          EXPECT_LE(e.offset(), fail_at);
          EXPECT_GT(e.offset() + (256 << 10), fail_at);
          EXPECT_NE(std::string(e.what()).find(file.path.string()), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find(std::to_string(e.offset())), std::string::npos);
        }
        EXPECT_FALSE(loader.loaded());
      }
      expect_nothing_leaked();
    }
  }
}

// A daemon that stops completing I/O: the ring gives up after the stall timeout with an error
// naming the file and the offset of the oldest read in flight, and still collects that read
// before tearing the ring down (nothing leaked, nothing written after return).
TEST_F(Usrbio, StalledRingTimesOutNamingFileAndOffset) {
  const WrittenFile file = write_file(mount_ / "slow.safetensors", 2, 1 << 20, 11);
  const std::uint64_t slow_at = fs::file_size(file.path) / 2;
  setenv("WARPLOAD_EMU_DELAY_OFFSET", std::to_string(slow_at).c_str(), 1);
  setenv("WARPLOAD_EMU_DELAY_MS", "1500", 1);
  LoadOptions options = options_3fs();
  options.storage.block_size = 256 << 10;
  options.storage.usrbio.rings = 1;
  options.storage.usrbio.stall_timeout_ms = 300;
  {
    Loader loader(options);
    loader.add(file.path);
    try {
      static_cast<void>(loader.load());
      ADD_FAILURE() << "expected a timeout";
    } catch (const IoError& e) {
      EXPECT_EQ(e.error_number(), ETIMEDOUT);
      EXPECT_NE(std::string(e.what()).find(file.path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
      EXPECT_LE(e.offset(), slow_at);
      EXPECT_GT(e.offset() + (256 << 10), slow_at);
    }
    EXPECT_FALSE(loader.loaded());
  }
  expect_nothing_leaked();
}

TEST_F(Usrbio, EarlyEndOfFileNamesFileAndOffset) {
  const WrittenFile file = write_file(mount_ / "short.safetensors", 2, 1 << 20, 9);
  const std::uint64_t size = fs::file_size(file.path);
  {
    // Truncated after add(): the Loader notices the size change when it opens the file.
    Loader loader(options_3fs());
    loader.add(file.path);
    fs::resize_file(file.path, size - 1000);
    try {
      static_cast<void>(loader.load());
      FAIL() << "expected IoError";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(file.path.string()), std::string::npos) << e.what();
    }
    fs::resize_file(file.path, size);
  }
  {
    // Truncated after open(): the backend sees the short read at end of file.
    auto storage = make_storage("3fs", options_3fs().storage);
    auto allocator = storage->preferred_allocator();
    auto opened = storage->open(file.path);
    auto buffer = allocator->allocate(size, 64);
    fs::resize_file(file.path, size - 1000);
    const ReadRequest request{opened.get(), 0, size, buffer->data()};
    try {
      storage->read({&request, 1}, nullptr);
      FAIL() << "expected IoError";
    } catch (const IoError& e) {
      EXPECT_EQ(e.error_number(), 0);
      EXPECT_NE(std::string(e.what()).find(file.path.string()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("end of file"), std::string::npos) << e.what();
    }
  }
  expect_nothing_leaked();
}

TEST_F(Usrbio, CancelStopsWithNothingInFlight) {
  const WrittenFile file = write_file(mount_ / "a.safetensors", 2, 1 << 20, 4);
  {
    auto storage = make_storage("3fs", options_3fs().storage);
    auto opened = storage->open(file.path);
    auto buffer = storage->preferred_allocator()->allocate(opened->size(), 64);
    const ReadRequest request{opened.get(), 0, opened->size(), buffer->data()};
    ReadControl control;
    control.cancel = true;
    EXPECT_THROW(storage->read({&request, 1}, &control), CancelledError);
  }
  expect_nothing_leaked();
}

TEST_F(Usrbio, SeveralLoadersAtOnce) {
  constexpr int kThreads = 4;
  std::vector<std::vector<WrittenFile>> files(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    fs::create_directory(mount_ / ("model" + std::to_string(t)));
    for (int i = 0; i < 2; ++i) {
      files[t].push_back(write_file(
          mount_ / ("model" + std::to_string(t)) / ("s" + std::to_string(i) + ".safetensors"), 3,
          (200 << 10) + t * 1000, static_cast<std::uint32_t>(t * 10 + i)));
    }
  }
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int round = 0; round < 3; ++round) {
          LoadOptions options = options_3fs();
          options.storage.block_size = 64 << 10;
          options.storage.usrbio.entries = 8;
          if (round == 1) options.allocator = make_host_allocator();
          Loader loader(options);
          loader.add(mount_ / ("model" + std::to_string(t)));
          static_cast<void>(loader.load());
          for (const WrittenFile& f : files[t]) {
            for (const auto& [name, expected] : f.bytes) {
              const TensorView view = loader.tensor(name);
              if (view.nbytes != expected.size() ||
                  std::memcmp(view.data, expected.data(), expected.size()) != 0) {
                failures[t] = "bytes differ in " + name;
              }
            }
          }
        }
      } catch (const std::exception& e) {
        failures[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
  expect_nothing_leaked();
}

TEST_F(Usrbio, TensorViewsOutliveTheLoader) {
  const WrittenFile file = write_file(mount_ / "a.safetensors", 2, 100'000, 8);
  TensorView view;
  {
    Loader loader(options_3fs());
    loader.add(file.path);
    static_cast<void>(loader.load());
    view = loader.tensor(file.bytes.begin()->first);
  }
  // The view lives in an iov (zero copy): its shared memory is still registered with the mount.
  EXPECT_EQ(count_entries((mount_.path() / "3fs-virt" / "iovs").c_str()), 1u);
  const auto& expected = file.bytes.begin()->second;
  ASSERT_EQ(view.nbytes, expected.size());
  EXPECT_EQ(std::memcmp(view.data, expected.data(), expected.size()), 0);
  view = TensorView{};
  expect_nothing_leaked();
}

}  // namespace
}  // namespace warpload
