// UsrbioStorage ("3fs"): reads through 3FS's USRBIO rings (docs/3fs.md has the whole design).
//
// Destinations: preferred_allocator() hands out Buffers that are USRBIO iovs (shared memory the
// 3FS daemon writes into), recorded in a process-wide registry. An I/O whose destination lies in
// a live iov of the file's mount is prepared straight into it (zero copy); any other destination
// goes through a small per-ring staging iov and a memcpy.
//
// Threads: `rings` workers, each the single producer of its own ring (hf3fs_prep_io is not
// thread-safe), prepare up to `entries` I/Os, submit, and wait for completions with an absolute
// deadline. Every completion goes through ReadTracker::complete(), so short reads, EOF and
// errors are judged as for every other backend. A worker never destroys its ring with I/Os in
// flight: it drains them first (bounded by the same deadline).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "storage/backends.hpp"
#include "storage/hf3fs_shim.hpp"
#include "storage/usrbio_iov_allocator.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr unsigned kDefaultRings = 2;
constexpr int kDefaultEntries = 64;
constexpr std::uint64_t kDefaultChunk = 4ULL << 20;
constexpr std::uint64_t kDefaultStagingBytes = 16ULL << 20;
// By default, a ring that completes nothing for this long is declared stalled (IoError
// "timed out"); UsrbioOptions::stall_timeout_ms overrides it.
constexpr std::chrono::milliseconds kDefaultStallTimeout{60'000};
// How long a worker keeps waiting for stragglers before giving its ring up after a failure.
constexpr std::chrono::seconds kDrainTimeout{60};

std::string error_text(int error_number) { return std::strerror(error_number); }

timespec realtime_deadline(std::chrono::nanoseconds from_now) noexcept {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const auto total =
      std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec) + from_now;
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(total);
  timespec deadline{};
  deadline.tv_sec = static_cast<time_t>(seconds.count());
  deadline.tv_nsec = static_cast<long>((total - seconds).count());
  return deadline;
}

// ---- host destinations ----

// True when POSIX shared memory (what iovs are) is backed by transparent huge pages: the
// /dev/shm tmpfs is mounted with huge=always, within_size or advise (iovs are advised), or
// shmem_enabled forces them. Decides UsrbioTarget::kAuto (docs/3fs.md, "Host destinations").
bool shared_memory_gets_huge_pages() {
  {
    std::ifstream policy("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    std::string text;
    std::getline(policy, text);
    if (text.find("[force]") != std::string::npos) return true;
    if (text.find("[deny]") != std::string::npos) return false;
  }
  // mountinfo: "id parent dev root mountpoint options [tags] - fstype source superoptions";
  // the last /dev/shm entry is the one on top.
  std::ifstream mounts("/proc/self/mountinfo");
  bool huge = false;
  for (std::string line; std::getline(mounts, line);) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    if (mount_point != "/dev/shm") continue;
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string type, source, options;
    tail >> type >> source >> options;
    huge = type == "tmpfs" && (options.find("huge=always") != std::string::npos ||
                               options.find("huge=within_size") != std::string::npos ||
                               options.find("huge=advise") != std::string::npos);
  }
  return huge;
}

// ---- files ----

// Files this Storage opened, so read() can find their mount without dynamic_cast; requests
// naming other files (decorators) are served with read_some().
class OpenFiles {
 public:
  void add(const StorageFile* file, std::string mount) {
    const std::lock_guard<std::mutex> lock(mutex_);
    mounts_[file] = std::move(mount);
  }
  void remove(const StorageFile* file) noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    mounts_.erase(file);
  }
  // The file's mount, or empty when this Storage did not open it.
  [[nodiscard]] std::string mount_of(const StorageFile* file) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto found = mounts_.find(file);
    return found == mounts_.end() ? std::string() : found->second;
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<const StorageFile*, std::string> mounts_;
};

class UsrbioFile final : public StorageFile {
 public:
  UsrbioFile(const std::filesystem::path& path, int fd, std::uint64_t size, const Hf3fsApi& api,
             std::shared_ptr<OpenFiles> registry)
      : StorageFile(path, fd, size, 1), api_(api), registry_(std::move(registry)) {}
  ~UsrbioFile() override {
    registry_->remove(this);
    api_.dereg_fd(fd());  // before StorageFile closes the descriptor
  }

