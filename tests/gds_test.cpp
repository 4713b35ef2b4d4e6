// GPUDirect Storage ("gds") device loads, the choice between GDS and the staged pipeline, and
// NUMA placement, against the fake CUDA driver (tests/fake_cuda/) and the fake cuFile
// (tests/fake_cufile/). With WARPLOAD_GPU_REAL=1 (tests/gpu/run.sh) the real libcuda.so.1 and
// libcufile.so.0 are used instead: the byte-exact loads run in whatever mode cuFile offers (or
// skip when it is not installed) and the fake-only checks -- fault switches, counters -- skip.
//
// Expected bytes come from the independent reader (tests/support/reference_reader.hpp); device
// memory is read back with the shim's copy_to_host() (cuMemcpyDtoH).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sched.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "device/cuda_shim.hpp"
#include "device/cufile_shim.hpp"
#include "device/numa.hpp"
#include "fake_cuda/fake_cuda_api.h"
#include "fake_cufile/fake_cufile_api.h"
#include "support/random_checkpoint.hpp"
#include "support/reference_reader.hpp"
#include "support/temp_dir.hpp"
#include "support/thread_collective.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::TensorSpec;

bool real_gpu() {
  const char* v = std::getenv("WARPLOAD_GPU_REAL");
  return v != nullptr && std::string(v) == "1";
}

// The shims read their variables at first use: choose the fakes before any test runs.
const bool kLibrariesSelected = [] {
  if (!real_gpu()) {
    setenv("WARPLOAD_CUDA_LIB", WARPLOAD_FAKE_CUDA, 1);
    setenv("WARPLOAD_CUFILE_LIB", WARPLOAD_FAKE_CUFILE, 1);
    setenv("FAKE_CUFILE_CUDA_LIB", WARPLOAD_FAKE_CUDA, 1);
    setenv("WARPLOAD_NVIDIA_FS_PATH", "/", 1);  // the fake cuFile plays a GDS machine
    for (const char* name :
         {"FAKE_CUDA_DEVICES", "FAKE_CUDA_FAIL_ALLOC_AFTER", "FAKE_CUDA_FAIL_COPY_AFTER",
          "FAKE_CUFILE_DRIVER_OPEN_ERROR", "FAKE_CUFILE_COMPAT",
          "FAKE_CUFILE_HANDLE_REGISTER_ERROR", "FAKE_CUFILE_HANDLE_REGISTER_AFTER",
          "FAKE_CUFILE_BUF_REGISTER_ERROR", "FAKE_CUFILE_READ_ERROR",
          "FAKE_CUFILE_READ_ERROR_OFFSET", "FAKE_CUFILE_READ_ERRNO", "FAKE_CUFILE_READ_ERROR_TIMES",
          "FAKE_CUFILE_SHORT_READ", "FAKE_CUFILE_EOF_AT", "FAKE_CUFILE_READ_DELAY_US",
          "WARPLOAD_GDS_REGISTER_BUFFERS"}) {
      unsetenv(name);
    }
  }
  return true;
}();

template <typename Fn>
Fn symbol(void* handle, const char* name) {
  return handle == nullptr ? nullptr : reinterpret_cast<Fn>(dlsym(handle, name));
}

// The fakes' test-only entry points, from the libraries the shims loaded.
struct Fakes {
  fake_cuda_live_allocations_fn live_allocations = nullptr;
  fake_cuda_live_pinned_allocations_fn live_pinned = nullptr;
  fake_cuda_live_streams_fn live_streams = nullptr;
  fake_cuda_reset_fn cuda_reset = nullptr;
  fake_cufile_live_handles_fn live_handles = nullptr;
  fake_cufile_live_buffers_fn live_buffers = nullptr;
  fake_cufile_driver_opens_fn driver_opens = nullptr;
  fake_cufile_reads_fn reads = nullptr;
  fake_cufile_max_concurrent_reads_fn max_concurrent = nullptr;
  fake_cufile_buffer_reads_fn buffer_reads = nullptr;
  fake_cufile_reset_fn cufile_reset = nullptr;

