// UringStorage: worker threads, each with its own io_uring of queue_depth entries, keep many
// block_size reads in flight. The request's descriptors are registered in every ring so each
// SQE uses IOSQE_FIXED_FILE (no fget/fput per read).
//
// Destination buffers are not registered (IORING_OP_READ_FIXED): they are large, fresh and
// the caller's, so registering would pin and fault in every page on one thread before the
// first read, which costs more than the per-read page pinning it saves.
//
// A file whose fd() is -1 (a decorated test double) cannot go into a ring; the worker that
// picks up such an operation serves it with read_some() on its own thread, in between reaping
// the ring. Every CQE result goes through ReadTracker::complete(), so short reads, -EAGAIN and
// -EINTR are resubmitted exactly as the thread-pool engine retries them.
//
// A worker never returns with reads in flight: after a failure or cancel it stops taking
// operations and waits for every submitted read's completion before tearing its ring down.
#include <liburing.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "storage/backends.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

// One SQE reads at most this much (IORING_OP_READ takes a 32-bit length); longer operations
// continue as short reads. A multiple of every O_DIRECT alignment.
constexpr std::uint64_t kMaxSqeBytes = 1ULL << 30;

// Creates a ring, preferring the flags that keep completion work on the waiting thread
// (kernel 6.1+), falling back to what older kernels accept.
int init_ring(io_uring* ring, unsigned entries) noexcept {
  static constexpr unsigned kFlagSets[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_COOP_TASKRUN,
      0,
  };
  int result = -EINVAL;
  for (const unsigned flags : kFlagSets) {
    io_uring_params params{};
    params.flags = flags;
    result = io_uring_queue_init_params(entries, ring, &params);
    if (result == 0) return 0;
    if (result != -EINVAL) break;
  }
  return result;
}

class RingWorker {
 public:
  RingWorker(ReadTracker& tracker, const std::vector<int>& fds, unsigned queue_depth)
      : tracker_(tracker), fds_(fds), queue_depth_(queue_depth) {}

  void run() noexcept {
    if (init_ring(&ring_, queue_depth_) != 0) {
      // No ring on this thread (e.g. out of locked memory): still make progress.
      ReadOperation op;
      while (tracker_.next(&op)) tracker_.run_blocking(op);
      return;
    }
    registered_ = !fds_.empty() && io_uring_register_files(&ring_, fds_.data(),
                                                           static_cast<unsigned>(fds_.size())) == 0;
    try {
      slots_.resize(queue_depth_);
      free_slots_.reserve(queue_depth_);
      for (unsigned i = queue_depth_; i > 0; --i) free_slots_.push_back(i - 1);
      loop();
    } catch (...) {
      tracker_.fail(std::current_exception());
    }
    drain();
    io_uring_queue_exit(&ring_);
  }

 private:
  void loop() {
    unsigned busy_retries = 0;
    bool more = true;
    for (;;) {
      while (more && in_flight_ < queue_depth_) {
        ReadOperation op;
        if (!tracker_.next(&op)) {
          more = false;
          break;
        }
        if (op.file->fd() < 0) {
          tracker_.run_blocking(op);
          continue;
        }
        const unsigned slot = free_slots_.back();
        free_slots_.pop_back();
        slots_[slot] = op;
        ++in_flight_;
        prepare(slot);
      }
      if (in_flight_ == 0) return;

      const int submitted = io_uring_submit_and_wait(&ring_, 1);
      const unsigned reaped = reap();
      if (submitted >= 0 || submitted == -EINTR || reaped > 0) {
        busy_retries = 0;
        continue;
      }
      if ((submitted != -EAGAIN && submitted != -EBUSY) ||
          ++busy_retries > ReadTracker::kMaxStalledRetries) {
        fail_ring("io_uring_submit_and_wait", -submitted);
        return;
      }
      // The kernel is short of request memory: give the reads in flight a moment.
      std::this_thread::sleep_for(std::chrono::microseconds(100) * busy_retries);
    }
  }

