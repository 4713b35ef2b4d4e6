// ProgressMonitor: while a read runs, calls LoadOptions::on_progress about ten times a second
// and forwards the caller's cancel flag (LoadOptions::cancel) to the read's ReadControl.
// Used by Loader and DistributedLoader around their read phase.
//
// Thread safety: one monitor per read; its thread calls `callback` (which must not throw) and
// only reads `control` and `cancel`. The destructor stops and joins that thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "warpload/storage.hpp"

namespace warpload::detail {

class ProgressMonitor {
 public:
  ProgressMonitor(const std::function<void(std::uint64_t, std::uint64_t)>& callback,
                  ReadControl& control, std::uint64_t total, const std::atomic<bool>* cancel)
      : callback_(callback), control_(control), total_(total), cancel_(cancel) {
    if (callback_ || cancel_ != nullptr) thread_ = std::thread([this] { run(); });
  }
  ~ProgressMonitor() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  ProgressMonitor(const ProgressMonitor&) = delete;
  ProgressMonitor& operator=(const ProgressMonitor&) = delete;

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stop_; })) {
      if (cancel_ != nullptr && cancel_->load()) control_.cancel.store(true);
      if (callback_) {
        callback_(std::min(control_.bytes_done.load(std::memory_order_relaxed), total_), total_);
      }
    }
  }

  const std::function<void(std::uint64_t, std::uint64_t)>& callback_;
  ReadControl& control_;
  std::uint64_t total_;
  const std::atomic<bool>* cancel_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace warpload::detail