  static const Fakes& get() {
    static const Fakes fakes = [] {
      Fakes f;
      if (real_gpu()) return f;
      (void)detail::cuda_api();
      void* cuda = dlopen(WARPLOAD_FAKE_CUDA, RTLD_NOW | RTLD_NOLOAD);
      f.live_allocations =
          symbol<fake_cuda_live_allocations_fn>(cuda, "fake_cuda_live_allocations");
      f.live_pinned =
          symbol<fake_cuda_live_pinned_allocations_fn>(cuda, "fake_cuda_live_pinned_allocations");
      f.live_streams = symbol<fake_cuda_live_streams_fn>(cuda, "fake_cuda_live_streams");
      f.cuda_reset = symbol<fake_cuda_reset_fn>(cuda, "fake_cuda_reset");
      (void)detail::cufile_api();
      void* cufile = dlopen(WARPLOAD_FAKE_CUFILE, RTLD_NOW | RTLD_NOLOAD);
      f.live_handles = symbol<fake_cufile_live_handles_fn>(cufile, "fake_cufile_live_handles");
      f.live_buffers = symbol<fake_cufile_live_buffers_fn>(cufile, "fake_cufile_live_buffers");
      f.driver_opens = symbol<fake_cufile_driver_opens_fn>(cufile, "fake_cufile_driver_opens");
      f.reads = symbol<fake_cufile_reads_fn>(cufile, "fake_cufile_reads");
      f.max_concurrent =
          symbol<fake_cufile_max_concurrent_reads_fn>(cufile, "fake_cufile_max_concurrent_reads");
      f.buffer_reads = symbol<fake_cufile_buffer_reads_fn>(cufile, "fake_cufile_buffer_reads");
      f.cufile_reset = symbol<fake_cufile_reset_fn>(cufile, "fake_cufile_reset");
      return f;
    }();
    return fakes;
  }
  [[nodiscard]] bool usable() const noexcept {
    return live_allocations && live_pinned && live_streams && cuda_reset && live_handles &&
           live_buffers && driver_opens && reads && max_concurrent && buffer_reads && cufile_reset;
  }
  void reset() const {
    cuda_reset();
    cufile_reset();
  }
};

// Everything either fake counts as live; equal before a load and after it (or its failure).
struct Live {
  long long device, pinned, streams, handles, buffers;
  static Live now() {
    const Fakes& f = Fakes::get();
    return {f.live_allocations(), f.live_pinned(), f.live_streams(), f.live_handles(),
            f.live_buffers()};
  }
  bool operator==(const Live&) const = default;
};

void PrintTo(const Live& l, std::ostream* os) {
  *os << "{device " << l.device << ", pinned " << l.pinned << ", streams " << l.streams
      << ", cuFile handles " << l.handles << ", cuFile buffers " << l.buffers << "}";
}

// An environment variable for one scope; for a fake's switch (FAKE_*) the fakes re-read their
// switches on entry and exit.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value.c_str(), 1);
    reset_fakes();
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
    reset_fakes();
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  void reset_fakes() const {
    if (!real_gpu() && std::string(name_).rfind("FAKE_", 0) == 0) Fakes::get().reset();
  }
  const char* name_;
  std::optional<std::string> old_;
};

// Two files of a few hundred KiB, padded headers (the reference writer's layout): with 64 KiB
// blocks every file is many cuFileReads, tensors cross block boundaries, one tensor is empty.
std::vector<fs::path> write_checkpoint(const TempDir& dir, std::size_t header_alignment = 8) {
  testing::TensorBytes ignored;
  const fs::path a = dir / "model-00001-of-00002.safetensors";
  const fs::path b = dir / "model-00002-of-00002.safetensors";
  testing::write_random_file(a,
                             {{"embed", DType::kBF16, {512, 130}},
                              {"q_proj", DType::kF32, {96, 97}},
                              {"empty", DType::kF32, {0, 4}},
                              {"norm", DType::kF32, {96}}},
                             11, ignored, 8);
  // Unpadded: a metadata entry of the right length makes the data offset odd, so that the F32
  // tensor cannot be 4-byte aligned in a buffer read from a 4 KiB boundary.
  for (std::size_t pad = 0; pad < 8; ++pad) {
    std::map<std::string, std::string> metadata;
    if (header_alignment == 1) metadata["pad"] = std::string(pad, 'x');
    testing::write_random_file(b,
                               {{"up_proj", DType::kF8_E4M3, {256, 520}},
                                {"scale", DType::kF32, {3}},
                                {"lm_head", DType::kU8, {700, 123}}},
                               12, ignored, header_alignment, metadata);
    if (header_alignment != 1 || testing::read_reference_header(b).data_offset % 2 == 1) break;
  }
  return {a, b};
}

