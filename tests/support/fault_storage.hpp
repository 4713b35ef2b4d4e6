// FaultInjectingStorage: a StorageWrapper whose files misbehave at a chosen file offset.
//
// open() wraps the target's file in a FaultyFile: same path, size and alignment, fd() == -1,
// and a read_some() that forwards to the target's file except when the read covers the fault
// offset. read() hands the requests (naming FaultyFiles) to the target's read(), so the
// target's own engine and ReadTracker handle the fault; io_uring serves fd() == -1 files with
// read_some() on its worker threads.
//
// Faults:
//   kShortRead  once: the read succeeds but reports fewer bytes, ending just past the offset
//               (so an offset not one below an aligned one gives O_DIRECT an unaligned count)
//   kInterrupt  once: -EINTR, nothing read
//   kTryAgain   once: -EAGAIN, nothing read
//   kIoError    every read covering the offset: -EIO
//   kCorrupt    every read covering the offset succeeds, with the byte at the offset inverted
//               (silent corruption: only LoadOptions::verify or a manifest can notice)
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <utility>

#include "warpload/storage.hpp"

namespace warpload::testing {

enum class Fault : std::uint8_t { kNone, kShortRead, kInterrupt, kTryAgain, kIoError, kCorrupt };

struct FaultPlan {
  Fault fault = Fault::kNone;
  std::uint64_t offset = 0;  // file offset whose read misbehaves
};

// Shared by every file one FaultInjectingStorage opens.
struct FaultCounters {
  std::atomic<unsigned> injected{0};  // faults actually injected
  std::atomic<unsigned> reads{0};     // read_some calls seen
};

class FaultyFile final : public StorageFile {
 public:
  FaultyFile(std::unique_ptr<StorageFile> inner, FaultPlan plan,
             std::shared_ptr<FaultCounters> counters)
      // fd -1: the inner file owns (and closes) the descriptor.
      : StorageFile(inner->path(), -1, inner->size(), inner->alignment()),
        inner_(std::move(inner)),
        plan_(plan),
        counters_(std::move(counters)) {}

  [[nodiscard]] int fd() const noexcept override { return -1; }

  [[nodiscard]] std::int64_t read_some(std::byte* dest, std::size_t size,
                                       std::uint64_t offset) noexcept override {
    counters_->reads.fetch_add(1);
    const bool covers =
        plan_.fault != Fault::kNone && offset <= plan_.offset && plan_.offset - offset < size;
    if (!covers) return inner_->read_some(dest, size, offset);
    switch (plan_.fault) {
      case Fault::kIoError:
        counters_->injected.fetch_add(1);
        return -EIO;
      case Fault::kCorrupt: {
        const std::int64_t got = inner_->read_some(dest, size, offset);
        if (got > static_cast<std::int64_t>(plan_.offset - offset)) {
          counters_->injected.fetch_add(1);
          dest[plan_.offset - offset] ^= std::byte{0xff};
        }
        return got;
      }
      case Fault::kInterrupt:
      case Fault::kTryAgain:
        if (fired_.exchange(true)) break;
        counters_->injected.fetch_add(1);
        return plan_.fault == Fault::kInterrupt ? -EINTR : -EAGAIN;
      case Fault::kShortRead: {
        if (fired_.exchange(true)) break;
        const std::int64_t got = inner_->read_some(dest, size, offset);
        const auto keep = static_cast<std::int64_t>(plan_.offset - offset) + 1;
        if (got <= keep || size < 2) return got;  // nothing to shorten
        counters_->injected.fetch_add(1);
        return keep;
      }
      case Fault::kNone:
        break;
    }
    return inner_->read_some(dest, size, offset);
  }

 private:
  std::unique_ptr<StorageFile> inner_;
  FaultPlan plan_;
  std::shared_ptr<FaultCounters> counters_;
  std::atomic<bool> fired_{false};
};

class FaultInjectingStorage final : public StorageWrapper {
 public:
  FaultInjectingStorage(std::unique_ptr<Storage> target, FaultPlan plan)
      : StorageWrapper(std::move(target)), plan_(plan) {}

  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    return std::make_unique<FaultyFile>(target().open(path), plan_, counters_);
  }

  [[nodiscard]] const FaultCounters& counters() const noexcept { return *counters_; }

 private:
  FaultPlan plan_;
  std::shared_ptr<FaultCounters> counters_ = std::make_shared<FaultCounters>();
};

}  // namespace warpload::testing