  void prepare(unsigned slot) noexcept {
    const ReadOperation& op = slots_[slot];
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      // Cannot happen while in_flight_ <= queue_depth_ (reaped SQEs are free again), but a
      // full SQ only needs flushing.
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    const auto length = static_cast<unsigned>(std::min(op.length, kMaxSqeBytes));
    const auto found = std::lower_bound(fds_.begin(), fds_.end(), op.file->fd());
    if (registered_ && found != fds_.end() && *found == op.file->fd()) {
      io_uring_prep_read(sqe, static_cast<int>(found - fds_.begin()), op.dest, length, op.offset);
      sqe->flags |= IOSQE_FIXED_FILE;
    } else {
      io_uring_prep_read(sqe, op.file->fd(), op.dest, length, op.offset);
    }
    io_uring_sqe_set_data64(sqe, slot);
  }

  // Handles every completion that is ready; returns how many there were.
  unsigned reap() noexcept {
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      const auto slot = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
      if (tracker_.complete(slots_[slot], cqe->res) == ReadTracker::Step::kResubmit) {
        prepare(slot);
      } else {
        free_slots_.push_back(slot);  // capacity reserved: cannot throw
        --in_flight_;
      }
    }
    io_uring_cq_advance(&ring_, seen);
    return seen;
  }

  void fail_ring(const char* call, int error_number) noexcept {
    try {
      tracker_.fail(std::make_exception_ptr(
          IoError(std::string(call) + " failed: " + std::strerror(error_number), error_number, 0)));
    } catch (...) {
      tracker_.fail(std::current_exception());
    }
  }

  // Waits for the completion of every read the kernel has accepted; prepared SQEs that were
  // never submitted die with the ring.
  void drain() noexcept {
    unsigned accepted = in_flight_ - std::min(in_flight_, io_uring_sq_ready(&ring_));
    while (accepted > 0) {
      io_uring_cqe* cqe = nullptr;
      const int result = io_uring_wait_cqe(&ring_, &cqe);
      if (result == -EINTR || result == -EAGAIN) continue;
      if (result < 0) break;  // nothing left to wait on; queue_exit cancels what remains
      io_uring_cqe_seen(&ring_, cqe);
      --accepted;
    }
    in_flight_ = 0;
  }

  ReadTracker& tracker_;
  const std::vector<int>& fds_;
  const unsigned queue_depth_;
  io_uring ring_{};
  bool registered_ = false;
  std::vector<ReadOperation> slots_;
  std::vector<unsigned> free_slots_;
  unsigned in_flight_ = 0;
};

class UringStorage final : public EngineStorage {
 public:
  explicit UringStorage(const StorageOptions& options)
      : EngineStorage("uring", options),
        threads_(options.threads != 0 ? options.threads : kUringThreads),
        queue_depth_(options.queue_depth != 0 ? std::min(options.queue_depth, 4096U)
                                              : kUringQueueDepth) {}

  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    ReadTracker tracker(requests, block_size(), control);
    run_uring_reads(tracker, requests, threads_, queue_depth_);
    tracker.finish();
  }

 private:
  unsigned threads_;
  unsigned queue_depth_;
};

}  // namespace

bool uring_available() noexcept {
  static const bool available = [] {
    io_uring ring{};
    if (io_uring_queue_init(4, &ring, 0) != 0) return false;
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    const bool can_read = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_READ);
    if (probe != nullptr) io_uring_free_probe(probe);
    io_uring_queue_exit(&ring);
    return can_read;
  }();
  return available;
}

void run_uring_reads(ReadTracker& tracker, std::span<const ReadRequest> requests, unsigned threads,
                     unsigned queue_depth) noexcept {
  const std::uint64_t workers =
      std::min<std::uint64_t>(std::max(threads, 1U), tracker.operation_count());
  if (workers == 0) return;
  queue_depth = std::max(queue_depth, 1U);

  std::vector<int> fds;
  std::vector<std::thread> pool;
  try {
    for (const ReadRequest& request : requests) {
      if (request.file->fd() >= 0) fds.push_back(request.file->fd());
    }
    std::sort(fds.begin(), fds.end());
    fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
    pool.reserve(workers - 1);
    while (pool.size() + 1 < workers) {
      pool.emplace_back(
          [&tracker, &fds, queue_depth] { RingWorker(tracker, fds, queue_depth).run(); });
    }
  } catch (...) {
    // Fewer threads than asked for only makes the read slower. (If the descriptor list could
    // not be built, the rings just go unregistered.)
  }
  RingWorker(tracker, fds, queue_depth).run();
  for (std::thread& thread : pool) thread.join();
}

std::unique_ptr<Storage> make_uring_storage(const StorageOptions& options) {
  return std::make_unique<UringStorage>(options);
}

}  // namespace warpload::detail
