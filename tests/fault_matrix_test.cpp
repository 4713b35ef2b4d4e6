// The fault matrix of issue 7: every backend crossed with every fault, one table-driven test.
//
// Each cell loads one ~1 MiB file (64 KiB chunks, an unpadded header so the data section starts
// at an odd offset) under one fault and must end in exactly one of two ways: byte-exact success
// (compared with tests/support/reference_reader.hpp, which reads the file on its own) where a
// retry is right, or a precise error (its type, naming the file, the offset where one applies).
// After every cell nothing may be left behind: descriptors (/proc/self/fd), shared-memory
// mappings (/proc/self/maps), host buffers (a counting allocator), the fake CUDA driver's live
// allocations and streams. Every cell runs under a watchdog: a hang aborts the binary naming the
// cell. The test prints the matrix ("fault-matrix:" lines) for docs/reliability.md.
//
// Where each fault is injected (the honest part; docs/reliability.md quotes this):
//   EIO, short reads, EINTR  posix/uring/mmap/auto/GPU staged: a decorator (StorageWrapper) whose
//                            files answer read_some(). posix and the staged pipeline keep their
//                            real engine (ReadTracker; only pread is replaced); uring serves a
//                            decorated file (fd -1) with read_some() on its worker threads, so its
//                            ring is NOT exercised by these cells; mmap copies with read_some().
//                            3fs: the USRBIO emulator's switches (the real rings).
//                            gds: the fake cuFile's switches (the real gds engine).
//   ENOMEM                   an Allocator that throws OutOfMemoryError (host loads); the fake
//                            driver's FAKE_CUDA_FAIL_ALLOC_AFTER=0 (device loads).
//   EMFILE                   setrlimit(RLIMIT_NOFILE) at the lowest free descriptor between add()
//                            and load(), restored by a guard on every path.
//   truncated / replaced /   a wrapper whose open() opens the real file and then changes it on
//   grows                    disk: the real engine (ring, O_DIRECT, mapping, 3FS registration)
//                            reads a file that changed after it was opened.
//   /dev/shm full            3fs: the emulator's WARPLOAD_EMU_SHM_LIMIT_BYTES.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "storage/hf3fs_shim.hpp"
#include "support/fault_storage.hpp"
#include "support/process_counters.hpp"
#include "support/random_checkpoint.hpp"
#include "support/reference_reader.hpp"
#include "support/temp_dir.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

// memcmp of n bytes; n == 0 is equal whatever the pointers (an empty vector's data() may be null).
bool same_bytes(const void* a, const void* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n) == 0;
}

namespace fs = std::filesystem;
using testing::count_entries;
using testing::count_shm_mappings;
using testing::FaultInjectingStorage;
using testing::TempDir;

constexpr std::uint64_t kChunk = 64 << 10;
constexpr auto kCellDeadline = std::chrono::seconds(30);

// The shims read their library variables once, at first use: choose the doubles before any test.
const bool kDoublesSelected = [] {
  setenv("WARPLOAD_CUDA_LIB", WARPLOAD_FAKE_CUDA, 1);
  setenv("WARPLOAD_CUFILE_LIB", WARPLOAD_FAKE_CUFILE, 1);
  setenv("FAKE_CUFILE_CUDA_LIB", WARPLOAD_FAKE_CUDA, 1);
  setenv("WARPLOAD_HF3FS_LIB", WARPLOAD_USRBIO_EMULATOR, 1);
  return true;
}();

// ---- test doubles local to the matrix ----