// Every tensor of `loader` compared with the independent reader's bytes.
void expect_matches_reference(const Loader& loader, int device) {
  for (const PlannedFile& file : loader.files()) {
    const testing::ReferenceFile reference = testing::read_reference_header(file.path);
    for (const auto& [name, tensor] : reference.tensors) {
      SCOPED_TRACE(file.path.filename().string() + ": " + name);
      const std::string expected = testing::read_reference_tensor(file.path, reference, name);
      const TensorView v = loader.tensor(name);
      EXPECT_EQ(v.memory, MemoryKind::kDevice);
      ASSERT_EQ(v.nbytes, expected.size());
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u);
      if (expected.empty()) continue;
      std::string back(expected.size(), '\0');
      detail::copy_to_host(back.data(), v.data, back.size(), device);
      EXPECT_TRUE(back == expected);
    }
  }
}

LoadOptions device_options(const std::string& backend, const std::string& device = "cuda:0") {
  LoadOptions options;
  options.backend = backend;
  options.device = device;
  options.use_config = false;
  options.storage.block_size = 64 << 10;
  options.staging_bytes = 128 << 10;
  return options;
}

// The lines of `text` that are warpload's GDS fallback message.
std::vector<std::string> fallback_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("warpload: gds not used", 0) == 0) lines.push_back(line);
  }
  return lines;
}

// An auto load to cuda:0 that must take the staged pipeline without a word on stderr: checks
// that and the bytes, and returns the reason the load recorded (LoadStats::gds_fallback).
std::string quiet_auto_fallback(const testing::TempDir& dir) {
  ::testing::internal::CaptureStderr();
  Loader loader(device_options("auto"));
  loader.add(dir.path());
  const LoadStats stats = loader.load();
  EXPECT_TRUE(fallback_lines(::testing::internal::GetCapturedStderr()).empty());
  EXPECT_EQ(stats.backend, "auto");
  expect_matches_reference(loader, 0);
  return stats.gds_fallback;
}

class GdsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA driver or device";
    if (real_gpu()) return;
    ASSERT_TRUE(Fakes::get().usable()) << "fake entry points missing";
    Fakes::get().reset();
    live_before_ = Live::now();
  }
  void TearDown() override {
    if (!real_gpu() && live_before_) {
      EXPECT_EQ(Live::now(), *live_before_) << "leaked";
    }
  }
  std::optional<Live> live_before_;
};

#define SKIP_ON_REAL_GPU() \
  if (real_gpu()) GTEST_SKIP() << "fake-only check (WARPLOAD_GPU_REAL=1)"

bool cufile_installed() {
  try {
    (void)detail::cufile_api();
    return true;
  } catch (const Error&) {
    return false;
  }
}

TEST_F(GdsTest, GdsLoadIsByteExactOnEveryDevice) {
  if (real_gpu() && !cufile_installed()) GTEST_SKIP() << "libcufile.so.0 is not installed";
  TempDir dir;
  write_checkpoint(dir);
  std::optional<ScopedEnv> slow;
  if (!real_gpu()) slow.emplace("FAKE_CUFILE_READ_DELAY_US", "300");  // reads overlap
  for (const std::string device : {"cuda:0", "cuda:1"}) {
    if (Device::parse(device).index >= detail::cuda_device_count()) continue;
    SCOPED_TRACE(device);
    ::testing::internal::CaptureStderr();
    Loader loader(device_options("gds", device));
    loader.add(dir.path());
    const LoadStats stats = loader.load();
    const std::string err = ::testing::internal::GetCapturedStderr();
    if (real_gpu() && !stats.gds_fallback.empty()) {
      GTEST_SKIP() << "cuFile here cannot read these files: " << stats.gds_fallback;
    }
    EXPECT_EQ(stats.backend, "gds");
    EXPECT_EQ(stats.device, device);
    EXPECT_TRUE(stats.gds_fallback.empty()) << stats.gds_fallback;
    EXPECT_TRUE(fallback_lines(err).empty()) << err;
    EXPECT_EQ(stats.bytes, loader.total_bytes());
    expect_matches_reference(loader, Device::parse(device).index);
  }
  if (!real_gpu()) {
    const Fakes& f = Fakes::get();
    EXPECT_GT(f.reads(), 10);          // 64 KiB blocks
    EXPECT_GE(f.max_concurrent(), 2);  // several threads read at once
    EXPECT_GT(f.buffer_reads(), 0);    // through the registered destination
    EXPECT_EQ(f.live_handles(), 0);    // deregistered when the load finished
    EXPECT_EQ(f.live_buffers(), 0);
  }
}

