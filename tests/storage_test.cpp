// Storage backends, ReadTracker, fault injection and the host allocator.
#include "warpload/storage.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "storage/backends.hpp"
#include "storage/read_tracker.hpp"
#include "support/fault_storage.hpp"
#include "support/temp_dir.hpp"
#include "warpload/error.hpp"
#include "warpload/memory.hpp"

namespace warpload {
namespace {

using detail::ReadOperation;
using detail::ReadTracker;
using testing::Fault;
using testing::FaultInjectingStorage;
using testing::FaultPlan;
using testing::TempDir;

constexpr std::uint64_t kMiB = 1ULL << 20;

std::uint64_t align_up(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}
std::uint64_t align_down(std::uint64_t value, std::uint64_t alignment) {
  return value / alignment * alignment;
}

void write_random_file(const std::filesystem::path& path, std::uint64_t size, unsigned seed) {
  std::mt19937_64 random(seed);
  std::vector<std::uint64_t> words((size + 7) / 8);
  for (auto& word : words) word = random();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(words.data()), static_cast<std::streamsize>(size));
  ASSERT_TRUE(out.good());
}

// The independent reader: std::ifstream, the bytes in [offset, offset + length) that exist.
std::vector<std::byte> reference_bytes(const std::filesystem::path& path, std::uint64_t offset,
                                       std::uint64_t length) {
  const std::uint64_t size = std::filesystem::file_size(path);
  if (offset >= size) return {};
  std::vector<std::byte> bytes(std::min(length, size - offset));
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(in.good() || bytes.empty());
  return bytes;
}

void make_cold(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Destination memory from the host allocator, aligned for O_DIRECT.
std::shared_ptr<Buffer> destination(std::uint64_t size) {
  static const auto allocator = make_host_allocator();
  auto buffer = allocator->allocate(size, 4096);
  std::memset(buffer->data(), 0xA5, size);
  return buffer;
}

// A request plus the bytes it must produce.
struct Expected {
  ReadRequest request;
  std::vector<std::byte> bytes;
};

void expect_landed(const std::vector<Expected>& expected) {
  for (const Expected& e : expected) {
    if (e.bytes.empty()) continue;
    ASSERT_EQ(0, std::memcmp(e.request.dest, e.bytes.data(), e.bytes.size()))
        << e.request.file->path() << " [" << e.request.offset << ", +" << e.request.length << ")";
  }
}

struct BackendConfig {
  std::string label;
  std::string name;
  StorageOptions options;
  std::string skip_reason;  // why the backend cannot run here; "" when it can
};

// Every registered backend that reads into host memory, from the registry: a new backend is
// exercised here without editing this test. Backends that need device destinations or a
// mount have their own suites (gds_test, usrbio_test and loader_test against the emulators),
// as does the one that reads only URLs (object_storage_test, against real servers);
// one that cannot run on this machine is listed once and skipped with its reason. Each
// backend runs at its defaults and, where it reads the settings, across threads, block sizes
// (including ones that are not a multiple of the alignment), queue depths and O_DIRECT.
std::vector<BackendConfig> backend_configs() {
  std::vector<BackendConfig> configs;
  for (const BackendInfo& info : storage_backends()) {
    if (!info.host_destinations || info.needs_mount || info.reads_urls) continue;
    const std::string reason = backend_unavailable_reason(info.name);
    const auto add = [&](bool direct, unsigned threads, std::uint64_t block, unsigned depth) {
      StorageOptions options;
      options.direct = direct && info.takes_direct;
      options.threads = info.uses_threads ? threads : 0;
      options.block_size = info.uses_block_size ? block : 0;
      options.queue_depth = info.uses_queue_depth ? depth : 0;
      const std::string label = info.name + (options.direct ? "_direct" : "_buffered") + "_t" +
                                std::to_string(options.threads) + "_b" +
                                std::to_string(options.block_size) + "_q" +
                                std::to_string(options.queue_depth);
      const bool seen = std::any_of(configs.begin(), configs.end(),
                                    [&](const BackendConfig& c) { return c.label == label; });
      if (!seen) configs.push_back({label, info.name, options, reason});
    };
    add(false, 0, 0, 0);
    if (!reason.empty()) continue;
    for (const bool direct : {false, true}) {
      for (const std::uint64_t block :
           {std::uint64_t{4096}, std::uint64_t{12345}, std::uint64_t{0}}) {
        add(direct, 1, block, 1);
        add(direct, 3, block, 4);
        add(direct, 0, block, 0);
      }
    }
  }
  return configs;
}

class BackendTest : public ::testing::TestWithParam<BackendConfig> {
 protected:
  void SetUp() override {
    if (!GetParam().skip_reason.empty()) GTEST_SKIP() << GetParam().skip_reason;
  }
  std::unique_ptr<Storage> storage() const {
    return make_storage(GetParam().name, GetParam().options);
  }
  TempDir dir_;
};

TEST_P(BackendTest, ReadsWholeFilesOfEverySizeInOneCall) {
  const std::vector<std::uint64_t> sizes = {0,   1,     4095,     4096,           4097,    511,
                                            513, 65539, kMiB + 1, 3 * kMiB + 517, 5 * kMiB};
  auto storage = this->storage();
  std::vector<std::unique_ptr<StorageFile>> files;
  std::vector<std::shared_ptr<Buffer>> buffers;
  std::vector<Expected> expected;
  std::vector<ReadRequest> requests;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto path = dir_ / ("f" + std::to_string(i));
    write_random_file(path, sizes[i], static_cast<unsigned>(i));
    files.push_back(storage->open(path));
    StorageFile& file = *files.back();
    ASSERT_EQ(file.size(), sizes[i]);
    const std::uint64_t length = align_up(sizes[i], file.alignment());
    buffers.push_back(destination(std::max<std::uint64_t>(length, 1)));
    ReadRequest request{&file, 0, length, buffers.back()->data()};
    requests.push_back(request);
    expected.push_back({request, reference_bytes(path, 0, sizes[i])});
  }
  ReadControl control;
  storage->read(requests, &control);
  expect_landed(expected);
  std::uint64_t total = 0;
  for (const auto size : sizes) total += size;
  EXPECT_EQ(control.bytes_done.load(), total);
}

TEST_P(BackendTest, ReadsRandomRangesIncludingPastTheEnd) {
  auto storage = this->storage();
  std::mt19937_64 random(42);
  std::vector<std::unique_ptr<StorageFile>> files;
  for (const std::uint64_t size : {std::uint64_t{4 * kMiB + 77}, std::uint64_t{123457}}) {
    const auto path = dir_ / ("r" + std::to_string(size));
    write_random_file(path, size, static_cast<unsigned>(size));
    files.push_back(storage->open(path));
  }
  std::vector<std::shared_ptr<Buffer>> buffers;
  std::vector<Expected> expected;
  std::vector<ReadRequest> requests;
  for (int i = 0; i < 40; ++i) {
    StorageFile& file = *files[static_cast<std::size_t>(i) % files.size()];
    const std::uint64_t size = file.size();
    std::uint64_t offset = random() % (size + 100);
    std::uint64_t length = random() % (i % 5 == 0 ? size : 70000) + 1;
    if (i % 7 == 0) length = size + 5000;  // runs past the end of the file
    if (file.direct()) {                   // the aligned superset of the range
      const std::uint64_t end = align_up(offset + length, file.alignment());
      offset = align_down(offset, file.alignment());
      length = end - offset;
    }
    buffers.push_back(destination(length));
    ReadRequest request{&file, offset, length, buffers.back()->data()};
    requests.push_back(request);
    expected.push_back({request, reference_bytes(file.path(), offset, length)});
  }
  storage->read(requests, nullptr);
  expect_landed(expected);

  // Buffered reads leave the destination past the end of the file alone.
  for (const Expected& e : expected) {
    if (e.request.file->direct()) continue;
    for (std::uint64_t i = e.bytes.size(); i < e.request.length; ++i) {
      ASSERT_EQ(e.request.dest[i], std::byte{0xA5}) << e.request.file->path() << " at " << i;
    }
  }
}

TEST_P(BackendTest, CancelBeforeReadingThrowsCancelled) {
  auto storage = this->storage();
  write_random_file(dir_ / "c", kMiB, 1);
  auto file = storage->open(dir_ / "c");
  auto buffer = destination(kMiB);
  const ReadRequest request{file.get(), 0, kMiB, buffer->data()};
  ReadControl control;
  control.cancel = true;
  EXPECT_THROW(storage->read({&request, 1}, &control), CancelledError);
}

TEST_P(BackendTest, OpenMissingFileThrowsNotFoundNamingIt) {
  auto storage = this->storage();
  const auto path = dir_ / "no-such.safetensors";
  try {
    static_cast<void>(storage->open(path));
    FAIL() << "no throw";
  } catch (const NotFoundError& error) {
    EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos) << error.what();
  }
}

