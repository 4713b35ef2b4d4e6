// Storage backends: how bytes get from a file into destination memory.
//
// One interface, many backends, each registered once in the storage layer's backend table
// with its name, a one-line summary and what it can do (BackendInfo). storage_backends() lists
// them, make_storage() creates one by name, backend_unavailable_reason() says why one cannot
// run here; the CLI, the Python bindings and the tests list and validate backends through
// these, never by comparing names. The registered backends today: posix, uring, mmap, auto,
// 3fs (3FS USRBIO), gds (GPUDirect Storage, device loads only) and http (objects named by
// URL: s3://, http://, https://); docs/architecture.md has the table.
// StorageOptions::direct opens files with O_DIRECT (backends with takes_direct): every read then
// has the file's alignment() for its offset, length and destination; callers read the aligned
// superset of what they need and place tensors inside it.
//
// Test doubles (fault injection, tracing) are decorators built on StorageWrapper.
//
// Ownership: a Storage owns its worker threads and rings. A StorageFile owns its descriptor
// (and mapping); it must outlive every read that names it. Thread safety: open() and read()
// may be called from several threads; a single read() call is itself parallel inside. The
// registry functions may be called from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "warpload/memory.hpp"

namespace warpload {

// Where the "3fs" backend lands the bytes of a host load (docs/3fs.md, "Host destinations"):
//   kIov      the destination buffers are iovs (Storage::preferred_allocator()), so the daemon
//             writes where the tensors will live: no copy, but every page is shared memory;
//   kStaging  each ring reads into its own small staging iov and copies into ordinary host
//             memory (transparent huge pages): one memcpy from a cache-resident slot;
//   kAuto     kIov where shared memory gets huge pages (/dev/shm mounted with huge=, or
//             shmem_enabled = force), else kStaging: fresh 4 KiB shared-memory pages cost more
//             (faults, zeroing, TLB misses) than the copy does.
enum class UsrbioTarget { kAuto, kIov, kStaging };

// Settings of the "3fs" backend (3FS USRBIO); 0 / empty = backend default. The names follow
// the USRBIO calls they feed (see src/storage/hf3fs_abi.h and docs/3fs.md).
struct UsrbioOptions {
  std::string mount_point;           // empty: hf3fs_extract_mount_point() per file
  unsigned rings = 0;                // rings, each with its own producer thread
  int entries = 0;                   // entries per ring (hf3fs_iorcreate4 `entries`)
  int io_depth = 0;                  // hf3fs_iorcreate4 `io_depth`: 0 = as soon as possible,
                                     // -N = at most N per batch, N = batches of exactly N
                                     // (the backend pads the last batch with 1-byte reads)
  std::uint64_t staging_bytes = 0;   // per-ring staging iov, used when a destination is not one
  std::uint64_t iov_block_size = 0;  // iov `block_size`; 0 = unblocked
  bool forbid_holes = false;         // HF3FS_IOR_FORBID_READ_HOLES: holes fail instead of zeros
  unsigned stall_timeout_ms = 0;     // a ring with no completion this long fails; 0 = 60 s
  UsrbioTarget target = UsrbioTarget::kAuto;  // host loads: zero-copy iovs or staging + copy
};

// Settings of the "http" backend (object storage: s3://, http://, https://; see
// docs/object-storage.md); 0 = backend default.
struct HttpOptions {
  unsigned connections = 0;        // ranged GETs in flight at once; 0 = 16
  std::uint64_t request_size = 0;  // bytes per ranged GET; 0 = 8 MiB
  unsigned stall_timeout_ms = 0;   // a transfer with no byte this long is retried; 0 = 30 s
  unsigned attempts = 0;           // tries per GET before the read fails; 0 = 10
  unsigned backoff_ms = 0;         // delay before the first retry, doubled per retry (with
                                   // jitter, at most 5 s); 0 = 100 ms
};

struct StorageOptions {
  bool direct = false;           // O_DIRECT, for backends that take it (BackendInfo::takes_direct)
  unsigned threads = 0;          // worker threads; 0 = backend default
  std::uint64_t block_size = 0;  // bytes per read operation; 0 = backend default
  unsigned queue_depth = 0;      // reads in flight per uring thread; 0 = backend default
  UsrbioOptions usrbio;          // "3fs" only
  HttpOptions http;              // "http" only
  // "gds" only: the CUDA ordinal its destinations are on (the Loader sets it from
  // LoadOptions::device); -1 = none, and make_storage("gds") refuses.
  int cuda_device = -1;
};

// What a backend can do; the loader plans with this, never with dynamic_cast.
struct StorageCapabilities {
  std::string name;            // resolved backend name, e.g. "uring"
  bool device_memory = false;  // can read straight into MemoryKind::kDevice buffers
  bool owns_buffers = false;   // serves bytes out of memory it owns (a mapping)
};

// An open file. Backends subclass it to keep their own state (mapping, registration).
class StorageFile {
 public:
  StorageFile(std::filesystem::path path, int fd, std::uint64_t size, std::size_t alignment)
      : path_(std::move(path)), fd_(fd), size_(size), alignment_(alignment) {}
  virtual ~StorageFile();  // closes fd() when >= 0
  StorageFile(const StorageFile&) = delete;
  StorageFile& operator=(const StorageFile&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  // 1 for buffered files; the logical block size (e.g. 4096) for O_DIRECT ones: every read's
  // offset, length and destination address must then be a multiple of it.
  [[nodiscard]] std::size_t alignment() const noexcept { return alignment_; }
  [[nodiscard]] bool direct() const noexcept { return alignment_ > 1; }
  // The descriptor, or -1 when the file is not backed by one (a decorated file).
  [[nodiscard]] virtual int fd() const noexcept { return fd_; }

  // One positioned read, as pread(2): returns bytes read (possibly fewer than `size`, 0 at end
  // of file) or a negative errno. No retries: callers handle short reads and EINTR/EAGAIN.
  [[nodiscard]] virtual std::int64_t read_some(std::byte* dest, std::size_t size,
                                               std::uint64_t offset) noexcept;

 private:
  std::filesystem::path path_;
  int fd_;
  std::uint64_t size_;
  std::size_t alignment_;
};

// One range to read. Bytes [offset, offset + length) of `file` land at [dest, dest + length).
// The part of the range past the end of the file is not read (so an O_DIRECT read may round
// its length up to the alignment); every byte before the end of the file must arrive.
struct ReadRequest {
  StorageFile* file = nullptr;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::byte* dest = nullptr;
};

// Progress and cancellation shared between a read() and its observer.
struct ReadControl {
  std::atomic<std::uint64_t> bytes_done{0};  // bytes landed so far, updated as reads complete
  std::atomic<bool> cancel{false};           // set from any thread to stop; read() throws
};

// Host memory a device load's staging ring may be made of so that the backend reads into it
// without a copy (Storage::staging_memory()). Slots made from `allocator` are page-locked and
// kept in a process-wide pool under `key` (equal keys: interchangeable memory), reused by
// later loads until release_staging_pools() (device.hpp) or exit.
struct StagingMemory {
  std::string key;
  std::shared_ptr<Allocator> allocator;  // null: ordinary page-locked memory, per load
};

class Storage {
 public:
  virtual ~Storage() = default;
  [[nodiscard]] virtual const StorageCapabilities& capabilities() const noexcept = 0;