// The one read path: a multi-rank device load picks GDS exactly where Loader does, and each
// rank's cuFileReads land its slice of the stream straight in the shared device buffer.
TEST_F(GdsTest, DistributedLoaderReadsThroughGdsLikeLoader) {
  SKIP_ON_REAL_GPU();  // the real NCCL path: distributed_test's Nccl.* on the GPU machine
  TempDir dir;
  const auto files = write_checkpoint(dir);
  for (const int world : {1, 2, 3}) {
    SCOPED_TRACE("world " + std::to_string(world));
    const long long reads_before = Fakes::get().reads();
    std::vector<std::string> backends(static_cast<std::size_t>(world));
    const auto errors = testing::run_ranks(
        world, std::chrono::seconds(30),
        [&](int rank, const std::shared_ptr<Collective>& collective) {
          DistributedOptions d;
          d.round_bytes = 64 << 10;
          DistributedLoader loader(collective, device_options("gds"), d);
          loader.add(dir.path());
          const LoadStats stats = loader.load(Delivery::kAll);
          backends[static_cast<std::size_t>(rank)] = stats.backend;
          EXPECT_TRUE(stats.gds_fallback.empty()) << stats.gds_fallback;
          for (const fs::path& file : files) {
            const testing::ReferenceFile reference = testing::read_reference_header(file);
            for (const auto& [name, tensor] : reference.tensors) {
              const std::string expected = testing::read_reference_tensor(file, reference, name);
              const TensorView v = loader.tensor(name);
              EXPECT_EQ(v.memory, MemoryKind::kDevice) << name;
              ASSERT_EQ(v.nbytes, expected.size()) << name;
              EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u)
                  << name;
              if (expected.empty()) continue;
              std::string back(expected.size(), '\0');
              detail::copy_to_host(back.data(), v.data, back.size(), 0);
              EXPECT_TRUE(back == expected) << name;
            }
          }
        },
        MemoryKind::kDevice);
    EXPECT_EQ(testing::first_rank_error(errors), "");
    for (const std::string& backend : backends) EXPECT_EQ(backend, "gds");
    EXPECT_GT(Fakes::get().reads(), reads_before);  // the bytes came through cuFileRead
    EXPECT_EQ(Fakes::get().live_handles(), 0);      // every rank deregistered its files
  }
}

TEST_F(GdsTest, ViewsOutliveTheLoaderAndNothingLeaks) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  const auto files = write_checkpoint(dir);
  const testing::ReferenceFile reference = testing::read_reference_header(files[1]);
  const std::string expected = testing::read_reference_tensor(files[1], reference, "lm_head");
  TensorView v;
  {
    Loader loader(device_options("gds"));
    loader.add(dir.path());
    EXPECT_EQ(loader.load().backend, "gds");
    v = loader.tensor("lm_head");
  }
  std::string back(expected.size(), '\0');
  detail::copy_to_host(back.data(), v.data, back.size(), 0);
  EXPECT_TRUE(back == expected);
  v = TensorView{};  // the last reference: the device buffer goes
}

TEST_F(GdsTest, AutoPicksGdsWhenCuFileRunsInGdsMode) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  ::testing::internal::CaptureStderr();
  Loader loader(device_options("auto"));
  loader.add(dir.path());
  const LoadStats stats = loader.load();
  EXPECT_TRUE(fallback_lines(::testing::internal::GetCapturedStderr()).empty());
  EXPECT_EQ(stats.backend, "gds");
  EXPECT_FALSE(stats.gds_compat_mode);
  expect_matches_reference(loader, 0);
}