 private:
  const Hf3fsApi& api_;
  std::shared_ptr<OpenFiles> registry_;
};

// ---- the ring worker ----

// A ring and the iovs that serve it (heap-held: the library keeps their addresses).
struct RingResources {
  hf3fs_ior ring{};
  hf3fs_iov staging{};
  bool staging_created = false;
  hf3fs_iov filler{};
  bool filler_created = false;
};

void destroy(const Hf3fsApi& api, RingResources& r) noexcept {
  api.iordestroy(&r.ring);
  if (r.staging_created) api.iovdestroy(&r.staging);
  if (r.filler_created) api.iovdestroy(&r.filler);
}

// Idle rings of one Storage, per mount: a device load calls read() once per 4 MiB piece, and
// creating a ring (shared memory registered with the daemon, its queues) per call cost more
// than the read. Only rings drained clean (nothing in flight, no partial io_depth batch) come
// back. Destroyed with the Storage.
class RingCache {
 public:
  explicit RingCache(const Hf3fsApi& api) : api_(api) {}
  ~RingCache() {
    for (auto& [mount, rings] : idle_) {
      for (auto& ring : rings) destroy(api_, *ring);
    }
  }
  RingCache(const RingCache&) = delete;
  RingCache& operator=(const RingCache&) = delete;

  [[nodiscard]] std::unique_ptr<RingResources> take(const std::string& mount) {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto found = idle_.find(mount);
    if (found == idle_.end() || found->second.empty()) return nullptr;
    auto ring = std::move(found->second.back());
    found->second.pop_back();
    return ring;
  }
  void give_back(const std::string& mount, std::unique_ptr<RingResources> ring) noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::unique_ptr<RingResources>>* rings = nullptr;
    try {
      rings = &idle_[mount];
      rings->reserve(rings->size() + 1);
    } catch (...) {  // no memory to keep it: it goes now
      destroy(api_, *ring);
      return;
    }
    rings->push_back(std::move(ring));  // cannot throw: reserved
  }

 private:
  const Hf3fsApi& api_;
  std::mutex mutex_;
  std::map<std::string, std::vector<std::unique_ptr<RingResources>>> idle_;
};

struct RingSettings {
  std::string mount;
  int entries = kDefaultEntries;
  int io_depth = 0;  // > 0: every batch must be exactly this many I/Os (fillers complete one)
  std::uint64_t flags = 0;
  std::uint64_t staging_bytes = kDefaultStagingBytes;
  std::uint64_t chunk = kDefaultChunk;
  std::uint64_t block_size = 0;  // iov block size (staging iov too)
  std::chrono::milliseconds stall_timeout = kDefaultStallTimeout;
};

class RingWorker {
 public:
  RingWorker(const Hf3fsApi& api, ReadTracker& tracker, const RingSettings& settings,
             RingCache& cache)
      : api_(api), tracker_(tracker), settings_(settings), cache_(cache) {}
  RingWorker(const RingWorker&) = delete;
  RingWorker& operator=(const RingWorker&) = delete;

  void run() noexcept {
    res_ = cache_.take(settings_.mount);
    if (!res_) {
      res_ = std::make_unique<RingResources>();
      const int created = api_.iorcreate4(&res_->ring, settings_.mount.c_str(), settings_.entries,
                                          true, settings_.io_depth, 0, -1, settings_.flags);
      if (created != 0) {
        fail("hf3fs_iorcreate4 on mount '" + settings_.mount + "' (" +
                 std::to_string(settings_.entries) + " entries) failed: " + error_text(-created),
             -created, 0);
        return;
      }
    }
    try {
      slots_.resize(static_cast<std::size_t>(settings_.entries));
      free_slots_.reserve(slots_.size());
      for (std::size_t i = slots_.size(); i > 0; --i) free_slots_.push_back(i - 1);
      cqes_.resize(slots_.size());
      loop();
    } catch (...) {
      tracker_.fail(std::current_exception());
    }
    const bool drained = drain();
    if (drained && unbatched_ == 0) {
      cache_.give_back(settings_.mount, std::move(res_));  // idle: the next read() reuses it
    } else if (drained) {
      destroy(api_, *res_);
    } else {
      // A ring the daemon may still write through is left alone rather than unmapped under it.
      static_cast<void>(res_.release());
    }
  }