TEST_P(BackendTest, OpenDirectoryThrowsNamingIt) {
  auto storage = this->storage();
  try {
    static_cast<void>(storage->open(dir_.path()));
    FAIL() << "no throw";
  } catch (const Error& error) {
    EXPECT_TRUE(error.kind() == ErrorKind::kIo || error.kind() == ErrorKind::kUnsupported);
    EXPECT_NE(std::string(error.what()).find(dir_.path().string()), std::string::npos);
  }
}

TEST_P(BackendTest, ReadsDecoratedFiles) {
  // A wrapper with no fault: files have fd() == -1, served through read_some().
  FaultInjectingStorage storage(this->storage(), FaultPlan{});
  const std::uint64_t size = 2 * kMiB + 3;
  write_random_file(dir_ / "d", size, 9);
  auto file = storage.open(dir_ / "d");
  EXPECT_EQ(file->fd(), -1);
  const std::uint64_t length = align_up(size, file->alignment());
  auto buffer = destination(length);
  const ReadRequest request{file.get(), 0, length, buffer->data()};
  storage.read({&request, 1}, nullptr);
  expect_landed({{request, reference_bytes(dir_ / "d", 0, size)}});
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::ValuesIn(backend_configs()),
                         [](const auto& test) { return test.param.label; });