  // Opens `path` for reading the way this backend reads. Throws NotFoundError or IoError.
  [[nodiscard]] virtual std::unique_ptr<StorageFile> open(const std::filesystem::path& path) = 0;

  // Memory this backend reads into without a copy (e.g. 3FS shared-memory iovs), or null when
  // any host memory will do. The loader allocates destinations from it unless the caller
  // gave an allocator. Its buffers keep alive whatever they need (they may outlive the
  // Storage); reads into them from this backend are zero-copy.
  [[nodiscard]] virtual std::shared_ptr<Allocator> preferred_allocator() { return nullptr; }

  // The memory a device load's staging ring should be made of (see StagingMemory), decided
  // for the files opened so far; {} for ordinary page-locked memory.
  [[nodiscard]] virtual StagingMemory staging_memory() { return {}; }

  // Reads every request completely, in parallel, and returns when all bytes have landed.
  // Short reads, EINTR and EAGAIN are retried. Throws IoError naming the file and the byte
  // offset of the first failure, CancelledError if control->cancel was set; on a throw no
  // read is still in flight, and the destination contents are unspecified.
  // `control` may be null.
  virtual void read(std::span<const ReadRequest> requests, ReadControl* control) = 0;
};

// Forwards every call to another Storage; subclass it to inject faults or trace.
class StorageWrapper : public Storage {
 public:
  explicit StorageWrapper(std::unique_ptr<Storage> target) : target_(std::move(target)) {}
  [[nodiscard]] const StorageCapabilities& capabilities() const noexcept override {
    return target_->capabilities();
  }
  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    return target_->open(path);
  }
  [[nodiscard]] std::shared_ptr<Allocator> preferred_allocator() override {
    return target_->preferred_allocator();
  }
  [[nodiscard]] StagingMemory staging_memory() override { return target_->staging_memory(); }
  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    target_->read(requests, control);
  }