// Host memory that counts its live buffers: every buffer a failed load made must be gone.
class CountingAllocator final : public Allocator {
 public:
  explicit CountingAllocator(bool fail) : inner_(make_host_allocator()), fail_(fail) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return MemoryKind::kHost; }
  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size, std::size_t alignment) override {
    if (fail_)
      throw OutOfMemoryError("fault matrix: allocator refuses " + std::to_string(size) +
                             " bytes (ENOMEM)");
    return std::make_shared<CountedBuffer>(inner_->allocate(size, alignment), live_);
  }
  [[nodiscard]] long live() const noexcept { return live_->load(); }

 private:
  class CountedBuffer final : public Buffer {
   public:
    CountedBuffer(std::shared_ptr<Buffer> inner, std::shared_ptr<std::atomic<long>> live)
        : Buffer(inner->data(), inner->size(), MemoryKind::kHost),
          inner_(std::move(inner)),
          live_(std::move(live)) {
      live_->fetch_add(1);
    }
    ~CountedBuffer() override { live_->fetch_sub(1); }

   private:
    std::shared_ptr<Buffer> inner_;
    std::shared_ptr<std::atomic<long>> live_;
  };
  std::shared_ptr<Allocator> inner_;
  bool fail_;
  std::shared_ptr<std::atomic<long>> live_ = std::make_shared<std::atomic<long>>(0);
};

// Faults that repeat, which FaultInjectingStorage (one-shot short read / EINTR) does not model:
//   short reads: every third read_some returns at most `cap` bytes (at most 200 times);
//   EINTR storm: the first `storm` reads covering `offset` return -EINTR, back to back.
struct RepeatPlan {
  std::uint64_t short_cap = 0;
  unsigned storm = 0;
  std::uint64_t offset = 0;
};

class RepeatingFaultFile final : public StorageFile {
 public:
  RepeatingFaultFile(std::unique_ptr<StorageFile> inner, RepeatPlan plan,
                     std::shared_ptr<std::atomic<unsigned>> injected)
      : StorageFile(inner->path(), -1, inner->size(), inner->alignment()),
        inner_(std::move(inner)),
        plan_(plan),
        injected_(std::move(injected)) {}
  [[nodiscard]] int fd() const noexcept override { return -1; }
  [[nodiscard]] std::int64_t read_some(std::byte* dest, std::size_t size,
                                       std::uint64_t offset) noexcept override {
    if (plan_.storm > 0 && offset <= plan_.offset && plan_.offset - offset < size &&
        interrupts_.fetch_add(1) < plan_.storm) {
      injected_->fetch_add(1);
      return -EINTR;
    }
    const std::int64_t got = inner_->read_some(dest, size, offset);
    if (plan_.short_cap > 0 && got > static_cast<std::int64_t>(plan_.short_cap) &&
        calls_.fetch_add(1) % 3 == 0 && injected_->load() < 200) {
      injected_->fetch_add(1);
      return static_cast<std::int64_t>(plan_.short_cap);
    }
    return got;
  }

 private:
  std::unique_ptr<StorageFile> inner_;
  RepeatPlan plan_;
  std::shared_ptr<std::atomic<unsigned>> injected_;
  std::atomic<unsigned> calls_{0};
  std::atomic<unsigned> interrupts_{0};
};

class RepeatingFaultStorage final : public StorageWrapper {
 public:
  RepeatingFaultStorage(std::unique_ptr<Storage> target, RepeatPlan plan)
      : StorageWrapper(std::move(target)), plan_(plan) {}
  [[nodiscard]] std::unique_ptr<StorageFile> open(const fs::path& path) override {
    return std::make_unique<RepeatingFaultFile>(target().open(path), plan_, injected_);
  }
  [[nodiscard]] unsigned injected() const noexcept { return injected_->load(); }

 private:
  RepeatPlan plan_;
  std::shared_ptr<std::atomic<unsigned>> injected_ = std::make_shared<std::atomic<unsigned>>(0);
};

// Opens the real file through the real backend, then runs `change` on it (truncate, replace,
// append) and hands the backend's own file back: everything after open is the real engine.
class ChangeAfterOpenStorage final : public StorageWrapper {
 public:
  ChangeAfterOpenStorage(std::unique_ptr<Storage> target, std::function<void()> change)
      : StorageWrapper(std::move(target)), change_(std::move(change)) {}
  [[nodiscard]] std::unique_ptr<StorageFile> open(const fs::path& path) override {
    std::unique_ptr<StorageFile> file = target().open(path);
    change_();
    return file;
  }