// ---- faults through FaultInjectingStorage, over posix and uring, buffered and direct ----

struct FaultCase {
  std::string backend;
  bool direct;
  Fault fault;
};

std::vector<FaultCase> fault_cases() {
  std::vector<FaultCase> cases;
  std::vector<std::string> backends = {"posix"};
  if (detail::uring_available()) backends.emplace_back("uring");
  for (const auto& backend : backends) {
    for (const bool direct : {false, true}) {
      for (const Fault fault :
           {Fault::kShortRead, Fault::kInterrupt, Fault::kTryAgain, Fault::kIoError}) {
        cases.push_back({backend, direct, fault});
      }
    }
  }
  return cases;
}

std::string fault_name(Fault fault) {
  switch (fault) {
    case Fault::kShortRead:
      return "ShortRead";
    case Fault::kInterrupt:
      return "EINTR";
    case Fault::kTryAgain:
      return "EAGAIN";
    case Fault::kIoError:
      return "EIO";
    case Fault::kCorrupt:
      return "Corrupt";
    case Fault::kNone:
      break;
  }
  return "None";
}

class FaultTest : public ::testing::TestWithParam<FaultCase> {
 protected:
  TempDir dir_;
};

TEST_P(FaultTest, RetriesOrReportsTheFailingOperation) {
  const FaultCase& c = GetParam();
  constexpr std::uint64_t kSize = 3 * kMiB + 123;
  constexpr std::uint64_t kBlock = 64 * 1024;
  constexpr std::uint64_t kFaultAt = kMiB + 4321;
  const auto path = dir_ / "model-00001.safetensors";
  write_random_file(path, kSize, 5);
  const auto other_path = dir_ / "other.safetensors";
  write_random_file(other_path, kSize, 6);

  StorageOptions options;
  options.direct = c.direct;
  options.threads = 2;
  options.block_size = kBlock;
  options.queue_depth = 8;
  FaultInjectingStorage storage(make_storage(c.backend, options), FaultPlan{c.fault, kFaultAt});
  auto file = storage.open(path);
  auto other = storage.open(other_path);
  ASSERT_EQ(file->direct(), c.direct);
  const std::uint64_t length = align_up(kSize, file->alignment());
  auto buffer = destination(length);
  auto other_buffer = destination(length);
  const ReadRequest requests[] = {{file.get(), 0, length, buffer->data()},
                                  {other.get(), 0, length, other_buffer->data()}};
  if (c.fault != Fault::kIoError) {
    storage.read(requests, nullptr);
    EXPECT_GE(storage.counters().injected.load(), 1U);
    expect_landed({{requests[0], reference_bytes(path, 0, kSize)},
                   {requests[1], reference_bytes(other_path, 0, kSize)}});
    return;
  }
  try {
    storage.read(requests, nullptr);
    FAIL() << "no throw";
  } catch (const IoError& error) {
    EXPECT_EQ(error.error_number(), EIO);
    // The failing operation is the block_size piece covering the fault (both files have a
    // fault at the same offset; either may be first).
    EXPECT_EQ(error.offset(), align_down(kFaultAt, kBlock));
    const std::string message = error.what();
    EXPECT_TRUE(message.find(path.string()) != std::string::npos ||
                message.find(other_path.string()) != std::string::npos)
        << message;
    EXPECT_NE(message.find(std::to_string(error.offset())), std::string::npos) << message;
  }
}

INSTANTIATE_TEST_SUITE_P(Faults, FaultTest, ::testing::ValuesIn(fault_cases()),
                         [](const auto& test) {
                           return test.param.backend +
                                  (test.param.direct ? "_direct_" : "_buffered_") +
                                  fault_name(test.param.fault);
                         });

// ---- a file that shrinks after open() ----

class TruncatedFileTest : public ::testing::TestWithParam<std::pair<std::string, bool>> {
 protected:
  TempDir dir_;
};

TEST_P(TruncatedFileTest, ThrowsUnexpectedEndOfFile) {
  const auto& [backend, direct] = GetParam();
  const auto path = dir_ / "shrinks";
  write_random_file(path, 2 * kMiB, 3);
  StorageOptions options;
  options.direct = direct;
  options.block_size = 256 * 1024;
  auto storage = make_storage(backend, options);
  auto file = storage->open(path);
  std::filesystem::resize_file(path, kMiB + 100);
  auto buffer = destination(2 * kMiB);
  const ReadRequest request{file.get(), 0, 2 * kMiB, buffer->data()};
  try {
    storage->read({&request, 1}, nullptr);
    FAIL() << "no throw";
  } catch (const IoError& error) {
    EXPECT_EQ(error.error_number(), 0);
    EXPECT_GE(error.offset(), kMiB);
    const std::string message = error.what();
    EXPECT_NE(message.find("unexpected end of file"), std::string::npos) << message;
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  }
}

