// Internals shared by the storage backends: opening files, the read engines, the factories.
//
// Engines run a ReadTracker's operations to completion. They never throw: failures go to the
// tracker, and the caller calls tracker.finish() once the engine has returned. The calling
// thread is one of the workers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "common/unique_fd.hpp"
#include "storage/read_tracker.hpp"
#include "warpload/storage.hpp"

namespace warpload::detail {

// Alignment used for O_DIRECT when statx(STATX_DIOALIGN) does not report one.
inline constexpr std::size_t kFallbackDirectAlignment = 4096;

// Defaults, chosen by measurement on a 2-core VM (ext4 on virtio, 2 GiB in 4 files):
// buffered 8 MiB blocks beat 2/4/16/32 MiB by 5-15% (fewer syscalls, yet enough blocks to keep
// both threads busy to the end); O_DIRECT 1 MiB blocks with 32 in flight per ring keep the
// device saturated (4 MiB or deeper queues gained nothing).
inline constexpr std::uint64_t kBufferedBlockSize = 8ULL << 20;
inline constexpr std::uint64_t kDirectBlockSize = 1ULL << 20;
inline constexpr unsigned kUringQueueDepth = 32;
// io_uring: two rings on two threads for either kind of file. Page-cache hits are copied on the
// submitting thread, so buffered reads want a thread per core; O_DIRECT reads fault in and pin
// the fresh destination on the submitting thread, which one thread cannot do at disk speed
// (cold 2 GiB: one ring 1.4-1.5 GB/s, two rings 1.8-1.9 GB/s).
inline constexpr unsigned kUringThreads = 2;

// An open regular file: descriptor (owned by the caller), size and alignment.
struct OpenedFile {
  int fd = -1;
  std::uint64_t size = 0;
  std::size_t alignment = 1;  // 1 for buffered files
};

// Opens `path` read-only. With `direct`, asks for O_DIRECT; a filesystem that refuses it
// (EINVAL, e.g. tmpfs) gets a buffered descriptor and alignment 1, which callers see through
// StorageFile::alignment(). Throws NotFoundError (ENOENT), IoError naming the path otherwise,
// and IoError (EISDIR) / UnsupportedError for directories and other non-regular files.
[[nodiscard]] OpenedFile open_file(const std::filesystem::path& path, bool direct);

// open_file() wrapped in a plain StorageFile that owns the descriptor.
[[nodiscard]] std::unique_ptr<StorageFile> open_storage_file(const std::filesystem::path& path,
                                                             bool direct);

// Switches an open buffered descriptor to O_DIRECT; returns its alignment, or 1 (leaving it
// buffered) when the filesystem refuses.
[[nodiscard]] std::size_t enable_direct(int fd) noexcept;

// The O_DIRECT alignment of an open file: max(memory, offset) alignment from
// statx(STATX_DIOALIGN), else kFallbackDirectAlignment.
[[nodiscard]] std::size_t direct_io_alignment(int fd) noexcept;

// Base of the backends that open plain files themselves and serve reads with one engine
// (posix, uring): name, O_DIRECT choice and block size from the options.
class EngineStorage : public Storage {
 public:
  EngineStorage(std::string name, const StorageOptions& options)
      : direct_(options.direct),
        block_size_(options.block_size != 0 ? options.block_size
                    : options.direct        ? kDirectBlockSize
                                            : kBufferedBlockSize) {
    capabilities_.name = std::move(name);
  }
  [[nodiscard]] const StorageCapabilities& capabilities() const noexcept override {
    return capabilities_;
  }
  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    return open_storage_file(path, direct_);
  }

 protected:
  [[nodiscard]] std::uint64_t block_size() const noexcept { return block_size_; }

 private:
  StorageCapabilities capabilities_;
  bool direct_;
  std::uint64_t block_size_;
};

// Whether io_uring can be used on this kernel (probed once, cached).
[[nodiscard]] bool uring_available() noexcept;

// The thread-pool engine: `threads` workers each take the next operation and serve it with
// read_some() (pread) until done.
void run_posix_reads(ReadTracker& tracker, unsigned threads) noexcept;

// The io_uring engine: `threads` workers, each with its own ring of `queue_depth` entries and
// the request's descriptors registered. Files whose fd() is -1 (decorated files) are served
// with read_some() on the worker that picked them up.
void run_uring_reads(ReadTracker& tracker, std::span<const ReadRequest> requests, unsigned threads,
                     unsigned queue_depth) noexcept;

// Default worker count for the thread-pool engine: max(2, hardware_concurrency).
[[nodiscard]] unsigned default_posix_threads() noexcept;

[[nodiscard]] std::unique_ptr<Storage> make_posix_storage(const StorageOptions& options);
[[nodiscard]] std::unique_ptr<Storage> make_uring_storage(const StorageOptions& options);
[[nodiscard]] std::unique_ptr<Storage> make_mmap_storage(const StorageOptions& options);
[[nodiscard]] std::unique_ptr<Storage> make_auto_storage(const StorageOptions& options);
// "http": objects by URL through libcurl (storage/object_client.hpp).
[[nodiscard]] std::unique_ptr<Storage> make_http_storage(const StorageOptions& options);
// "3fs": needs the USRBIO client library (storage/hf3fs_shim.hpp); throws what hf3fs_api() throws.
[[nodiscard]] std::unique_ptr<Storage> make_usrbio_storage(const StorageOptions& options);
// "gds": needs options.cuda_device >= 0 and cuFile (device/cufile_shim.hpp); throws
// UnsupportedError with the reason it cannot run (cufile_open_driver()). `mode`, when not null,
// receives the mode cuFile runs in.
enum class CufileMode : std::uint8_t;
[[nodiscard]] std::unique_ptr<Storage> make_gds_storage(const StorageOptions& options,
                                                        CufileMode* mode);

// AutoStorage reads files smaller than this buffered whatever their cache state.
inline constexpr std::uint64_t kAutoDirectMinSize = 64ULL << 20;

// Fraction (0..1) of the file's pages that are in the page cache: cachestat(2) when the kernel
// has it, else mincore(2) over a temporary mapping. AutoStorage reads a file buffered when at
// least half of it is resident; its choice shows as StorageFile::direct() on the opened file.
[[nodiscard]] double page_cache_fraction(int fd, std::uint64_t size) noexcept;

}  // namespace warpload::detail
