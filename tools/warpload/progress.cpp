#include "progress.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "units.hpp"

namespace warpload::cli {
namespace {

constexpr int kBarWidth = 30;
constexpr auto kMinRedrawInterval = std::chrono::milliseconds(50);

std::string format_eta(double seconds) {
  const long long total = std::llround(seconds);
  if (total >= 3600) {
    return fmt::format("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60);
  }
  return fmt::format("{}:{:02}", total / 60, total % 60);
}

}  // namespace

ProgressBar::ProgressBar(std::FILE* stream, std::string label)
    : stream_(stream),
      label_(std::move(label)),
      enabled_(stream != nullptr && isatty(fileno(stream)) == 1),
      start_(Clock::now()) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(std::uint64_t done, std::uint64_t total) {
  if (!enabled_) {
    return;
  }
  std::lock_guard lock(mutex_);
  if (finished_) {
    return;
  }
  const Clock::time_point now = Clock::now();
  const bool complete = total == 0 || done >= total;
  if (!complete && drawn_ && now - last_draw_ < kMinRedrawInterval) {
    return;
  }
  last_draw_ = now;

  const double fraction =
      total == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
  const int filled = static_cast<int>(fraction * kBarWidth);
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;

  std::string tail;
  if (complete) {
    tail = fmt::format("in {}", format_seconds(elapsed));
  } else if (rate > 0) {
    tail = fmt::format("ETA {}", format_eta(static_cast<double>(total - done) / rate));
  } else {
    tail = "ETA --:--";
  }
  // "\033[K" clears what a longer previous line left behind.
  fmt::print(stream_, "\r{} [{}{}] {:3.0f}%  {:6.2f} GB/s  {}\033[K", label_,
             std::string(static_cast<std::size_t>(filled), '#'),
             std::string(static_cast<std::size_t>(kBarWidth - filled), '-'), fraction * 100,
             rate / 1e9, tail);
  std::fflush(stream_);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (!enabled_) {
    return;
  }
  std::lock_guard lock(mutex_);
  if (finished_) {
    return;
  }
  finished_ = true;
  if (drawn_) {
    std::fputc('\n', stream_);
    std::fflush(stream_);
  }
}

}  // namespace warpload::cli