TEST_F(GdsTest, AutoWithoutNvidiaFsNeverOpensCuFile) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const ScopedEnv no_module("WARPLOAD_NVIDIA_FS_PATH", "/nonexistent/nvidia-fs");
  const long long opens = Fakes::get().driver_opens();
  const std::string reason = quiet_auto_fallback(dir);
  EXPECT_NE(reason.find("nvidia-fs"), std::string::npos) << reason;
  EXPECT_EQ(Fakes::get().driver_opens(), opens);
}

TEST_F(GdsTest, CompatibilityModeAutoIsStagedQuietlyExplicitGdsRuns) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const ScopedEnv compat("FAKE_CUFILE_COMPAT", "1");
  {
    ::testing::internal::CaptureStderr();
    Loader loader(device_options("auto"));
    loader.add(dir.path());
    const LoadStats stats = loader.load();
    EXPECT_TRUE(fallback_lines(::testing::internal::GetCapturedStderr()).empty());
    EXPECT_EQ(stats.backend, "auto");  // the staged pipeline's host backend
    EXPECT_NE(stats.gds_fallback.find("compatibility mode"), std::string::npos)
        << stats.gds_fallback;
    expect_matches_reference(loader, 0);
  }
  EXPECT_EQ(Fakes::get().reads(), 0);
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  const LoadStats stats = loader.load();
  EXPECT_EQ(stats.backend, "gds");
  EXPECT_TRUE(stats.gds_compat_mode);
  expect_matches_reference(loader, 0);
}

// One fallback case: the switch, the backend asked for, and what the line must say.
struct FallbackCase {
  const char* variable;
  const char* value;
  const char* backend;
  const char* reason;  // a piece of the message
};

TEST_F(GdsTest, EveryInitOrRegisterFailureFallsBackToStagedWithOneLine) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const FallbackCase cases[] = {
      {"FAKE_CUFILE_DRIVER_OPEN_ERROR", "5027", "gds", "cuFile error 5027"},
      {"FAKE_CUFILE_DRIVER_OPEN_ERROR", "5001", "auto", "nvidia-fs"},
      {"FAKE_CUFILE_HANDLE_REGISTER_ERROR", "5008", "gds", "cuFileHandleRegister"},
      {"FAKE_CUFILE_HANDLE_REGISTER_ERROR", "5034", "auto", "cuFile error 5034"},
      {"WARPLOAD_CUFILE_LIB", "/nonexistent/libcufile.so.0", "gds", "cannot load the cuFile"},
  };
  for (const FallbackCase& c : cases) {
    SCOPED_TRACE(std::string(c.variable) + "=" + c.value + " backend " + c.backend);
    const ScopedEnv fault(c.variable, c.value);
    // The second file fails to register: the first's handle must be deregistered.
    const ScopedEnv after("FAKE_CUFILE_HANDLE_REGISTER_AFTER", "1");
    ::testing::internal::CaptureStderr();
    Loader loader(device_options(c.backend));
    loader.add(dir.path());
    const LoadStats stats = loader.load();
    const std::vector<std::string> lines = fallback_lines(::testing::internal::GetCapturedStderr());
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_NE(lines[0].find(c.reason), std::string::npos) << lines[0];
    EXPECT_NE(lines[0].find("cuda:0"), std::string::npos) << lines[0];
    EXPECT_NE(stats.gds_fallback.find(c.reason), std::string::npos) << stats.gds_fallback;
    EXPECT_EQ(stats.backend, "auto");
    EXPECT_EQ(Fakes::get().live_handles(), 0);
    expect_matches_reference(loader, 0);
  }
}

TEST_F(GdsTest, RegisterFailureNamesTheFile) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  const auto files = write_checkpoint(dir);
  const ScopedEnv fault("FAKE_CUFILE_HANDLE_REGISTER_ERROR", "5008");
  const ScopedEnv after("FAKE_CUFILE_HANDLE_REGISTER_AFTER", "1");
  ::testing::internal::CaptureStderr();
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  const LoadStats stats = loader.load();
  ::testing::internal::GetCapturedStderr();
  EXPECT_NE(stats.gds_fallback.find(files[1].filename().string()), std::string::npos)
      << stats.gds_fallback;
}

