#include "storage/read_tracker.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <string>
#include <thread>

#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

std::uint64_t round_up(std::uint64_t value, std::uint64_t alignment) noexcept {
  const std::uint64_t rest = value % alignment;
  if (rest == 0) return value;
  const std::uint64_t up = value + (alignment - rest);
  return up < value ? std::numeric_limits<std::uint64_t>::max() - (alignment - 1) : up;
}

// Bounded exponential backoff for EAGAIN: 50 us doubling up to 10 ms per try.
void back_off(unsigned attempt) noexcept {
  const unsigned shift = std::min(attempt > 0 ? attempt - 1 : 0U, 8U);
  const std::chrono::microseconds delay(std::min(50U << shift, 10'000U));
  std::this_thread::sleep_for(delay);
}

}  // namespace

ReadTracker::ReadTracker(std::span<const ReadRequest> requests, std::uint64_t block_size,
                         ReadControl* control, std::atomic<bool>* shared_stop)
    : requests_(requests), control_(control), shared_stop_(shared_stop) {
  spans_.reserve(requests.size());
  for (const ReadRequest& request : requests) {
    const std::uint64_t alignment = std::max<std::uint64_t>(request.file->alignment(), 1);
    const std::uint64_t end =
        request.length > std::numeric_limits<std::uint64_t>::max() - request.offset
            ? std::numeric_limits<std::uint64_t>::max()
            : request.offset + request.length;
    // Bytes past the end of the file are never needed; an O_DIRECT read still has to ask for
    // whole blocks, so it stops at the aligned end instead.
    const std::uint64_t issue_end = std::min(end, round_up(request.file->size(), alignment));
    const std::uint64_t issued = issue_end > request.offset ? issue_end - request.offset : 0;
    const std::uint64_t block =
        block_size == 0 ? std::max<std::uint64_t>(issued, 1) : round_up(block_size, alignment);
    spans_.push_back(Span{op_count_, block, issue_end});
    op_count_ += (issued + block - 1) / block;
  }
}

bool ReadTracker::stopped() const noexcept {
  return failed_.load(std::memory_order_relaxed) ||
         (control_ != nullptr && control_->cancel.load(std::memory_order_relaxed)) ||
         (shared_stop_ != nullptr && shared_stop_->load(std::memory_order_relaxed));
}

bool ReadTracker::next(ReadOperation* op) noexcept {
  if (stopped()) return false;
  const std::uint64_t index = cursor_.fetch_add(1, std::memory_order_relaxed);
  if (index >= op_count_) return false;
  // The last request whose first operation is <= index owns it; requests that produce no
  // operations share their first_op with the next request and are skipped by upper_bound.
  const auto owner =
      std::upper_bound(spans_.begin(), spans_.end(), index,
                       [](std::uint64_t i, const Span& s) { return i < s.first_op; });
  const auto request_index = static_cast<std::size_t>(owner - spans_.begin()) - 1;
  const ReadRequest& request = requests_[request_index];
  const Span& span = spans_[request_index];
  const std::uint64_t skip = (index - span.first_op) * span.block;

  op->file = request.file;
  op->offset = request.offset + skip;
  op->dest = request.dest + skip;
  op->length = std::min(span.block, span.issue_end - op->offset);
  const std::uint64_t size = request.file->size();
  op->required = op->offset < size ? std::min(op->length, size - op->offset) : 0;
  op->stalled = 0;
  return true;
}

ReadTracker::Step ReadTracker::complete(ReadOperation& op, std::int64_t result) noexcept {
  if (result < 0) {
    const int error_number = static_cast<int>(-result);
    if (error_number != EINTR && error_number != EAGAIN) {
      fail_read(op, error_number);
      return Step::kDone;
    }
    if (++op.stalled > kMaxStalledRetries) {
      fail_read(op, error_number);
      return Step::kDone;
    }
    if (error_number == EAGAIN) back_off(op.stalled);
    return stopped() ? Step::kDone : Step::kResubmit;
  }

  const std::uint64_t got = std::min(static_cast<std::uint64_t>(result), op.length);
  if (got >= op.required) {
    // Everything before the end of the file arrived; an O_DIRECT tail may stop short of the
    // aligned length at end of file, which is the expected outcome.
    add_progress(op.required);
    return Step::kDone;
  }
  if (got == 0) {
    fail_read(op, 0);
    return Step::kDone;
  }

  // Short read before the end of the file: continue with the remainder. An O_DIRECT file must
  // keep every read aligned, so it restarts at the last aligned point and reads the few bytes
  // past it again.
  const std::uint64_t alignment = std::max<std::uint64_t>(op.file->alignment(), 1);
  const std::uint64_t advance = got - got % alignment;
  if (advance == 0) {
    if (++op.stalled > kMaxStalledRetries) {
      fail_read(op, EIO);
      return Step::kDone;
    }
  } else {
    op.stalled = 0;
    op.offset += advance;
    op.dest += advance;
    op.length -= advance;
    op.required -= advance;
    add_progress(advance);
  }
  return stopped() ? Step::kDone : Step::kResubmit;
}

void ReadTracker::run_blocking(ReadOperation& op) noexcept {
  while (complete(op, op.file->read_some(op.dest, op.length, op.offset)) == Step::kResubmit) {
  }
}

void ReadTracker::add_progress(std::uint64_t bytes) noexcept {
  if (control_ != nullptr && bytes > 0) {
    control_->bytes_done.fetch_add(bytes, std::memory_order_relaxed);
  }
}

void ReadTracker::fail_read(const ReadOperation& op, int error_number) noexcept {
  if (stopped()) return;  // a failure after the first one (or a cancel) adds nothing
  try {
    std::string message = op.file->path().string();
    if (error_number == 0) {
      message += ": unexpected end of file reading " + std::to_string(op.length) +
                 " bytes at offset " + std::to_string(op.offset) + " (size at open " +
                 std::to_string(op.file->size()) + ")";
    } else {
      message += ": read of " + std::to_string(op.length) + " bytes at offset " +
                 std::to_string(op.offset) + " failed: " + std::strerror(error_number);
    }
    fail(std::make_exception_ptr(IoError(message, error_number, op.offset)));
  } catch (...) {
    fail(std::current_exception());  // std::bad_alloc while building the message
  }
}

void ReadTracker::fail(std::exception_ptr error) noexcept {
  {
    const std::lock_guard<std::mutex> lock(error_mutex_);
    if (first_error_ == nullptr) first_error_ = std::move(error);
    failed_.store(true, std::memory_order_relaxed);
  }
  if (shared_stop_ != nullptr) shared_stop_->store(true, std::memory_order_relaxed);
}

void ReadTracker::finish() {
  {
    const std::lock_guard<std::mutex> lock(error_mutex_);
    if (first_error_ != nullptr) std::rethrow_exception(first_error_);
  }
  if (control_ != nullptr && control_->cancel.load(std::memory_order_relaxed)) {
    throw CancelledError("read cancelled after " +
                         std::to_string(control_->bytes_done.load(std::memory_order_relaxed)) +
                         " bytes");
  }
  // Otherwise every operation finished, or a linked tracker failed and reports it.
}

}  // namespace warpload::detail