std::vector<std::pair<std::string, bool>> truncation_cases() {
  std::vector<std::pair<std::string, bool>> cases = {
      {"posix", false}, {"posix", true}, {"auto", false}};
  if (detail::uring_available()) {
    cases.emplace_back("uring", false);
    cases.emplace_back("uring", true);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Backends, TruncatedFileTest, ::testing::ValuesIn(truncation_cases()),
                         [](const auto& test) {
                           return test.param.first + (test.param.second ? "_direct" : "_buffered");
                         });

// ---- cancel while reading ----

// Counts read_some calls in progress, and sets the cancel flag on its third read.
class CancellingFile final : public StorageFile {
 public:
  CancellingFile(std::unique_ptr<StorageFile> inner, ReadControl* control)
      : StorageFile(inner->path(), -1, inner->size(), inner->alignment()),
        inner_(std::move(inner)),
        control_(control) {}
  [[nodiscard]] std::int64_t read_some(std::byte* dest, std::size_t size,
                                       std::uint64_t offset) noexcept override {
    active.fetch_add(1);
    if (calls.fetch_add(1) == 2) control_->cancel = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const std::int64_t got = inner_->read_some(dest, size, offset);
    active.fetch_sub(1);
    return got;
  }
  std::atomic<int> active{0};
  std::atomic<int> calls{0};

 private:
  std::unique_ptr<StorageFile> inner_;
  ReadControl* control_;
};

class CancelTest : public ::testing::TestWithParam<std::string> {
 protected:
  TempDir dir_;
};

TEST_P(CancelTest, CancelWhileReadingStopsWithNothingInFlight) {
  for (const bool direct : {false, true}) {
    StorageOptions options;
    options.direct = direct;
    options.block_size = 64 * 1024;
    options.threads = 2;
    options.queue_depth = 8;
    auto storage = make_storage(GetParam(), options);
    std::vector<std::unique_ptr<StorageFile>> files;
    std::vector<std::shared_ptr<Buffer>> buffers;
    std::vector<ReadRequest> requests;
    ReadControl control;
    CancellingFile* cancelling = nullptr;
    for (int i = 0; i < 4; ++i) {
      const auto path = dir_ / ("c" + std::to_string(i));
      write_random_file(path, 8 * kMiB, static_cast<unsigned>(i));
      auto file = storage->open(path);
      if (i == 1) {  // one decorated file among real ones (which uring puts in its rings)
        auto wrapped = std::make_unique<CancellingFile>(std::move(file), &control);
        cancelling = wrapped.get();
        file = std::move(wrapped);
      }
      files.push_back(std::move(file));
      buffers.push_back(destination(8 * kMiB));
      requests.push_back({files.back().get(), 0, 8 * kMiB, buffers.back()->data()});
    }
    // Put the decorated file first so its reads start early.
    std::swap(requests[0], requests[1]);
    EXPECT_THROW(storage->read(requests, &control), CancelledError);
    EXPECT_EQ(cancelling->active.load(), 0);
    const int calls = cancelling->calls.load();
    buffers.clear();  // destinations gone: a read still in flight would now fault or corrupt
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(cancelling->calls.load(), calls);
    EXPECT_LT(control.bytes_done.load(), 32 * kMiB);
  }
}

std::vector<std::string> cancel_backends() {
  std::vector<std::string> names = {"posix", "auto"};
  if (detail::uring_available()) names.emplace_back("uring");
  return names;
}

INSTANTIATE_TEST_SUITE_P(Backends, CancelTest, ::testing::ValuesIn(cancel_backends()),
                         [](const auto& test) { return test.param; });

// ---- auto: routing by page-cache state ----

TEST(AutoStorageTest, ColdLargeFileGoesDirectWarmStaysBuffered) {
  TempDir dir;
  const std::uint64_t size = detail::kAutoDirectMinSize + 4097;
  const auto cold_path = dir / "cold";
  const auto warm_path = dir / "warm";
  const auto small_path = dir / "small";
  write_random_file(cold_path, size, 1);
  write_random_file(warm_path, size, 2);
  write_random_file(small_path, 1000, 3);
  make_cold(cold_path);
  make_cold(small_path);
  static_cast<void>(reference_bytes(warm_path, 0, size));  // into the page cache

  auto storage = make_storage("auto");
  EXPECT_EQ(storage->capabilities().name, "auto");
  auto cold = storage->open(cold_path);
  auto warm = storage->open(warm_path);
  auto small = storage->open(small_path);
  EXPECT_TRUE(cold->direct());  // ext4 has O_DIRECT; a tmpfs TMPDIR would keep it buffered
  EXPECT_FALSE(warm->direct());
  EXPECT_FALSE(small->direct());

  // One read() with both kinds: both groups run.
  auto cold_buffer = destination(align_up(size, cold->alignment()));
  auto warm_buffer = destination(size);
  auto small_buffer = destination(1000);
  const ReadRequest requests[] = {
      {cold.get(), 0, align_up(size, cold->alignment()), cold_buffer->data()},
      {warm.get(), 0, size, warm_buffer->data()},
      {small.get(), 0, 1000, small_buffer->data()}};
  ReadControl control;
  storage->read(requests, &control);
  expect_landed({{requests[0], reference_bytes(cold_path, 0, size)},
                 {requests[1], reference_bytes(warm_path, 0, size)},
                 {requests[2], reference_bytes(small_path, 0, 1000)}});
  EXPECT_EQ(control.bytes_done.load(), 2 * size + 1000);
}

TEST(AutoStorageTest, PageCacheFractionSeesResidency) {
  TempDir dir;
  const auto path = dir / "f";
  write_random_file(path, 8 * kMiB, 1);
  make_cold(path);
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_LT(detail::page_cache_fraction(fd, 8 * kMiB), 0.1);
  static_cast<void>(reference_bytes(path, 0, 8 * kMiB));
  EXPECT_GT(detail::page_cache_fraction(fd, 8 * kMiB), 0.9);
  ::close(fd);
}

// ---- factory ----

TEST(StorageFactoryTest, UnknownNameThrowsUnsupportedListingNames) {
  try {
    static_cast<void>(make_storage("floppy"));
    FAIL() << "no throw";
  } catch (const UnsupportedError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("floppy"), std::string::npos) << message;
    EXPECT_NE(message.find("posix"), std::string::npos) << message;
    EXPECT_NE(message.find("mmap"), std::string::npos) << message;
  }
}