TEST_F(GdsTest, MissingLibraryIsQuietForAuto) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const ScopedEnv missing("WARPLOAD_CUFILE_LIB", "/nonexistent/libcufile.so.0");
  const std::string reason = quiet_auto_fallback(dir);
  EXPECT_NE(reason.find("libcufile"), std::string::npos) << reason;
}

TEST_F(GdsTest, UnpaddedHeaderFallsBackNamingTheTensor) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir, /*header_alignment=*/1);
  ::testing::internal::CaptureStderr();
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  const LoadStats stats = loader.load();
  const std::vector<std::string> lines = fallback_lines(::testing::internal::GetCapturedStderr());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("model-00002-of-00002.safetensors"), std::string::npos) << lines[0];
  EXPECT_EQ(stats.backend, "auto");
  expect_matches_reference(loader, 0);  // the staged pipeline places it at offset 0
}

TEST_F(GdsTest, BufferRegistrationFailureStillLoads) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const ScopedEnv fault("FAKE_CUFILE_BUF_REGISTER_ERROR", "5036");
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  EXPECT_EQ(loader.load().backend, "gds");
  EXPECT_EQ(Fakes::get().buffer_reads(), 0);
  expect_matches_reference(loader, 0);
}

TEST_F(GdsTest, BufferRegistrationCanBeTurnedOff) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const ScopedEnv off("WARPLOAD_GDS_REGISTER_BUFFERS", "0");
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  EXPECT_EQ(loader.load().backend, "gds");
  EXPECT_EQ(Fakes::get().buffer_reads(), 0);
  EXPECT_GT(Fakes::get().reads(), 0);
  expect_matches_reference(loader, 0);
}

// A read failure: the load throws IoError naming the second file and an offset whose block
// covers the injected one, keeps nothing, and leaks nothing (checked in TearDown).
void expect_read_error(const TempDir& dir, const fs::path& file, std::uint64_t at, int errno_value,
                       const std::string& text) {
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  try {
    (void)loader.load();
    FAIL() << "load with a failing cuFileRead succeeded";
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.filename().string()), std::string::npos) << what;
    EXPECT_NE(what.find("offset " + std::to_string(e.offset())), std::string::npos) << what;
    EXPECT_LE(e.offset(), at);
    EXPECT_LT(at, e.offset() + (64 << 10));
    EXPECT_EQ(e.error_number(), errno_value);
    EXPECT_NE(what.find(text), std::string::npos) << what;
  }
  EXPECT_FALSE(loader.loaded());
}

TEST_F(GdsTest, ReadErrorsNameFileAndOffset) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  const auto files = write_checkpoint(dir);
  // The second file's bytes at 200000 (a file offset inside its data section).
  const std::uint64_t at = 200000;
  const ScopedEnv offset("FAKE_CUFILE_READ_ERROR_OFFSET", std::to_string(at));
  // Only the second file's reads cover `at`? The first file is ~190 KiB: make sure.
  ASSERT_LT(fs::file_size(files[0]), at);
  {
    SCOPED_TRACE("-1 with errno EIO");
    const ScopedEnv fault("FAKE_CUFILE_READ_ERROR", "-1");
    expect_read_error(dir, files[1], at, EIO, "Input/output error");
  }
  {
    SCOPED_TRACE("negative errno");
    const ScopedEnv fault("FAKE_CUFILE_READ_ERROR", std::to_string(-ENODATA));
    expect_read_error(dir, files[1], at, ENODATA, std::strerror(ENODATA));
  }
  {
    SCOPED_TRACE("negative cuFile error");
    const ScopedEnv fault("FAKE_CUFILE_READ_ERROR", "-5011");
    expect_read_error(dir, files[1], at, EIO, "cuFile error 5011");
  }
  {
    SCOPED_TRACE("cuda:0 named");
    const ScopedEnv fault("FAKE_CUFILE_READ_ERROR", "-5044");
    expect_read_error(dir, files[1], at, EIO, "into cuda:0");
  }
}

