// PosixStorage: a pool of threads, each taking the next block_size operation off the tracker
// and serving it with pread() straight into the destination.
//
// Workers are started per read() call, with the calling thread as one of them and no more
// threads than operations (a one-block read starts none): starting a thread costs tens of
// microseconds against milliseconds per 8 MiB block, and per-call workers make concurrent
// read() calls on one Storage safe without a shared queue.
#include <algorithm>
#include <thread>
#include <vector>

#include "storage/backends.hpp"

namespace warpload::detail {
namespace {

class PosixStorage final : public EngineStorage {
 public:
  explicit PosixStorage(const StorageOptions& options)
      : EngineStorage("posix", options),
        threads_(options.threads != 0 ? options.threads : default_posix_threads()) {}

  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    ReadTracker tracker(requests, block_size(), control);
    run_posix_reads(tracker, threads_);
    tracker.finish();
  }

 private:
  unsigned threads_;
};

}  // namespace

unsigned default_posix_threads() noexcept {
  return std::max(2U, std::thread::hardware_concurrency());
}

void run_posix_reads(ReadTracker& tracker, unsigned threads) noexcept {
  const auto work = [&tracker] {
    ReadOperation op;
    while (tracker.next(&op)) tracker.run_blocking(op);
  };
  const std::uint64_t workers =
      std::min<std::uint64_t>(std::max(threads, 1U), tracker.operation_count());
  std::vector<std::thread> pool;
  try {
    pool.reserve(workers > 0 ? workers - 1 : 0);
    while (pool.size() + 1 < workers) pool.emplace_back(work);
  } catch (...) {
    // Fewer threads than asked for only makes the read slower; carry on with what started.
  }
  work();
  for (std::thread& thread : pool) thread.join();
}

std::unique_ptr<Storage> make_posix_storage(const StorageOptions& options) {
  return std::make_unique<PosixStorage>(options);
}

}  // namespace warpload::detail