TEST(StorageFactoryTest, EveryAvailableNameMakesABackendOfThatName) {
  const auto names = available_storage_names();
  ASSERT_GE(names.size(), 3U);
  EXPECT_EQ(names.front(), "auto");
  for (const auto& name : names) EXPECT_EQ(make_storage(name)->capabilities().name, name);
  EXPECT_TRUE(make_storage("mmap")->capabilities().owns_buffers);
  EXPECT_FALSE(make_storage("posix")->capabilities().owns_buffers);
}

TEST(BackendRegistryTest, EveryRegisteredBackendIsFoundAndDescribed) {
  const std::vector<BackendInfo> backends = storage_backends();
  ASSERT_FALSE(backends.empty());
  int baselines = 0;
  for (const BackendInfo& info : backends) {
    SCOPED_TRACE(info.name);
    const BackendInfo* found = find_backend(info.name);
    ASSERT_NE(found, nullptr);
    EXPECT_EQ(found->name, info.name);
    EXPECT_FALSE(info.summary.empty());
    EXPECT_TRUE(info.host_destinations || info.device_destinations);
    EXPECT_FALSE(info.takes_direct && info.picks_direct);
    baselines += info.baseline ? 1 : 0;
  }
  EXPECT_EQ(baselines, 1);
  EXPECT_EQ(find_backend("floppy"), nullptr);
  ASSERT_NE(find_backend(default_backend_name()), nullptr);
  EXPECT_TRUE(find_backend(default_backend_name())->host_destinations);
}

TEST(BackendRegistryTest, AvailableNamesAreTheHostBackendsWithoutAReason) {
  std::vector<std::string> expected;
  for (const BackendInfo& info : storage_backends()) {
    if (info.host_destinations && !info.reads_urls &&
        backend_unavailable_reason(info.name).empty()) {
      expected.push_back(info.name);
    }
  }
  EXPECT_EQ(available_storage_names(), expected);
  for (const std::string& name : expected) {
    const auto storage = make_storage(name);
    EXPECT_EQ(storage->capabilities().name, name);
    EXPECT_EQ(storage->capabilities().owns_buffers, find_backend(name)->owns_buffers) << name;
    EXPECT_EQ(storage->capabilities().device_memory, find_backend(name)->device_destinations);
  }
}

TEST(BackendRegistryTest, AnUnavailableBackendSaysWhyAndMakeStorageThrowsIt) {
  const std::string floppy = backend_unavailable_reason("floppy");
  EXPECT_NE(floppy.find("floppy"), std::string::npos) << floppy;
  EXPECT_NE(floppy.find("posix"), std::string::npos) << floppy;

  // The 3FS client library, pointed at a path that does not exist.
  const std::string missing = "/nonexistent/warpload-test/libhf3fs_api_shared.so";
  ASSERT_EQ(::setenv("WARPLOAD_HF3FS_LIB", missing.c_str(), 1), 0);
  const std::string reason = backend_unavailable_reason("3fs");
  EXPECT_NE(reason.find("3fs"), std::string::npos) << reason;
  EXPECT_NE(reason.find(missing), std::string::npos) << reason;
  EXPECT_NE(reason.find("WARPLOAD_HF3FS_LIB"), std::string::npos) << reason;
  try {
    static_cast<void>(make_storage("3fs"));
    ADD_FAILURE() << "made a backend whose library is missing";
  } catch (const UnsupportedError& e) {
    EXPECT_EQ(std::string(e.what()), reason);
  }
  ::unsetenv("WARPLOAD_HF3FS_LIB");
}

TEST(StorageFactoryTest, DirectFilesReportTheirAlignment) {
  TempDir dir;
  write_random_file(dir / "f", 10000, 1);
  StorageOptions options;
  options.direct = true;
  auto file = make_storage("posix", options)->open(dir / "f");
  EXPECT_EQ(file->size(), 10000U);
  if (file->direct()) {
    EXPECT_GE(file->alignment(), 512U);
    EXPECT_EQ(file->alignment() & (file->alignment() - 1), 0U);
  }
  EXPECT_EQ(make_storage("posix")->open(dir / "f")->alignment(), 1U);
}