TEST_F(GdsTest, InterruptedReadsAreRetried) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  const ScopedEnv fault("FAKE_CUFILE_READ_ERROR", "-1");
  const ScopedEnv errno_value("FAKE_CUFILE_READ_ERRNO", std::to_string(EINTR));
  const ScopedEnv times("FAKE_CUFILE_READ_ERROR_TIMES", "3");
  const ScopedEnv offset("FAKE_CUFILE_READ_ERROR_OFFSET", "70000");
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  EXPECT_EQ(loader.load().backend, "gds");
  expect_matches_reference(loader, 0);
}

TEST_F(GdsTest, ShortReadsAreResumed) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  write_checkpoint(dir);
  // 3 blocks of 4 KiB and a bit: O_DIRECT files resume from the last aligned point.
  const ScopedEnv fault("FAKE_CUFILE_SHORT_READ", std::to_string(3 * 4096 + 100));
  Loader loader(device_options("gds"));
  loader.add(dir.path());
  EXPECT_EQ(loader.load().backend, "gds");
  expect_matches_reference(loader, 0);
  EXPECT_GT(Fakes::get().reads(), 25);  // ~390 KB in 12 KiB steps
}

TEST_F(GdsTest, EndOfFileBeforeTheDataEndsIsAnError) {
  SKIP_ON_REAL_GPU();
  TempDir dir;
  const auto files = write_checkpoint(dir);
  // The file "ends" for cuFile at 96 KiB: the block [64 KiB, 128 KiB) comes back short, its
  // resubmission from 96 KiB gets 0 bytes.
  const ScopedEnv eof("FAKE_CUFILE_EOF_AT", "98304");
  Loader loader(device_options("gds"));
  loader.add(files[0]);
  try {
    (void)loader.load();
    FAIL() << "a file cut short loaded";
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(files[0].filename().string()), std::string::npos) << what;
    EXPECT_NE(what.find("unexpected end of file"), std::string::npos) << what;
    EXPECT_EQ(e.error_number(), 0);
    // The first of the failing blocks to report: the resumed one at 96 KiB, or a later one.
    EXPECT_GE(e.offset(), 98304u);
    EXPECT_LT(e.offset(), fs::file_size(files[0]));
  }
}

TEST_F(GdsTest, HostLoadWithGdsIsRefused) {
  TempDir dir;
  write_checkpoint(dir);
  LoadOptions options;
  options.backend = "gds";
  options.use_config = false;
  Loader loader(options);
  loader.add(dir.path());
  try {
    (void)loader.load();
    FAIL() << "gds loaded into host memory";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:N"), std::string::npos) << e.what();
  }
}

TEST_F(GdsTest, BadDeviceIsTheLoadsErrorNotAFallback) {
  TempDir dir;
  write_checkpoint(dir);
  ::testing::internal::CaptureStderr();
  Loader loader(device_options("gds", "cuda:7"));
  loader.add(dir.path());
  try {
    (void)loader.load();
    FAIL() << "cuda:7 loaded";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:7"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fallback_lines(::testing::internal::GetCapturedStderr()).empty());
}

TEST_F(GdsTest, DriverOpenIsNotTriedWithoutTheDevice) {
  SKIP_ON_REAL_GPU();
  EXPECT_THROW((void)detail::cufile_open_driver(7), UnsupportedError);
  EXPECT_EQ(Fakes::get().driver_opens(), 0);
  EXPECT_EQ(detail::cufile_open_driver(0), detail::CufileMode::kGds);
  EXPECT_EQ(Fakes::get().driver_opens(), 1);
}

TEST(CufileShim, MissingLibraryNamesIt) {
  const ScopedEnv missing("WARPLOAD_CUFILE_LIB", "/nonexistent/libcufile.so.0");
  try {
    (void)detail::cufile_api();
    FAIL() << "loaded a missing library";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/libcufile.so.0"), std::string::npos);
  }
}

TEST(CufileShim, LibraryWithoutTheSymbolsNamesTheSymbol) {
  if (real_gpu()) GTEST_SKIP() << "fake-only";
  // The fake CUDA driver is a shared library without any cuFile symbol.
  const ScopedEnv wrong("WARPLOAD_CUFILE_LIB", WARPLOAD_FAKE_CUDA);
  try {
    (void)detail::cufile_api();
    FAIL() << "a library without cuFile symbols loaded";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("cuFileDriverOpen"), std::string::npos) << e.what();
  }
}

