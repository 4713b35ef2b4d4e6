// ReadTracker: splits one read() call's requests into operations and decides what each
// operation's result means. Every backend's engine uses it, so retries (short reads, EINTR,
// EAGAIN), end-of-file rules, progress, cancellation and error reporting exist once.
//
// Operations: request i is cut into pieces of `block_size` bytes (rounded up to the file's
// alignment for O_DIRECT files, so every piece keeps offset, length and destination aligned).
// Only the bytes up to the end of the file are issued: a buffered file's operations stop at
// size(); an O_DIRECT file's stop at size() rounded up to alignment() (the kernel returns a
// short read at end of file). An operation's `required` bytes are those before size(): they
// must all arrive.
//
// Thread safety: next(), complete(), run_blocking(), fail() and stopped() may be called from
// any number of worker threads at once; finish() is called once, after every worker is done.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
#include <vector>

#include "warpload/storage.hpp"

namespace warpload::detail {

// One piece of a request in progress. Engines keep it while the read is in flight and hand it
// back to complete(), which advances it for a resubmission.
struct ReadOperation {
  StorageFile* file = nullptr;
  std::byte* dest = nullptr;   // where the next byte lands
  std::uint64_t offset = 0;    // file offset of the next read
  std::uint64_t length = 0;    // bytes the next read asks for
  std::uint64_t required = 0;  // bytes of `length` that lie before the end of the file
  unsigned stalled = 0;        // retries in a row without progress (EINTR, EAGAIN, tiny reads)
};

class ReadTracker {
 public:
  // What an engine does with an operation after complete().
  enum class Step : std::uint8_t {
    kDone,      // finished (or dropped because the read has stopped): release it
    kResubmit,  // issue it again as it now stands (offset/length/dest updated)
  };

  // `block_size` 0 means one operation per request. `control` may be null. `shared_stop`, when
  // not null, links several trackers serving one read() call: the first failure in any of them
  // sets it and the others stop handing out work (their finish() then does not throw for it).
  ReadTracker(std::span<const ReadRequest> requests, std::uint64_t block_size, ReadControl* control,
              std::atomic<bool>* shared_stop = nullptr);
  ReadTracker(const ReadTracker&) = delete;
  ReadTracker& operator=(const ReadTracker&) = delete;

  // Number of operations the requests were split into.
  [[nodiscard]] std::uint64_t operation_count() const noexcept { return op_count_; }

  // Hands out the next operation; false when all have been handed out or the read stopped.
  [[nodiscard]] bool next(ReadOperation* op) noexcept;

  // Applies the result of one read of `op` (bytes, or a negative errno, as read_some returns).
  // Records the first failure. Sleeps briefly before returning kResubmit after -EAGAIN.
  [[nodiscard]] Step complete(ReadOperation& op, std::int64_t result) noexcept;

  // Serves `op` with op.file->read_some() until it is done: the synchronous engine.
  void run_blocking(ReadOperation& op) noexcept;

  // Records a failure that did not come from a read result (e.g. io_uring_submit failing).
  void fail(std::exception_ptr error) noexcept;

  // True once the read failed, was cancelled, or a linked tracker failed.
  [[nodiscard]] bool stopped() const noexcept;

  // Throws the first recorded error, or CancelledError if the read was cancelled before every
  // operation finished. Call after all workers have returned.
  void finish();

  // Bounds on retries that make no progress; exposed for tests.
  static constexpr unsigned kMaxStalledRetries = 64;

 private:
  struct Span {
    std::uint64_t first_op;   // index of this request's first operation
    std::uint64_t block;      // operation size for this request
    std::uint64_t issue_end;  // file offset where this request's operations stop
  };

  void fail_read(const ReadOperation& op, int error_number) noexcept;
  void add_progress(std::uint64_t bytes) noexcept;

  std::span<const ReadRequest> requests_;
  std::vector<Span> spans_;  // one per request
  std::uint64_t op_count_ = 0;
  ReadControl* control_;
  std::atomic<bool>* shared_stop_;

  std::atomic<std::uint64_t> cursor_{0};
  std::atomic<bool> failed_{false};
  std::mutex error_mutex_;
  std::exception_ptr first_error_;
};

}  // namespace warpload::detail
