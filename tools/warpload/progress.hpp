// A one-line progress bar for long loads: "[#####-----]  42%  3.21 GB/s  ETA 0:03".
//
// Drawn only when the stream is a terminal; otherwise every call is a no-op, so callers need
// no isatty() checks of their own. The line is redrawn in place with '\r' and ended with a
// newline by finish() (or the destructor), so an error message printed afterwards starts on
// a fresh line.
//
// Thread safety: update() may be called from any thread (the Loader's monitor thread) while
// the owner waits; finish() must not race with the destructor.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace warpload::cli {

class ProgressBar {
 public:
  // `label` is printed before the bar, e.g. "load".
  ProgressBar(std::FILE* stream, std::string label);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  [[nodiscard]] bool enabled() const noexcept { return enabled_; }

  // Redraws the bar for `done` of `total` bytes (rate-limited; the final update always draws).
  void update(std::uint64_t done, std::uint64_t total);

  // Ends the line if anything was drawn. Idempotent.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;

  std::FILE* stream_;
  std::string label_;
  bool enabled_;
  std::mutex mutex_;
  Clock::time_point start_;
  Clock::time_point last_draw_{};
  bool drawn_ = false;
  bool finished_ = false;
};

}  // namespace warpload::cli