 private:
  std::function<void()> change_;
};

// Sets (and on scope exit unsets) an environment switch, then re-reads the doubles' switches.
class ScopedSwitch {
 public:
  ScopedSwitch(const char* name, const std::string& value, std::function<void()> reread)
      : name_(name), reread_(std::move(reread)) {
    setenv(name, value.c_str(), 1);
    if (reread_) reread_();
  }
  ~ScopedSwitch() {
    unsetenv(name_);
    if (reread_) reread_();
  }
  ScopedSwitch(const ScopedSwitch&) = delete;
  ScopedSwitch& operator=(const ScopedSwitch&) = delete;

 private:
  const char* name_;
  std::function<void()> reread_;
};

// RLIMIT_NOFILE at the lowest free descriptor (so the next open fails with EMFILE), restored
// by the destructor on every path (the limit is process-wide: other tests share it).
class LowFdLimit {
 public:
  LowFdLimit() {
    if (getrlimit(RLIMIT_NOFILE, &saved_) != 0) throw std::runtime_error("getrlimit failed");
    const int lowest_free = fcntl(0, F_DUPFD, 0);
    if (lowest_free < 0) throw std::runtime_error("F_DUPFD failed");
    ::close(lowest_free);
    rlimit low = saved_;
    low.rlim_cur = static_cast<rlim_t>(lowest_free);
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) throw std::runtime_error("setrlimit failed");
  }
  ~LowFdLimit() { static_cast<void>(setrlimit(RLIMIT_NOFILE, &saved_)); }
  LowFdLimit(const LowFdLimit&) = delete;
  LowFdLimit& operator=(const LowFdLimit&) = delete;

 private:
  rlimit saved_{};
};