 private:
  struct Slot {
    ReadOperation op;
    std::byte* staging = nullptr;  // where the bytes land when not straight in op.dest
    bool filler = false;           // a 1-byte read that only completes an io_depth batch
  };

  void fail(const std::string& message, int error_number, std::uint64_t offset) noexcept {
    try {
      tracker_.fail(std::make_exception_ptr(IoError(message, error_number, offset)));
    } catch (...) {
      tracker_.fail(std::current_exception());
    }
  }

  // The next piece to issue: a resubmission first, else a cut from the current operation, else
  // a new operation from the tracker. Pieces never cross an iov block boundary and fit a
  // staging slot when they will need one.
  bool take(ReadOperation* piece, const hf3fs_iov** iov) {
    if (tracker_.stopped()) return false;
    if (!pending_.empty()) {
      *piece = pending_.front();
      pending_.pop_front();
      *iov = find_iov(piece->dest, piece->length, settings_.mount);
      return true;
    }
    if (rest_.length == 0 && !tracker_.next(&rest_)) return false;
    std::uint64_t length = std::min(rest_.length, settings_.chunk);
    *iov = find_iov(rest_.dest, length, settings_.mount);
    if (*iov != nullptr) {
      if ((*iov)->block_size != 0) {
        const auto into =
            static_cast<std::uint64_t>(rest_.dest - reinterpret_cast<std::byte*>((*iov)->base));
        length = std::min(length, (*iov)->block_size - into % (*iov)->block_size);
      }
    } else {
      length = std::min(length, staging_slot_);
    }
    *piece = rest_;
    piece->length = length;
    piece->required = std::min(length, rest_.required);
    piece->stalled = 0;
    rest_.dest += length;
    rest_.offset += length;
    rest_.length -= length;
    rest_.required -= piece->required;
    return true;
  }

  // Creates the staging iov on first need (or takes the one the ring kept from an earlier
  // read) and lists its slots; false when it cannot be made (failure recorded).
  bool ensure_staging() {
    if (staging_listed_) return true;
    const std::uint64_t bs = settings_.block_size;
    const std::uint64_t per_block = bs == 0 ? 0 : std::max<std::uint64_t>(bs / staging_slot_, 1);
    const std::uint64_t slots = std::max<std::uint64_t>(settings_.staging_bytes / staging_slot_, 1);
    const std::uint64_t bytes =
        bs == 0 ? slots * staging_slot_ : (slots + per_block - 1) / per_block * bs;
    if (!res_->staging_created) {
      const int result = api_.iovcreate(&res_->staging, settings_.mount.c_str(), bytes, bs, -1);
      if (result != 0) {
        fail("3fs: cannot create a " + std::to_string(bytes) + "-byte staging iov on mount '" +
                 settings_.mount + "': " + error_text(-result),
             -result, 0);
        return false;
      }
      res_->staging_created = true;
    }
    staging_listed_ = true;
    auto* base = reinterpret_cast<std::byte*>(res_->staging.base);
    for (std::uint64_t k = slots; k > 0; --k) {
      const std::uint64_t i = k - 1;
      const std::uint64_t at =
          bs == 0 ? i * staging_slot_ : (i / per_block) * bs + (i % per_block) * staging_slot_;
      staging_free_.push_back(base + at);
    }
    return true;
  }