TEST(CufileShim, ErrorTextsNameTheCode) {
  const std::string text =
      detail::describe_cufile_error("x.safetensors: cuFileHandleRegister", CUfileError_t{5027, 0});
  EXPECT_NE(text.find("x.safetensors"), std::string::npos);
  EXPECT_NE(text.find("cuFile error 5027"), std::string::npos);
  EXPECT_NE(text.find("not registered"), std::string::npos);
  EXPECT_NE(detail::describe_cufile_error("y", CUfileError_t{5011, 700}).find("CUDA error 700"),
            std::string::npos);
  EXPECT_STREQ(detail::cufile_error_text(-5008), detail::cufile_error_text(5008));
  EXPECT_STREQ(detail::cufile_error_text(4242), "unknown cuFile error");
}

// ---- NUMA placement ----

TEST(Numa, BusIdToNodeThroughSysfs) {
  TempDir root;
  const auto entry = [&](const std::string& id, const std::string& text) {
    const fs::path dir = root.path() / "bus" / "pci" / "devices" / id;
    fs::create_directories(dir);
    std::ofstream(dir / "numa_node") << text;
  };
  entry("0000:3b:00.0", "1\n");
  entry("0000:5e:00.0", "-1\n");
  entry("0000:86:00.0", "lots\n");
  entry("0001:af:00.0", "3");
  EXPECT_EQ(detail::numa_node_of_pci_device("0000:3B:00.0", root.path()), 1);
  EXPECT_EQ(detail::numa_node_of_pci_device("00000000:3B:00.0", root.path()), 1);
  EXPECT_EQ(detail::numa_node_of_pci_device("0001:AF:00.0", root.path()), 3);
  EXPECT_EQ(detail::numa_node_of_pci_device("0000:5E:00.0", root.path()), -1);
  EXPECT_EQ(detail::numa_node_of_pci_device("0000:86:00.0", root.path()), -1);
  EXPECT_EQ(detail::numa_node_of_pci_device("0000:99:00.0", root.path()), -1);  // absent
  EXPECT_EQ(detail::numa_node_of_pci_device("", root.path()), -1);
  EXPECT_EQ(detail::numa_node_of_pci_device("../../../etc", root.path()), -1);
  EXPECT_EQ(detail::numa_node_of_pci_device("0000:3b:00.0", root.path() / "missing"), -1);
}

TEST(Numa, CudaDeviceBusIdAndNode) {
  if (real_gpu() || !cuda_available()) GTEST_SKIP() << "fake driver check";
  EXPECT_EQ(detail::cuda_pci_bus_id(0), "0000:10:00.0");
  EXPECT_EQ(detail::cuda_pci_bus_id(1), "0000:11:00.0");
  EXPECT_THROW((void)detail::cuda_pci_bus_id(7), UnsupportedError);
  // Whatever this machine's sysfs says about that address (usually nothing: -1).
  EXPECT_EQ(detail::cuda_device_numa_node(0),
            detail::numa_node_of_pci_device(detail::cuda_pci_bus_id(0)));
  EXPECT_EQ(detail::cuda_device_numa_node(7), -1);
}

bool same_affinity(const cpu_set_t& a, const cpu_set_t& b) { return CPU_EQUAL(&a, &b) != 0; }

TEST(Numa, PlacementIsSkippedOrUndone) {
  cpu_set_t before;
  CPU_ZERO(&before);
  ASSERT_EQ(sched_getaffinity(0, sizeof(before), &before), 0);
  {
    const detail::NumaPlacement none(-1);
    EXPECT_FALSE(none.placed());
  }
  {
    const detail::NumaPlacement node0(0);
    EXPECT_EQ(node0.placed(), detail::numa_library_available());
  }
  cpu_set_t after;
  CPU_ZERO(&after);
  ASSERT_EQ(sched_getaffinity(0, sizeof(after), &after), 0);
  EXPECT_TRUE(same_affinity(before, after));
  {
    const ScopedEnv missing("WARPLOAD_NUMA_LIB", "/nonexistent/libnuma.so.1");
    EXPECT_FALSE(detail::numa_library_available());
    const detail::NumaPlacement node0(0);
    EXPECT_FALSE(node0.placed());
  }
}

}  // namespace
}  // namespace warpload