// ---- ReadTracker, fed synthetic results ----

// A file that is never read: the tracker only needs its path, size and alignment.
class FakeFile final : public StorageFile {
 public:
  FakeFile(std::uint64_t size, std::size_t alignment)
      : StorageFile("/fake/model.safetensors", -1, size, alignment) {}
};

struct TrackerFixture {
  TrackerFixture(std::uint64_t size, std::size_t alignment, std::uint64_t offset,
                 std::uint64_t length, std::uint64_t block)
      : file(size, alignment),
        buffer(length),
        request{&file, offset, length, buffer.data()},
        tracker({&request, 1}, block, &control) {}
  FakeFile file;
  std::vector<std::byte> buffer;
  ReadRequest request;
  ReadControl control;
  ReadTracker tracker;
};

std::vector<ReadOperation> all_operations(ReadTracker& tracker) {
  std::vector<ReadOperation> ops;
  ReadOperation op;
  while (tracker.next(&op)) ops.push_back(op);
  return ops;
}

TEST(ReadTrackerTest, SplitsBufferedRequestsAndStopsAtEndOfFile) {
  TrackerFixture t(10000, 1, 100, 20000, 4096);
  const auto ops = all_operations(t.tracker);
  ASSERT_EQ(ops.size(), 3U);  // 9900 bytes exist past offset 100
  EXPECT_EQ(ops[0].offset, 100U);
  EXPECT_EQ(ops[0].length, 4096U);
  EXPECT_EQ(ops[1].dest, t.buffer.data() + 4096);
  EXPECT_EQ(ops[2].offset, 100U + 8192);
  EXPECT_EQ(ops[2].length, 9900U - 8192);
  EXPECT_EQ(ops[2].required, ops[2].length);
}

TEST(ReadTrackerTest, SplitsDirectRequestsOnAlignedBoundaries) {
  TrackerFixture t(10000, 512, 0, 10240, 1000);  // block rounds up to 1024
  const auto ops = all_operations(t.tracker);
  ASSERT_EQ(ops.size(), 10U);
  for (const auto& op : ops) {
    EXPECT_EQ(op.offset % 512, 0U);
    EXPECT_EQ(op.length % 512, 0U);
  }
  EXPECT_EQ(ops.back().offset, 9216U);
  EXPECT_EQ(ops.back().length, 1024U);
  EXPECT_EQ(ops.back().required, 10000U - 9216);
}

TEST(ReadTrackerTest, SkipsRequestsWithNothingToReadAndMapsTheRest) {
  FakeFile file(5000, 1);
  std::vector<std::byte> buffer(20000);
  const ReadRequest requests[] = {{&file, 6000, 100, buffer.data()},  // past the end
                                  {&file, 0, 3000, buffer.data() + 100},
                                  {&file, 0, 0, buffer.data()},
                                  {&file, 4000, 2000, buffer.data() + 5000}};
  ReadTracker tracker(requests, 2000, nullptr);
  EXPECT_EQ(tracker.operation_count(), 3U);
  const auto ops = all_operations(tracker);
  ASSERT_EQ(ops.size(), 3U);
  EXPECT_EQ(ops[0].dest, buffer.data() + 100);
  EXPECT_EQ(ops[1].offset, 2000U);
  EXPECT_EQ(ops[1].length, 1000U);
  EXPECT_EQ(ops[2].offset, 4000U);
  EXPECT_EQ(ops[2].length, 1000U);
  tracker.finish();
}

TEST(ReadTrackerTest, FullShortAndEndOfFileResults) {
  TrackerFixture t(10000, 1, 0, 10000, 8192);
  auto ops = all_operations(t.tracker);
  ASSERT_EQ(ops.size(), 2U);
  EXPECT_EQ(t.tracker.complete(ops[0], 100), ReadTracker::Step::kResubmit);
  EXPECT_EQ(ops[0].offset, 100U);
  EXPECT_EQ(ops[0].length, 8092U);
  EXPECT_EQ(ops[0].dest, t.buffer.data() + 100);
  EXPECT_EQ(t.tracker.complete(ops[0], 8092), ReadTracker::Step::kDone);
  EXPECT_EQ(t.tracker.complete(ops[1], 1808), ReadTracker::Step::kDone);
  EXPECT_EQ(t.control.bytes_done.load(), 10000U);
  t.tracker.finish();
}

TEST(ReadTrackerTest, DirectShortReadRestartsAtTheAlignedPoint) {
  TrackerFixture t(1 << 20, 4096, 0, 1 << 20, 1 << 20);
  auto ops = all_operations(t.tracker);
  ASSERT_EQ(ops.size(), 1U);
  EXPECT_EQ(t.tracker.complete(ops[0], 10000), ReadTracker::Step::kResubmit);
  EXPECT_EQ(ops[0].offset, 8192U);
  EXPECT_EQ(ops[0].dest, t.buffer.data() + 8192);
  EXPECT_EQ(ops[0].length, (1U << 20) - 8192);
  // Less than one block: the same read again, until the bound on reads without progress.
  for (unsigned i = 0; i < ReadTracker::kMaxStalledRetries; ++i) {
    ASSERT_EQ(t.tracker.complete(ops[0], 100), ReadTracker::Step::kResubmit);
  }
  EXPECT_EQ(ops[0].offset, 8192U);
  EXPECT_EQ(t.tracker.complete(ops[0], 100), ReadTracker::Step::kDone);
  EXPECT_TRUE(t.tracker.stopped());
  try {
    t.tracker.finish();
    FAIL() << "no throw";
  } catch (const IoError& error) {
    EXPECT_EQ(error.offset(), 8192U);
    EXPECT_EQ(error.error_number(), EIO);
  }
}