 protected:
  [[nodiscard]] Storage& target() noexcept { return *target_; }

 private:
  std::unique_ptr<Storage> target_;
};

// A registered backend: its name, what it does, and what it can do. Capabilities that hold
// for every instance; StorageCapabilities reports an instance's.
struct BackendInfo {
  std::string name;           // what make_storage() and LoadOptions::backend take, e.g. "uring"
  std::string summary;        // one line for help texts and listings
  bool takes_direct = false;  // honours StorageOptions::direct (O_DIRECT on request)
  bool picks_direct = false;  // decides O_DIRECT per file by itself
  bool host_destinations = false;     // reads into host memory (any host load)
  bool device_destinations = false;   // reads straight into device memory (device loads only)
  bool stages_when_unusable = false;  // a device load that cannot use it reads through the
                                      // staged pipeline instead of failing
  bool needs_mount = false;           // reads only files on its own file system (a 3FS mount)
  bool owns_buffers = false;          // serves bytes out of memory it owns (a mapping)
  bool preferred_allocator = false;   // has a preferred_allocator(): zero-copy destinations
  bool baseline = false;     // the reference implementation's way of reading: bench's yardstick
  bool benchmarked = false;  // a row of `warpload bench` (device-only ones on device runs)
  bool tuned = false;        // measured by `warpload tune` when no backend is named
  // The StorageOptions fields it reads; it ignores the others.
  bool uses_threads = false;
  bool uses_block_size = false;
  bool uses_queue_depth = false;
  bool uses_usrbio = false;  // StorageOptions::usrbio
  bool uses_http = false;    // StorageOptions::http
  // Reads objects named by URL (s3://, http://, https://) and nothing else; a load of URLs
  // with backend "auto" reads with it. Not in available_storage_names() (local files).
  bool reads_urls = false;
};

// Every registered backend, available here or not, in the order `bench` shows them.
[[nodiscard]] std::vector<BackendInfo> storage_backends();

// The registered backend called `name`, or null. The pointer stays valid for the process.
[[nodiscard]] const BackendInfo* find_backend(std::string_view name) noexcept;

// The backend loads use when none is named and no settings file names one.
[[nodiscard]] std::string_view default_backend_name() noexcept;

// "" when backend `name` can run on this machine with `options` (its library loads, the
// kernel has what it needs); otherwise the sentence a user sees, e.g. for "3fs" naming the
// client library, every path tried and WARPLOAD_HF3FS_LIB. An unregistered name gets a
// sentence listing the registered ones. Cheap after the first call per backend (libraries
// are loaded once); never throws.
[[nodiscard]] std::string backend_unavailable_reason(std::string_view name,
                                                     const StorageOptions& options = {});

// Creates backend `name` (see storage_backends(); a device_destinations backend needs
// options.cuda_device). Throws UnsupportedError for an unregistered name (the message lists
// the available ones) or one that cannot run here (backend_unavailable_reason()'s sentence, or
// a more specific one from the backend).
[[nodiscard]] std::unique_ptr<Storage> make_storage(std::string_view name,
                                                    const StorageOptions& options = {});

// Names of the backends with host destinations that read local files and can run on this
// machine, in the order `bench` shows them (the URL backend, reads_urls, is not one).
[[nodiscard]] std::vector<std::string> available_storage_names();

// "auto", "iov", "staging"; parse returns false (and leaves *out alone) for any other text.
[[nodiscard]] std::string_view usrbio_target_name(UsrbioTarget target) noexcept;
[[nodiscard]] bool parse_usrbio_target(std::string_view text, UsrbioTarget* out) noexcept;
// kAuto resolved on this machine (kIov or kStaging; see UsrbioTarget); others unchanged.
[[nodiscard]] UsrbioTarget resolve_usrbio_target(UsrbioTarget target);

}  // namespace warpload