  void loop() {
    staging_slot_ = std::min(settings_.chunk, std::max<std::uint64_t>(settings_.staging_bytes, 1));
    if (settings_.block_size != 0) staging_slot_ = std::min(staging_slot_, settings_.block_size);
    unsigned full_retries = 0;
    auto last_progress = std::chrono::steady_clock::now();
    for (;;) {
      int prepared = 0;
      bool ring_full = false;
      while (!free_slots_.empty()) {
        ReadOperation piece;
        const hf3fs_iov* iov = nullptr;
        if (!take(&piece, &iov)) break;
        std::byte* staging = nullptr;
        if (iov == nullptr) {
          if (!ensure_staging()) return;
          if (staging_free_.empty()) {
            pending_.push_front(piece);
            break;
          }
          staging = staging_free_.back();
          staging_free_.pop_back();
        }
        const std::size_t slot = free_slots_.back();
        const int index =
            api_.prep_io(&res_->ring, iov != nullptr ? iov : &res_->staging, true,
                         staging != nullptr ? staging : piece.dest, piece.file->fd(), piece.offset,
                         piece.length, reinterpret_cast<const void*>(slot));
        if (index >= 0) {
          free_slots_.pop_back();
          slots_[slot] = Slot{piece, staging};
          ++in_flight_;
          ++prepared;
          count_prepared();
          filler_fd_ = piece.file->fd();
          continue;
        }
        if (staging != nullptr) staging_free_.push_back(staging);
        if (index == -EAGAIN || index == -EINTR) {
          pending_.push_front(piece);  // the ring is full: reap completions, then try again
          ring_full = true;
          break;
        }
        // A refusal (block boundary crossed, fd not registered, ...): the tracker names the
        // file and offset.
        static_cast<void>(tracker_.complete(piece, index));
      }
      // The daemon never runs a batch smaller than io_depth: complete it before waiting.
      if (unbatched_ != 0) prepared += prepare_fillers();
      if (prepared > 0) {
        const int submitted = api_.submit_ios(&res_->ring);
        if (submitted < 0) {
          fail("hf3fs_submit_ios on mount '" + settings_.mount +
                   "' failed: " + error_text(-submitted),
               -submitted, 0);
          return;
        }
      }
      if (in_flight_ == 0) {
        if (!ring_full) return;  // nothing issued and nothing left: done (or stopped)
        // Full with nothing of ours in flight: the daemon holds slots; give it a moment.
        if (++full_retries > ReadTracker::kMaxStalledRetries) {
          fail("3fs: ring on mount '" + settings_.mount + "' stays full (-EAGAIN)", EAGAIN, 0);
          return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100) * full_retries);
        continue;
      }
      full_retries = 0;
      const int reaped = reap(1, realtime_deadline(std::chrono::milliseconds(200)));
      if (reaped < 0) {
        fail("hf3fs_wait_for_ios on mount '" + settings_.mount + "' failed: " + error_text(-reaped),
             -reaped, 0);
        return;
      }
      const auto now = std::chrono::steady_clock::now();
      if (reaped > 0) {
        last_progress = now;
      } else if (now - last_progress > settings_.stall_timeout) {
        const ReadOperation& oldest = oldest_in_flight();
        fail(oldest.file->path().string() + ": 3fs read of " + std::to_string(oldest.length) +
                 " bytes at offset " + std::to_string(oldest.offset) + " timed out (" +
                 std::to_string(settings_.stall_timeout.count()) + " ms without a completion)",
             ETIMEDOUT, oldest.offset);
        return;
      }
    }
  }

  void count_prepared() noexcept {
    if (settings_.io_depth > 0) unbatched_ = (unbatched_ + 1) % settings_.io_depth;
  }

  // Prepares 1-byte reads (of a file this ring reads, into a scratch iov) until the I/Os
  // prepared since the last whole batch make one, or the ring has no free slot. Returns how
  // many it prepared; a failure is recorded and ends the padding.
  int prepare_fillers() noexcept {
    if (filler_fd_ < 0) return 0;
    if (!res_->filler_created) {
      const auto bytes = static_cast<std::uint64_t>(settings_.io_depth);
      const int result = api_.iovcreate(&res_->filler, settings_.mount.c_str(), bytes, 0, -1);
      if (result != 0) {
        fail("3fs: cannot create the " + std::to_string(bytes) +
                 "-byte iov that completes io_depth batches on mount '" + settings_.mount +
                 "': " + error_text(-result),
             -result, 0);
        filler_fd_ = -1;
        return 0;
      }
      res_->filler_created = true;
    }
    int prepared = 0;
    while (unbatched_ != 0 && !free_slots_.empty()) {
      const std::size_t slot = free_slots_.back();
      auto* into = reinterpret_cast<std::byte*>(res_->filler.base) + unbatched_;
      const int index = api_.prep_io(&res_->ring, &res_->filler, true, into, filler_fd_, 0, 1,
                                     reinterpret_cast<const void*>(slot));
      if (index < 0) break;  // full (the daemon holds slots): try again after the next wait
      free_slots_.pop_back();
      slots_[slot] = Slot{};
      slots_[slot].filler = true;
      ++in_flight_;
      ++prepared;
      count_prepared();
    }
    return prepared;
  }

  [[nodiscard]] const ReadOperation& oldest_in_flight() const noexcept {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].filler &&
          std::find(free_slots_.begin(), free_slots_.end(), i) == free_slots_.end()) {
        return slots_[i].op;
      }
    }
    return slots_.front().op;
  }

  // Waits until at least `min_results` completions are in or `deadline` passes, and handles
  // every completion returned. Returns how many were handled, or -errno.
  int reap(int min_results, const timespec& deadline) {
    const int got = api_.wait_for_ios(&res_->ring, cqes_.data(), static_cast<int>(cqes_.size()),
                                      min_results, &deadline);
    if (got == -ETIMEDOUT || got == -EINTR || got == -EAGAIN) return 0;
    if (got < 0) return got;
    for (int i = 0; i < got; ++i) {
      const hf3fs_cqe& cqe = cqes_[static_cast<std::size_t>(i)];
      const auto slot = reinterpret_cast<std::uintptr_t>(cqe.userdata);
      if (slot >= slots_.size()) continue;  // not ours: cannot happen with one producer
      Slot& entry = slots_[slot];
      if (entry.filler) {  // its bytes and result mean nothing
        entry.filler = false;
        free_slots_.push_back(slot);
        --in_flight_;
        continue;
      }
      if (entry.staging != nullptr) {
        if (cqe.result > 0) {
          const auto bytes =
              std::min<std::uint64_t>(static_cast<std::uint64_t>(cqe.result), entry.op.length);
          std::memcpy(entry.op.dest, entry.staging, bytes);
        }
        staging_free_.push_back(entry.staging);
        entry.staging = nullptr;
      }
      free_slots_.push_back(slot);
      --in_flight_;
      if (tracker_.complete(entry.op, cqe.result) == ReadTracker::Step::kResubmit) {
        pending_.push_front(entry.op);
      }
    }
    return got;
  }

  // Collects the completion of every I/O still in flight; false when some never completed.
  bool drain() noexcept {
    const auto give_up = std::chrono::steady_clock::now() + kDrainTimeout;
    while (in_flight_ > 0) {
      int got = 0;
      if (unbatched_ != 0 && prepare_fillers() > 0) static_cast<void>(api_.submit_ios(&res_->ring));
      try {
        const timespec deadline = realtime_deadline(std::chrono::milliseconds(200));
        got = api_.wait_for_ios(&res_->ring, cqes_.data(), static_cast<int>(cqes_.size()), 1,
                                &deadline);
      } catch (...) {
        return false;
      }
      if (got > 0) {
        in_flight_ -= std::min(in_flight_, static_cast<std::size_t>(got));
        for (int i = 0; i < got; ++i) {  // slots become free for fillers
          const auto slot =
              reinterpret_cast<std::uintptr_t>(cqes_[static_cast<std::size_t>(i)].userdata);
          if (slot < slots_.size()) free_slots_.push_back(slot);
        }
        continue;
      }
      if (got < 0 && got != -ETIMEDOUT && got != -EINTR && got != -EAGAIN) return false;
      if (std::chrono::steady_clock::now() > give_up) return false;
    }
    return true;
  }

  const Hf3fsApi& api_;
  ReadTracker& tracker_;
  const RingSettings& settings_;
  RingCache& cache_;
  std::unique_ptr<RingResources> res_;
  bool staging_listed_ = false;  // staging_free_ holds res_->staging's slots
  int filler_fd_ = -1;           // a registered file of this read, for fillers
  int unbatched_ = 0;            // I/Os prepared since the last whole io_depth batch
  std::uint64_t staging_slot_ = kDefaultChunk;
  std::vector<std::byte*> staging_free_;
  std::vector<Slot> slots_;
  std::vector<std::size_t> free_slots_;
  std::vector<hf3fs_cqe> cqes_;
  std::deque<ReadOperation> pending_;
  ReadOperation rest_;
  std::size_t in_flight_ = 0;
};