TEST(ReadTrackerTest, DirectTailShortAtEndOfFileIsSuccess) {
  TrackerFixture t(5000, 512, 0, 5120, 8192);
  auto ops = all_operations(t.tracker);
  ASSERT_EQ(ops.size(), 1U);
  EXPECT_EQ(ops[0].length, 5120U);
  EXPECT_EQ(ops[0].required, 5000U);
  EXPECT_EQ(t.tracker.complete(ops[0], 1000), ReadTracker::Step::kResubmit);
  EXPECT_EQ(ops[0].offset, 512U);
  EXPECT_EQ(ops[0].required, 4488U);
  EXPECT_EQ(t.tracker.complete(ops[0], 4488), ReadTracker::Step::kDone);
  EXPECT_EQ(t.control.bytes_done.load(), 5000U);
  t.tracker.finish();
}

TEST(ReadTrackerTest, InterruptedAndTryAgainAreRetried) {
  TrackerFixture t(4096, 1, 0, 4096, 4096);
  auto ops = all_operations(t.tracker);
  ASSERT_EQ(ops.size(), 1U);
  EXPECT_EQ(t.tracker.complete(ops[0], -EINTR), ReadTracker::Step::kResubmit);
  EXPECT_EQ(t.tracker.complete(ops[0], -EAGAIN), ReadTracker::Step::kResubmit);
  EXPECT_EQ(ops[0].offset, 0U);
  EXPECT_EQ(ops[0].length, 4096U);
  EXPECT_EQ(t.tracker.complete(ops[0], 4096), ReadTracker::Step::kDone);
  t.tracker.finish();
}

TEST(ReadTrackerTest, PersistentEintrEventuallyFails) {
  TrackerFixture t(4096, 1, 0, 4096, 4096);
  auto ops = all_operations(t.tracker);
  ReadTracker::Step step = ReadTracker::Step::kResubmit;
  unsigned tries = 0;
  while (step == ReadTracker::Step::kResubmit && tries < 1000) {
    step = t.tracker.complete(ops[0], -EINTR);
    ++tries;
  }
  EXPECT_EQ(tries, ReadTracker::kMaxStalledRetries + 1);
  EXPECT_THROW(t.tracker.finish(), IoError);
}

