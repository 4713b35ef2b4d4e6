// ReadExecutor: the one read path. Loader, DistributedLoader and ChunkedReader (hence the
// Python bindings and the CLI) differ only in which file byte ranges they place where; how
// those bytes are read is decided and done here, once (docs/architecture.md, "One load path").
//
// At construction (all before a byte is read):
//   - settings: LoadOptions' explicit ones, then the settings file, then the backends'
//     defaults (resolve_settings; a backend from the config that cannot run names the file);
//   - destination: LoadOptions::device, "cpu" or "cuda:N" (a missing driver or ordinal is the
//     load's UnsupportedError);
//   - storage: LoadOptions::custom_storage, else for a CUDA device the backend
//     choose_device_storage() picks (GDS straight into device memory, or a host backend),
//     else make_storage();
//   - allocator: LoadOptions::allocator (it must make device memory for a CUDA device, and a
//     backend must be able to write what it makes), else the backend's preferred_allocator()
//     for host destinations (3FS iovs: zero copy), else host or CUDA device memory;
//   - mode: direct (the backend writes the destination, host or device) or staged (a CUDA
//     destination and a backend that cannot write device memory: the staged pipeline).
//
// Then callers lay out destination memory with place() (or their own buffer, aligned to the
// file's alignment() where the stream layout guarantees the rest, as DistributedLoader's),
// schedule ranges with add() and read them all with run(), as many rounds as they like.
//
// A direct read of file bytes [begin, end) reads the aligned superset
// [align_down(begin, a), align_up(end, a)) of the file's alignment `a` (1 buffered, the block
// size for O_DIRECT) to dest - lead: the caller owns `lead` bytes before `dest` and the tail
// after `end`, and dest - lead is a multiple of `a` (place() allocates exactly that). A
// staged read copies only [begin, end) to dest.
//
// Errors: every file is opened once and its size checked against its header (IoError naming
// it); run() throws the read's first error (IoError naming file and offset, CancelledError,
// CUDA failures naming file, range and device) with nothing in flight; the caller must then
// drop the buffers of that round. Thread safety: one thread at a time; run() is parallel
// inside.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "core/staged_pipeline.hpp"
#include "warpload/device.hpp"
#include "warpload/loader.hpp"
#include "warpload/memory.hpp"
#include "warpload/plan.hpp"
#include "warpload/storage.hpp"

namespace warpload::detail {

// How destination memory for file bytes [begin, end) must be laid out (see the top).
struct ReadWindow {
  std::uint64_t lead = 0;       // bytes before `begin` the read also writes
  std::uint64_t bytes = 0;      // memory from dest - lead that the read may write
  std::uint64_t alignment = 1;  // dest - lead must be a multiple of this
};

// Destination memory from place(): byte `begin` of the range lands at `dest`.
struct Placement {
  std::shared_ptr<Buffer> buffer;
  std::byte* dest = nullptr;
};

class ReadExecutor {
 public:
  // `files` must outlive the executor (the plan's files, indexed by add()'s `file`).
  ReadExecutor(const LoadOptions& options, std::span<const PlannedFile> files);
  ~ReadExecutor();
  ReadExecutor(const ReadExecutor&) = delete;
  ReadExecutor& operator=(const ReadExecutor&) = delete;

  [[nodiscard]] const Device& device() const noexcept { return device_; }
  [[nodiscard]] Storage& storage() noexcept { return *storage_; }
  // Where destinations come from (see the top of this file).
  [[nodiscard]] const std::shared_ptr<Allocator>& allocator() const noexcept { return allocator_; }
  // The file's alignment for direct reads (opens it on first use).
  [[nodiscard]] std::uint64_t alignment(std::size_t file);

  // Allocates destination memory for file bytes [begin, end) from allocator(), laid out as a
  // ReadWindow says (the top of this file), naming the file when it fails. For buffered host reads
  // `phase` places dest at phase % 64 past a 64-byte boundary, so a tensor at data-section offset
  // `o` of the range keeps o's alignment (pass the range's data-section offset).
  [[nodiscard]] Placement place(std::size_t file, std::uint64_t begin, std::uint64_t end,
                                std::uint64_t phase = 0);

  // Schedules file bytes [begin, end) to land at `dest` in the next run(). Empty ranges are
  // ignored.
  void add(std::size_t file, std::uint64_t begin, std::uint64_t end, std::byte* dest);
  // As add(), for a host destination laid out without window(): exactly [dest, dest + end -
  // begin) is written. Where the read needs alignment (O_DIRECT) it lands in a bounce buffer
  // from place() and run() copies the range out after the read.
  void add_exact(std::size_t file, std::uint64_t begin, std::uint64_t end, std::byte* dest);

  // Reads everything add()ed since the last run() and returns its stats (bytes: the ranges'
  // bytes). LoadOptions::on_progress sees (done, progress_total) about ten times a second and
  // once at the end; LoadOptions::cancel (or cancel()) stops the reads with CancelledError.
  LoadStats run(std::uint64_t progress_total);
  // From any thread: the run() in progress, and the next one, throw CancelledError.
  void cancel() noexcept;
  // Forgets what was add()ed since the last run() (a caller whose set-up failed half-way drops
  // those destinations; nothing is read into them).
  void discard() noexcept;
  // Bytes of file read by every successful run() so far, alignment supersets included,
  // clipped at the end of each file.
  [[nodiscard]] std::uint64_t bytes_read() const noexcept { return bytes_read_; }
  // Closes every file opened so far (GDS deregisters them); later add()s reopen.
  void close_files() noexcept;

 private:
  [[nodiscard]] ReadWindow window(std::size_t file, std::uint64_t begin, std::uint64_t end);
  // Settings resolved, then the backend for this destination (the top of this file).
  std::shared_ptr<Storage> choose_storage(std::span<const PlannedFile> files);
  StorageFile& open(std::size_t file);

  LoadOptions options_;
  std::span<const PlannedFile> files_;
  Device device_;
  std::shared_ptr<Storage> storage_;
  std::shared_ptr<Allocator> allocator_;
  bool staged_ = false;
  LoadStats base_stats_;  // backend, device, config, storage, gds_* of every run
  std::vector<std::unique_ptr<StorageFile>> open_;  // per planned file, or null
  std::vector<ReadRequest> requests_;
  std::vector<StagedFile> staged_files_;
  struct BounceCopy {
    Placement from;
    std::byte* to;
    std::uint64_t bytes;
  };
  std::vector<BounceCopy> bounces_;  // add_exact() ranges read through a bounce buffer
  std::uint64_t largest_staged_read_ = 0;
  std::uint64_t round_bytes_ = 0;  // this round's range bytes
  std::uint64_t round_read_ = 0;   // this round's file bytes (aligned supersets)
  std::uint64_t bytes_read_ = 0;
  std::mutex cancel_mutex_;        // guards active_ against run() leaving
  bool cancelled_ = false;         // cancel() came; the next run() throws
  ReadControl* active_ = nullptr;  // run()'s, while it reads
};

}  // namespace warpload::detail