void run_rings(const Hf3fsApi& api, ReadTracker& tracker, const RingSettings& settings,
               unsigned rings, RingCache& cache) noexcept {
  const std::uint64_t workers =
      std::min<std::uint64_t>(std::max(rings, 1U), tracker.operation_count());
  if (workers == 0) return;
  std::vector<std::thread> pool;
  try {
    pool.reserve(workers - 1);
    while (pool.size() + 1 < workers) {
      pool.emplace_back([&] { RingWorker(api, tracker, settings, cache).run(); });
    }
  } catch (...) {
    // Fewer rings than asked for only makes the read slower.
  }
  RingWorker(api, tracker, settings, cache).run();
  for (std::thread& thread : pool) thread.join();
}

// ---- the backend ----

class UsrbioStorage final : public Storage {
 public:
  explicit UsrbioStorage(const StorageOptions& options)
      : api_(hf3fs_api()),
        options_(options.usrbio),
        rings_(options.usrbio.rings != 0 ? options.usrbio.rings : kDefaultRings),
        chunk_(options.block_size != 0 ? options.block_size : kDefaultChunk) {
    capabilities_.name = "3fs";
    settings_.entries = options_.entries > 0 ? options_.entries : kDefaultEntries;
    settings_.io_depth = options_.io_depth;
    settings_.flags = options_.forbid_holes ? WARPLOAD_HF3FS_IOR_FORBID_READ_HOLES : 0;
    settings_.staging_bytes =
        options_.staging_bytes != 0 ? options_.staging_bytes : kDefaultStagingBytes;
    settings_.chunk = chunk_;
    settings_.block_size = options_.iov_block_size;
    if (options_.stall_timeout_ms != 0) {
      settings_.stall_timeout = std::chrono::milliseconds(options_.stall_timeout_ms);
    }
    if (options_.entries < 0) {
      throw UnsupportedError("3fs: entries must be positive (got " +
                             std::to_string(options_.entries) + ")");
    }
    if (std::abs(static_cast<long long>(options_.io_depth)) > settings_.entries) {
      throw UnsupportedError("3fs: io_depth " + std::to_string(options_.io_depth) +
                             " exceeds the ring's " + std::to_string(settings_.entries) +
                             " entries");
    }
    if (!options_.mount_point.empty()) mount_hint_->set(options_.mount_point);
    target_ = resolve_usrbio_target(options_.target);
  }