TEST(ReadTrackerTest, ZeroBeforeTheEndIsUnexpectedEndOfFile) {
  TrackerFixture t(10000, 1, 0, 10000, 4096);
  auto ops = all_operations(t.tracker);
  EXPECT_EQ(t.tracker.complete(ops[1], 0), ReadTracker::Step::kDone);
  EXPECT_TRUE(t.tracker.stopped());
  ReadOperation later;
  EXPECT_FALSE(t.tracker.next(&later));
  try {
    t.tracker.finish();
    FAIL() << "no throw";
  } catch (const IoError& error) {
    EXPECT_EQ(error.error_number(), 0);
    EXPECT_EQ(error.offset(), 4096U);
    EXPECT_NE(std::string(error.what()).find("/fake/model.safetensors"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("unexpected end of file"), std::string::npos);
  }
}

TEST(ReadTrackerTest, ErrorNamesFileAndOffsetAndFirstOneWins) {
  TrackerFixture t(10000, 1, 0, 10000, 4096);
  auto ops = all_operations(t.tracker);
  EXPECT_EQ(t.tracker.complete(ops[2], -EIO), ReadTracker::Step::kDone);
  EXPECT_EQ(t.tracker.complete(ops[0], -ENOSPC), ReadTracker::Step::kDone);
  // Results arriving after the failure are dropped, never resubmitted.
  EXPECT_EQ(t.tracker.complete(ops[1], 10), ReadTracker::Step::kDone);
  try {
    t.tracker.finish();
    FAIL() << "no throw";
  } catch (const IoError& error) {
    EXPECT_EQ(error.error_number(), EIO);
    EXPECT_EQ(error.offset(), 8192U);
    const std::string message = error.what();
    EXPECT_NE(message.find("/fake/model.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find("8192"), std::string::npos) << message;
    EXPECT_NE(message.find(std::strerror(EIO)), std::string::npos) << message;
  }
}

TEST(ReadTrackerTest, CancelStopsHandingOutWork) {
  TrackerFixture t(10000, 1, 0, 10000, 4096);
  ReadOperation op;
  ASSERT_TRUE(t.tracker.next(&op));
  t.control.cancel = true;
  EXPECT_TRUE(t.tracker.stopped());
  EXPECT_FALSE(t.tracker.next(&op));
  EXPECT_EQ(t.tracker.complete(op, 100), ReadTracker::Step::kDone);  // not resubmitted
  EXPECT_THROW(t.tracker.finish(), CancelledError);
}

TEST(ReadTrackerTest, LinkedTrackersStopTogetherAndOnlyTheFailingOneThrows) {
  FakeFile file(10000, 1);
  std::vector<std::byte> buffer(10000);
  const ReadRequest request{&file, 0, 10000, buffer.data()};
  std::atomic<bool> stop{false};
  ReadTracker first({&request, 1}, 4096, nullptr, &stop);
  ReadTracker second({&request, 1}, 4096, nullptr, &stop);
  ReadOperation op;
  ASSERT_TRUE(first.next(&op));
  EXPECT_EQ(first.complete(op, -EIO), ReadTracker::Step::kDone);
  EXPECT_TRUE(second.stopped());
  EXPECT_FALSE(second.next(&op));
  EXPECT_NO_THROW(second.finish());
  EXPECT_THROW(first.finish(), IoError);
}

// ---- host allocator ----

bool is_mapped(const void* address) {
  unsigned char present = 0;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  void* start = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(address) & ~(page - 1));
  return ::mincore(start, 1, &present) == 0;
}

TEST(HostAllocatorTest, HonoursAlignmentAndIsWritable) {
  const auto allocator = make_host_allocator();
  EXPECT_EQ(allocator->kind(), MemoryKind::kHost);
  for (const std::size_t alignment :
       {std::size_t{1}, std::size_t{8}, std::size_t{64}, std::size_t{4096}, std::size_t{65536},
        std::size_t{2} << 20, std::size_t{64} << 20}) {
    for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{4097},
                                   std::size_t{5} << 20, std::size_t{33} << 20}) {
      const auto buffer = allocator->allocate(size, alignment);
      ASSERT_NE(buffer->data(), nullptr);
      EXPECT_EQ(buffer->size(), size);
      EXPECT_EQ(buffer->kind(), MemoryKind::kHost);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer->data()) % alignment, 0U)
          << size << " @ " << alignment;
      std::memset(buffer->data(), 0x5A, size);
      if (size > 0) {
        EXPECT_EQ(buffer->data()[size - 1], std::byte{0x5A});
      }
    }
  }
}

TEST(HostAllocatorTest, HugeBufferIsUsableAndUnmappedWhenReleased) {
  const auto allocator = make_host_allocator();
  const std::size_t size = std::size_t{8} << 30;  // address space only; touched sparsely
  auto buffer = allocator->allocate(size, 4096);
  std::byte* data = buffer->data();
  for (std::size_t at = 0; at < size; at += std::size_t{256} << 20) data[at] = std::byte{1};
  data[size - 1] = std::byte{2};
  EXPECT_TRUE(is_mapped(data));
  buffer.reset();
  EXPECT_FALSE(is_mapped(data));
  EXPECT_FALSE(is_mapped(data + size - 1));
}

TEST(HostAllocatorTest, BigBuffersGetTransparentHugePages) {
  std::ifstream mode_file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(mode_file, mode);
  if (mode.find("[never]") != std::string::npos || mode.empty()) {
    GTEST_SKIP() << "transparent huge pages are off on this machine";
  }
  const auto allocator = make_host_allocator();
  const std::size_t size = std::size_t{64} << 20;
  auto buffer = allocator->allocate(size, 64);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer->data()) % (2U << 20), 0U);
  std::memset(buffer->data(), 1, size);
  // Find the buffer's mapping in smaps and read its AnonHugePages.
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  std::uint64_t huge_kib = 0;
  const auto start = reinterpret_cast<std::uintptr_t>(buffer->data());
  while (std::getline(smaps, line)) {
    const auto dash = line.find('-');
    if (dash != std::string::npos && dash < 17 && line.find(' ') > dash) {
      const std::uintptr_t from = std::stoull(line.substr(0, dash), nullptr, 16);
      const std::uintptr_t to = std::stoull(line.substr(dash + 1), nullptr, 16);
      inside = from <= start && start < to;
    } else if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      huge_kib = std::stoull(line.substr(14));
    }
  }
  EXPECT_GT(huge_kib, 0U) << "no transparent huge pages behind a madvised 64 MiB buffer";
}

TEST(HostAllocatorTest, NoHugePagesOptionStillAligns) {
  const auto allocator = make_host_allocator({.huge_pages = false});
  const auto buffer = allocator->allocate(std::size_t{5} << 20, 4096);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer->data()) % 4096, 0U);
  std::memset(buffer->data(), 0, buffer->size());
}

TEST(HostAllocatorTest, ImpossibleSizeThrowsOutOfMemoryNamingTheSize) {
  const auto allocator = make_host_allocator();
  const std::size_t size = std::size_t{1} << 60;
  try {
    static_cast<void>(allocator->allocate(size, 4096));
    FAIL() << "no throw";
  } catch (const OutOfMemoryError& error) {
    EXPECT_NE(std::string(error.what()).find(std::to_string(size)), std::string::npos);
  }
}

}  // namespace
}  // namespace warpload