// Aborts the binary, naming the cell, when a cell runs past its deadline (a hang cannot be
// recovered from inside the process).
class Watchdog {
 public:
  Watchdog() : thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  void arm(const std::string& cell) {
    const std::lock_guard<std::mutex> lock(mutex_);
    cell_ = cell;
    deadline_ = std::chrono::steady_clock::now() + kCellDeadline;
    armed_ = true;
    cv_.notify_all();
  }
  void disarm() {
    const std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      if (cv_.wait_until(lock, deadline_) == std::cv_status::timeout && armed_ && !stop_ &&
          std::chrono::steady_clock::now() >= deadline_) {
        std::fprintf(stderr, "fault-matrix: cell '%s' hung past %lld s\n", cell_.c_str(),
                     static_cast<long long>(kCellDeadline.count()));
        std::abort();
      }
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::string cell_;
  std::chrono::steady_clock::time_point deadline_;
  bool armed_ = false;
  bool stop_ = false;
  std::thread thread_;
};

// ---- the fake drivers' test-only entry points ----

struct Fakes {
  using ResetFn = void (*)();
  using CountFn = long long (*)();
  ResetFn cuda_reset = nullptr;
  ResetFn cufile_reset = nullptr;
  CountFn live_allocations = nullptr;
  CountFn live_pinned = nullptr;
  CountFn live_streams = nullptr;
  static const Fakes& get() {
    static const Fakes fakes = [] {
      Fakes f;
      if (!cuda_available()) return f;
      void* cuda = dlopen(WARPLOAD_FAKE_CUDA, RTLD_NOW | RTLD_NOLOAD);
      if (cuda != nullptr) {
        f.cuda_reset = reinterpret_cast<ResetFn>(dlsym(cuda, "fake_cuda_reset"));
        f.live_allocations = reinterpret_cast<CountFn>(dlsym(cuda, "fake_cuda_live_allocations"));
        f.live_pinned = reinterpret_cast<CountFn>(dlsym(cuda, "fake_cuda_live_pinned_allocations"));
        f.live_streams = reinterpret_cast<CountFn>(dlsym(cuda, "fake_cuda_live_streams"));
      }
      void* cufile = dlopen(WARPLOAD_FAKE_CUFILE, RTLD_NOW);
      if (cufile != nullptr) {
        f.cufile_reset = reinterpret_cast<ResetFn>(dlsym(cufile, "fake_cufile_reset"));
      }
      return f;
    }();
    return fakes;
  }
  [[nodiscard]] bool usable() const noexcept {
    return cuda_reset && cufile_reset && live_allocations && live_pinned && live_streams;
  }
  [[nodiscard]] std::vector<long long> live() const {
    return {live_allocations(), live_pinned(), live_streams()};
  }
};

void reread_cuda() { Fakes::get().cuda_reset(); }
void reread_cufile() { Fakes::get().cufile_reset(); }

// ---- the matrix ----

struct Backend {
  std::string label;
  std::string storage;  // make_storage name
  bool direct = false;
  std::string device = "cpu";
};

enum class FaultKind {
  kEioFirst,
  kEioMiddle,
  kEioLast,
  kShort1,
  kShortOdd,
  kShortUnderChunk,
  kEintrStorm,
  kEnomem,
  kEmfile,
  kTruncated,
  kReplaced,
  kGrows,
  kShmFull,
};

struct FaultRow {
  FaultKind kind;
  std::string label;
};

// The file every cell loads and what it must hold.
struct Checkpoint {
  fs::path path;
  std::uint64_t data_offset = 0;
  std::uint64_t size = 0;
  std::map<std::string, std::string> expected;  // by the reference reader
};

// `header_alignment` 1: the data section at an odd offset; gds needs 8 (else the loader stages).
Checkpoint write_checkpoint(const fs::path& path, std::size_t header_alignment) {
  testing::TensorBytes written;
  testing::write_random_file(path,
                             {{"embed", DType::kBF16, {300, 700}},
                              {"q_proj", DType::kF32, {97, 331}},
                              {"empty", DType::kF32, {0, 4}},
                              {"lm_head", DType::kU8, {511, 613}}},
                             7, written, header_alignment);
  Checkpoint c;
  c.path = path;
  const testing::ReferenceFile ref = testing::read_reference_header(path);
  c.data_offset = ref.data_offset;
  c.size = fs::file_size(path);
  for (const auto& [name, tensor] : ref.tensors) {
    c.expected[name] = testing::read_reference_tensor(path, ref, name);
  }
  return c;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Whether this file system takes O_DIRECT (tmpfs does not).
bool direct_io_works(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

class FaultMatrix {
 public:
  FaultMatrix() {
    fs::create_directory(dir_.path() / "3fs-virt");  // the emulator's mount marker
    file_ = write_checkpoint(dir_ / "model.safetensors", 1);
    emulator_ = fs::exists(WARPLOAD_USRBIO_EMULATOR) && detail::hf3fs_available();
    gpu_ = cuda_available() && Fakes::get().usable();
  }

  std::string run(const Backend& backend, const FaultRow& fault) {
    if (const std::optional<std::string> reason = not_applicable(backend, fault)) {
      return "n/a: " + *reason;
    }
    // Fresh copy of the pristine file: earlier cells truncate, replace and grow it.
    file_ = write_checkpoint(file_.path, is_gds(backend) ? 8 : 1);
    const std::size_t fds = count_entries("/proc/self/fd");
    const std::size_t shm = count_shm_mappings();
    const std::vector<long long> live = gpu_ ? Fakes::get().live() : std::vector<long long>{};
    std::string outcome;
    {
      auto allocator = std::make_shared<CountingAllocator>(fault.kind == FaultKind::kEnomem);
      outcome = load(backend, fault, allocator);
      EXPECT_EQ(allocator->live(), 0) << "host buffers leaked";
    }
    EXPECT_EQ(count_entries("/proc/self/fd"), fds) << "descriptors leaked";
    EXPECT_EQ(count_shm_mappings(), shm) << "shared memory leaked";
    EXPECT_EQ(count_entries((dir_.path() / "3fs-virt" / "iovs").c_str()), 0u) << "iov links";
    if (gpu_) {
      EXPECT_EQ(Fakes::get().live(), live) << "device/pinned/stream objects leaked";
    }
    return outcome;
  }

 private:
  [[nodiscard]] bool is_3fs(const Backend& b) const { return b.storage == "3fs"; }
  [[nodiscard]] bool is_gds(const Backend& b) const { return b.storage == "gds"; }
  [[nodiscard]] bool on_device(const Backend& b) const { return b.device != "cpu"; }

  std::optional<std::string> not_applicable(const Backend& b, const FaultRow& f) const {
    if (is_3fs(b) && !emulator_) return "USRBIO emulator not built";
    if (on_device(b) && !gpu_) return "fake CUDA driver not usable";
    if (b.direct && !direct_io_works(file_.path)) return "this file system refuses O_DIRECT";
    if (f.kind == FaultKind::kShmFull && !is_3fs(b)) return "uses no shared memory";
    if (is_3fs(b) && f.kind == FaultKind::kShort1) {
      return "a 1-byte cap is ~1M emulated I/Os (too slow); 4097 B covers resubmission";
    }
    if (is_3fs(b) && f.kind == FaultKind::kEintrStorm) {
      return "a USRBIO completion carries the daemon's result, never EINTR; no switch";
    }
    if (is_gds(b) && f.kind == FaultKind::kShort1) {
      return "the fake cuFile re-reads the whole range per call: 1 B is quadratic";
    }
    return std::nullopt;
  }

  std::uint64_t fault_offset(FaultKind kind) const {
    switch (kind) {
      case FaultKind::kEioFirst:
        return file_.data_offset + 100;
      case FaultKind::kEioLast:
        return file_.size - 100;
      default:
        return file_.data_offset + (file_.size - file_.data_offset) / 2;
    }
  }

  std::uint64_t short_size(FaultKind kind) const {
    switch (kind) {
      case FaultKind::kShort1:
        return 1;
      case FaultKind::kShortOdd:
        return 4097;
      default:
        return kChunk - 1;
    }
  }

  std::unique_ptr<Storage> real_storage(const Backend& b) const {
    StorageOptions options;
    options.direct = b.direct;
    options.block_size = kChunk;
    options.threads = 2;
    if (is_gds(b)) options.cuda_device = 0;
    if (is_3fs(b)) options.usrbio.stall_timeout_ms = 10'000;
    return make_storage(b.storage, options);
  }

  // Runs the load and returns the outcome's table text; failed expectations are test failures.
  std::string load(const Backend& b, const FaultRow& f,
                   const std::shared_ptr<CountingAllocator>& allocator) {
    LoadOptions options;
    options.use_config = false;
    options.backend = b.storage;
    options.storage.direct = b.direct;
    options.storage.block_size = kChunk;
    options.storage.threads = 2;
    options.storage.usrbio.stall_timeout_ms = 10'000;
    options.device = b.device;
    options.staging_bytes = 128 << 10;
    if (!on_device(b)) options.allocator = allocator;

    const bool host_decorated = !is_3fs(b) && !is_gds(b);
    const std::uint64_t at = fault_offset(f.kind);
    std::vector<std::unique_ptr<ScopedSwitch>> switches;
    auto set = [&](const char* name, const std::string& value, std::function<void()> reread) {
      switches.push_back(std::make_unique<ScopedSwitch>(name, value, std::move(reread)));
    };
    std::shared_ptr<FaultInjectingStorage> one_shot;
    std::shared_ptr<RepeatingFaultStorage> repeating;
    bool expect_success = true;
    std::string layer;
    switch (f.kind) {
      case FaultKind::kEioFirst:
      case FaultKind::kEioMiddle:
      case FaultKind::kEioLast:
        expect_success = false;
        if (host_decorated) {
          one_shot = std::make_shared<FaultInjectingStorage>(
              real_storage(b), testing::FaultPlan{testing::Fault::kIoError, at});
          options.custom_storage = one_shot;
        } else if (is_3fs(b)) {
          set("WARPLOAD_EMU_FAIL_OFFSET", std::to_string(at), nullptr);
        } else {
          set("FAKE_CUFILE_READ_ERROR_OFFSET", std::to_string(at), nullptr);
          set("FAKE_CUFILE_READ_ERROR", "-5", reread_cufile);
        }
        break;
      case FaultKind::kShort1:
      case FaultKind::kShortOdd:
      case FaultKind::kShortUnderChunk:
        if (host_decorated) {
          repeating = std::make_shared<RepeatingFaultStorage>(real_storage(b),
                                                              RepeatPlan{short_size(f.kind), 0, 0});
          options.custom_storage = repeating;
        } else if (is_3fs(b)) {
          set("WARPLOAD_EMU_MAX_IO_BYTES", std::to_string(short_size(f.kind)), nullptr);
        } else {
          set("FAKE_CUFILE_SHORT_READ", std::to_string(short_size(f.kind)), reread_cufile);
        }
        break;
      case FaultKind::kEintrStorm:
        if (host_decorated) {
          repeating =
              std::make_shared<RepeatingFaultStorage>(real_storage(b), RepeatPlan{0, 50, at});
          options.custom_storage = repeating;
        } else {
          set("FAKE_CUFILE_READ_ERROR_OFFSET", std::to_string(at), nullptr);
          set("FAKE_CUFILE_READ_ERROR_TIMES", "50", nullptr);
          set("FAKE_CUFILE_READ_ERROR", "-4", reread_cufile);
        }
        break;
      case FaultKind::kEnomem:
        expect_success = false;
        if (on_device(b)) set("FAKE_CUDA_FAIL_ALLOC_AFTER", "0", reread_cuda);
        break;
      case FaultKind::kEmfile:
        expect_success = false;
        break;
      case FaultKind::kTruncated:
        expect_success = false;  // or success when every byte was read before (checked below)
        options.custom_storage = std::make_shared<ChangeAfterOpenStorage>(
            real_storage(b), [this] { fs::resize_file(file_.path, file_.data_offset + 4096); });
        break;
      case FaultKind::kReplaced:
        options.custom_storage = std::make_shared<ChangeAfterOpenStorage>(real_storage(b), [this] {
          const fs::path other = file_.path.string() + ".new";
          testing::TensorBytes ignored;
          testing::write_random_file(other, {{"other", DType::kU8, {3000}}}, 99, ignored);
          fs::rename(other, file_.path);
        });
        break;
      case FaultKind::kGrows:
        options.custom_storage = std::make_shared<ChangeAfterOpenStorage>(real_storage(b), [this] {
          std::ofstream out(file_.path, std::ios::binary | std::ios::app);
          out << std::string(1 << 20, 'x');
        });
        break;
      case FaultKind::kShmFull:
        expect_success = false;
        set("WARPLOAD_EMU_SHM_LIMIT_BYTES", "0", nullptr);
        break;
    }

    // mmap reads a truncated file through its mapping: touching a page past the new end is
    // SIGBUS, so that one cell runs in a child process.
    if (f.kind == FaultKind::kTruncated && b.storage == "mmap") {
      return truncated_mmap_in_child(options);
    }

    Loader loader(options);
    loader.add(file_.path);
    try {
      std::optional<LowFdLimit> low;
      if (f.kind == FaultKind::kEmfile) low.emplace();
      static_cast<void>(loader.load());
      low.reset();
      if (f.kind == FaultKind::kTruncated) {
        ADD_FAILURE() << "a file truncated to " << file_.data_offset + 4096
                      << " bytes after open loaded";
        return "loaded (WRONG)";
      }
      EXPECT_TRUE(expect_success) << "the load succeeded under " << f.label;
      expect_bytes(loader);
      unsigned injected = 0;
      if (one_shot) injected = one_shot->counters().injected.load();
      if (repeating) injected = repeating->injected();
      if (repeating) {
        EXPECT_GT(injected, 0u) << "the fault never fired";
      }
      return repeating ? "ok, byte-exact (" + std::to_string(injected) + " injected)"
                       : "ok, byte-exact";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_FALSE(expect_success && f.kind != FaultKind::kTruncated)
          << "failed where a retry was right: " << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
      EXPECT_FALSE(loader.loaded());
      return describe_error(b, f, e);
    }
  }

  void expect_bytes(const Loader& loader) {
    for (const auto& [name, bytes] : file_.expected) {
      SCOPED_TRACE(name);
      std::vector<std::byte> back(bytes.size());
      loader.copy_to_host(name, back);
      EXPECT_TRUE(same_bytes(back.data(), bytes.data(), bytes.size())) << "bytes differ";
    }
  }

  // Checks the error against the fault and returns its table text.
  std::string describe_error(const Backend& b, const FaultRow& f, const Error& e) {
    const std::string what = e.what();
    const auto* io = dynamic_cast<const IoError*>(&e);
    switch (f.kind) {
      case FaultKind::kEioFirst:
      case FaultKind::kEioMiddle:
      case FaultKind::kEioLast: {
        const std::uint64_t at = fault_offset(f.kind);
        EXPECT_TRUE(contains(what, file_.path.string())) << what;
        if (io == nullptr) {
          ADD_FAILURE() << "not an IoError: " << what;
          return "WRONG: " + what;
        }
        EXPECT_EQ(io->error_number(), EIO) << what;
        EXPECT_LE(io->offset(), at) << what;
        // mmap copies the whole data section in one read_some(): its offset is that read's.
        if (b.storage != "mmap") {
          EXPECT_LT(at - io->offset(), kChunk + 4096) << what;
        }
        EXPECT_TRUE(contains(what, std::to_string(io->offset()))) << what;
        return "IoError EIO at " + std::to_string(io->offset()) + " (fault " + std::to_string(at) +
               ")";
      }
      case FaultKind::kEnomem: {
        const bool oom = dynamic_cast<const OutOfMemoryError*>(&e) != nullptr;
        EXPECT_TRUE(oom) << what;
        EXPECT_TRUE(contains(what, file_.path.string()) || on_device(b))
            << "a host OutOfMemoryError should name the file: " << what;
        return std::string(oom ? "OutOfMemoryError" : "WRONG") +
               (contains(what, file_.path.string()) ? ", names file" : ", no file named");
      }
      case FaultKind::kEmfile: {
        EXPECT_TRUE(contains(what, file_.path.string())) << what;
        EXPECT_TRUE(contains(what, std::strerror(EMFILE))) << what;
        return std::string(io != nullptr ? "IoError" : "Error") + " EMFILE, names file";
      }
      case FaultKind::kTruncated: {
        EXPECT_TRUE(contains(what, file_.path.string())) << what;
        if (io == nullptr) {
          ADD_FAILURE() << "not an IoError: " << what;
          return "WRONG: " + what;
        }
        EXPECT_GE(io->offset(), file_.data_offset) << what;
        return "IoError " +
               std::string(io->error_number() == 0 ? "end of file"
                                                   : std::strerror(io->error_number())) +
               " at " + std::to_string(io->offset());
      }
      case FaultKind::kShmFull: {
        EXPECT_TRUE(contains(what, std::strerror(ENOSPC))) << what;
        EXPECT_TRUE(contains(what, file_.path.string()) || contains(what, dir_.path().string()))
            << "names neither the file nor the mount: " << what;
        return std::string(io != nullptr ? "IoError" : "Error") + " ENOSPC" +
               (contains(what, file_.path.string()) ? ", names file" : ", names mount");
      }
      default:
        ADD_FAILURE() << "unexpected error under " << f.label << ": " << what;
        return "WRONG: " + what;
    }
  }

  std::string truncated_mmap_in_child(const LoadOptions& options) {
    std::fflush(nullptr);
    const pid_t child = fork();
    if (child == 0) {
      // The default action, whatever a sanitizer installed (ASan turns SIGBUS into an abort).
      std::signal(SIGBUS, SIG_DFL);
      int code = 0;
      try {
        Loader loader(options);
        loader.add(file_.path);
        static_cast<void>(loader.load());
      } catch (const Error&) {
        code = 2;
      } catch (...) {
        code = 3;
      }
      _exit(code);
    }
    int status = 0;
    EXPECT_EQ(waitpid(child, &status, 0), child);
    if (WIFSIGNALED(status)) {
      EXPECT_EQ(WTERMSIG(status), SIGBUS);
      return std::string("killed by ") + (WTERMSIG(status) == SIGBUS ? "SIGBUS" : "a signal") +
             " (child process)";
    }
    EXPECT_EQ(WEXITSTATUS(status), 2) << "a truncated mapping loaded";
    return WEXITSTATUS(status) == 2 ? "Error (child process)" : "WRONG (child process)";
  }

  TempDir dir_;
  Checkpoint file_;
  bool emulator_ = false;
  bool gpu_ = false;
};

TEST(FaultMatrixTest, EveryBackendUnderEveryFault) {
  const std::vector<Backend> backends = {
      {"posix", "posix", false, "cpu"},
      {"uring", "uring", false, "cpu"},
      {"uring+direct", "uring", true, "cpu"},
      {"mmap", "mmap", false, "cpu"},
      {"auto", "auto", false, "cpu"},
      {"3fs (emulator)", "3fs", false, "cpu"},
      {"staged GPU (posix, fake CUDA)", "posix", false, "cuda:0"},
      {"gds (fake cuFile)", "gds", false, "cuda:0"},
  };
  const std::vector<FaultRow> faults = {
      {FaultKind::kEioFirst, "EIO, first chunk"},
      {FaultKind::kEioMiddle, "EIO, middle chunk"},
      {FaultKind::kEioLast, "EIO, last chunk"},
      {FaultKind::kShort1, "short reads, 1 B"},
      {FaultKind::kShortOdd, "short reads, 4097 B"},
      {FaultKind::kShortUnderChunk, "short reads, chunk - 1 B"},
      {FaultKind::kEintrStorm, "EINTR storm (50 in a row)"},
      {FaultKind::kEnomem, "ENOMEM from the allocator"},
      {FaultKind::kEmfile, "EMFILE (RLIMIT_NOFILE low)"},
      {FaultKind::kTruncated, "truncated after open"},
      {FaultKind::kReplaced, "replaced (rename over) after open"},
      {FaultKind::kGrows, "grows after open"},
      {FaultKind::kShmFull, "/dev/shm full"},
  };
  FaultMatrix matrix;
  Watchdog watchdog;
  std::map<std::pair<std::size_t, std::size_t>, std::string> outcome;
  for (std::size_t fi = 0; fi < faults.size(); ++fi) {
    for (std::size_t bi = 0; bi < backends.size(); ++bi) {
      const std::string cell = faults[fi].label + " x " + backends[bi].label;
      SCOPED_TRACE(cell);
      watchdog.arm(cell);
      const auto start = std::chrono::steady_clock::now();
      outcome[{fi, bi}] = matrix.run(backends[bi], faults[fi]);
      const auto took = std::chrono::steady_clock::now() - start;
      watchdog.disarm();
      EXPECT_LT(took, kCellDeadline) << "took too long";
    }
  }
  std::ostringstream table;
  table << "fault-matrix: | fault |";
  for (const Backend& b : backends) table << ' ' << b.label << " |";
  table << "\nfault-matrix: |---|";
  for (std::size_t bi = 0; bi < backends.size(); ++bi) table << "---|";
  for (std::size_t fi = 0; fi < faults.size(); ++fi) {
    table << "\nfault-matrix: | " << faults[fi].label << " |";
    for (std::size_t bi = 0; bi < backends.size(); ++bi) table << ' ' << outcome[{fi, bi}] << " |";
  }
  std::printf("%s\n", table.str().c_str());
}

}  // namespace
}  // namespace warpload