  [[nodiscard]] const StorageCapabilities& capabilities() const noexcept override {
    return capabilities_;
  }

  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    const std::string mount = mount_of(path);
    const OpenedFile opened = open_file(path, false);
    UniqueFd guard(opened.fd);
    const int registered = api_.reg_fd(opened.fd, 0);
    if (registered > 0) {
      throw IoError(path.string() + ": hf3fs_reg_fd failed: " + error_text(registered) +
                        (registered == EBADF ? " (not on a 3FS mount?)" : ""),
                    registered, 0);
    }
    std::unique_ptr<UsrbioFile> file;
    try {
      file = std::make_unique<UsrbioFile>(path, opened.fd, opened.size, api_, open_files_);
    } catch (...) {
      api_.dereg_fd(opened.fd);
      throw;
    }
    static_cast<void>(guard.release());  // the file owns it now
    open_files_->add(file.get(), mount);
    mount_hint_->set(mount);
    return file;
  }

  // Zero copy (iovs as the destination) only when that target was chosen; otherwise the
  // loader's ordinary host memory, filled through the staging iovs.
  [[nodiscard]] std::shared_ptr<Allocator> preferred_allocator() override {
    if (target_ != UsrbioTarget::kIov) return nullptr;
    return make_iov_allocator(api_, mount_hint_, options_.iov_block_size);
  }

  // A device load's ring made of iovs of the files' mount: the daemon writes each piece into
  // a slot and the copy engine reads it from there (docs/architecture.md, "Ring memory").
  // Target `staging`, chosen explicitly, keeps ordinary pinned slots and the staging copy
  // (tune compares the two); `auto` needs no huge pages here, because the pool's pages are
  // faulted once per process, not once per load.
  [[nodiscard]] StagingMemory staging_memory() override {
    if (options_.target == UsrbioTarget::kStaging) return {};
    const std::string mount = mount_hint_->get();
    if (mount.empty()) return {};
    auto hint = std::make_shared<MountHint>();
    hint->set(mount);
    return StagingMemory{"3fs " + mount + " block " + std::to_string(options_.iov_block_size),
                         make_iov_allocator(api_, std::move(hint), options_.iov_block_size)};
  }

  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    // Requests grouped by mount (rings belong to one mount); files this Storage did not open
    // are read with read_some().
    std::map<std::string, std::vector<ReadRequest>> by_mount;
    std::vector<ReadRequest> foreign;
    for (const ReadRequest& request : requests) {
      std::string mount = open_files_->mount_of(request.file);
      if (mount.empty()) {
        foreign.push_back(request);
      } else {
        by_mount[std::move(mount)].push_back(request);
      }
    }
    std::atomic<bool> stop{false};
    for (auto& [mount, group] : by_mount) {
      RingSettings settings = settings_;
      settings.mount = mount;
      ReadTracker tracker(group, chunk_, control, &stop);
      run_rings(api_, tracker, settings, rings_, *rings_cache_);
      tracker.finish();
    }
    if (!foreign.empty()) {
      ReadTracker tracker(foreign, chunk_, control, &stop);
      run_posix_reads(tracker, rings_);
      tracker.finish();
    }
  }

 private:
  [[nodiscard]] std::string mount_of(const std::filesystem::path& path) const {
    if (!options_.mount_point.empty()) return options_.mount_point;
    std::error_code ec;
    std::filesystem::path absolute = std::filesystem::absolute(path, ec);
    if (ec) absolute = path;
    std::vector<char> out(256);
    for (int attempt = 0; attempt < 2; ++attempt) {
      const int length =
          api_.extract_mount_point(out.data(), static_cast<int>(out.size()), absolute.c_str());
      if (length <= 0) break;
      if (static_cast<std::size_t>(length) <= out.size()) {
        return std::string(out.data(), static_cast<std::size_t>(length - 1));
      }
      out.resize(static_cast<std::size_t>(length));
    }
    if (!std::filesystem::exists(path, ec)) {
      throw NotFoundError(path.string() + ": cannot open: No such file or directory");
    }
    throw UnsupportedError(path.string() +
                           ": not on a 3FS mount (backend '3fs' reads through "
                           "3FS USRBIO; use another backend for this file)");
  }

  const Hf3fsApi& api_;
  UsrbioOptions options_;
  UsrbioTarget target_ = UsrbioTarget::kAuto;  // resolved: kIov or kStaging
  unsigned rings_;
  std::uint64_t chunk_;
  RingSettings settings_;
  StorageCapabilities capabilities_;
  std::shared_ptr<MountHint> mount_hint_ = std::make_shared<MountHint>();
  std::shared_ptr<OpenFiles> open_files_ = std::make_shared<OpenFiles>();
  // Declared last, destroyed first: no read() runs then.
  std::unique_ptr<RingCache> rings_cache_ = std::make_unique<RingCache>(api_);
};

}  // namespace

std::unique_ptr<Storage> make_usrbio_storage(const StorageOptions& options) {
  return std::make_unique<UsrbioStorage>(options);
}

}  // namespace warpload::detail

namespace warpload {

UsrbioTarget resolve_usrbio_target(UsrbioTarget target) {
  if (target != UsrbioTarget::kAuto) return target;
  return detail::shared_memory_gets_huge_pages() ? UsrbioTarget::kIov : UsrbioTarget::kStaging;
}

}  // namespace warpload
