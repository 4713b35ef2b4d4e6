// GdsStorage ("gds"): GPUDirect Storage through cuFile (src/device/cufile_shim.*), reading
// straight into CUDA device memory.
//
// open(): the file is opened with O_DIRECT where its file system allows (alignment() is then
// max(4096, the kernel's DIO alignment), so the loader's aligned superset keeps every cuFileRead
// offset, length and device address 4 KiB aligned, as GDS DMA wants), and registered with
// cuFileHandleRegister; the handle is deregistered before the descriptor closes. A refused
// registration is UnsupportedError naming the file and cuFile's reason: the Loader's device
// planning (src/storage/device_storage.*) takes that as "fall back to the staged pipeline".
//
// read(): each request's destination is registered with cuFileBufRegister for the call (unless
// $WARPLOAD_GDS_REGISTER_BUFFERS is "0"; a refused registration -- typically BAR1 space -- only
// means cuFile reads through its own bounce buffers) and deregistered before read() returns.
// `threads` workers (the caller is one), each with the device's primary context current and
// placed on the GPU's NUMA node, take block_size operations off a ReadTracker and serve each
// with cuFileRead until done. Results: >= 0 bytes go to ReadTracker::complete() (short reads
// and end of file as for every backend); -1 is errno's error, a small negative value a negative
// errno (both through complete(): EINTR/EAGAIN retried, others IoError naming file and offset);
// <= -5001 a cuFile error, IoError(EIO) naming file, offset, device and cuFile's reason.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "device/cuda_shim.hpp"
#include "device/cufile_shim.hpp"
#include "device/numa.hpp"
#include "storage/backends.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr unsigned kDefaultGdsThreads = 4;
constexpr std::uint64_t kDefaultGdsBlockSize = 4ULL << 20;
// GDS DMA works on 4 KiB units; a smaller O_DIRECT alignment from statx is rounded up to it.
constexpr std::size_t kGdsAlignment = 4096;

bool register_buffers_by_default() noexcept {
  const char* value = std::getenv("WARPLOAD_GDS_REGISTER_BUFFERS");
  return value == nullptr || std::string(value) != "0";
}

// The GdsFiles alive in the process: read() serves only files found here (a StorageFile from
// another backend has no cuFile handle), which is how it tells them apart without
// dynamic_cast.
class LiveGdsFiles {
 public:
  void add(const StorageFile* file) {
    const std::lock_guard<std::mutex> lock(mutex_);
    files_.insert(file);
  }
  void remove(const StorageFile* file) noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    files_.erase(file);
  }
  [[nodiscard]] bool contains(const StorageFile* file) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return files_.contains(file);
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_set<const StorageFile*> files_;  // the GdsFiles, as their base
};

LiveGdsFiles& live_gds_files() {
  static auto* const files = new LiveGdsFiles;  // leaked: files may close during static teardown
  return *files;
}

// An open file with its cuFile handle.
class GdsFile final : public StorageFile {
 public:
  GdsFile(const std::filesystem::path& path, int fd, std::uint64_t size, std::size_t alignment,
          const CufileApi& api, CUfileHandle_t handle, int device)
      : StorageFile(path, fd, size, alignment), api_(api), handle_(handle), device_(device) {
    live_gds_files().add(this);
  }
  ~GdsFile() override {
    live_gds_files().remove(this);
    // Deregistered before ~StorageFile closes the descriptor, in the context it was made in.
    try {
      const CudaContextScope scope(device_);
      api_.handle_deregister(handle_);
    } catch (...) {
      api_.handle_deregister(handle_);
    }
  }
  GdsFile(const GdsFile&) = delete;
  GdsFile& operator=(const GdsFile&) = delete;

  [[nodiscard]] CUfileHandle_t handle() const noexcept { return handle_; }

 private:
  const CufileApi& api_;
  CUfileHandle_t handle_;
  int device_;
};

// The destinations registered for one read() call; deregistered (in the device's context) when
// the object goes, after every worker has returned.
class BufferRegistrations {
 public:
  BufferRegistrations(const CufileApi& api, int device, std::span<const ReadRequest> requests,
                      bool enabled)
      : api_(api), device_(device) {
    if (!enabled) return;
    const CudaContextScope scope(device);
    for (const ReadRequest& r : requests) {
      if (r.length == 0) continue;
      if (api.buf_register(r.dest, r.length, 0).err == WARPLOAD_CU_FILE_SUCCESS) {
        ranges_.push_back({r.dest, r.dest + r.length});
      }
    }
  }
  ~BufferRegistrations() {
    if (ranges_.empty()) return;
    try {
      const CudaContextScope scope(device_);
      for (const Range& range : ranges_) static_cast<void>(api_.buf_deregister(range.begin));
    } catch (...) {
      for (const Range& range : ranges_) static_cast<void>(api_.buf_deregister(range.begin));
    }
  }
  BufferRegistrations(const BufferRegistrations&) = delete;
  BufferRegistrations& operator=(const BufferRegistrations&) = delete;

  // The registered base holding `dest`, or null when it is not in a registered range.
  [[nodiscard]] std::byte* base_of(const std::byte* dest) const noexcept {
    for (const Range& range : ranges_) {
      if (dest >= range.begin && dest < range.end) return range.begin;
    }
    return nullptr;
  }

 private:
  struct Range {
    std::byte* begin;
    std::byte* end;
  };
  const CufileApi& api_;
  int device_;
  std::vector<Range> ranges_;
};

class GdsStorage final : public Storage {
 public:
  explicit GdsStorage(const StorageOptions& options, CufileMode* mode)
      : device_(options.cuda_device),
        threads_(options.threads != 0 ? options.threads : kDefaultGdsThreads),
        block_size_(options.block_size != 0 ? options.block_size : kDefaultGdsBlockSize),
        register_buffers_(register_buffers_by_default()) {
    if (device_ < 0) {
      throw UnsupportedError(
          "backend 'gds' reads only into CUDA device memory: load with device cuda:N");
    }
    mode_ = cufile_open_driver(device_);
    if (mode != nullptr) *mode = mode_;
    api_ = &cufile_api();
    numa_node_ = cuda_device_numa_node(device_);
    capabilities_.name = "gds";
    capabilities_.device_memory = true;
  }

  [[nodiscard]] const StorageCapabilities& capabilities() const noexcept override {
    return capabilities_;
  }

  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    const OpenedFile opened = open_file(path, /*direct=*/true);
    UniqueFd guard(opened.fd);
    const std::size_t alignment =
        opened.alignment > 1 ? std::max(opened.alignment, kGdsAlignment) : 1;
    CUfileDescr_t descr{};
    descr.type = WARPLOAD_CU_FILE_HANDLE_TYPE_OPAQUE_FD;
    descr.handle.fd = opened.fd;
    descr.fs_ops = nullptr;
    CUfileHandle_t handle = nullptr;
    CUfileError_t status{};
    {
      const CudaContextScope scope(device_);
      status = api_->handle_register(&handle, &descr);
    }
    if (status.err != WARPLOAD_CU_FILE_SUCCESS) {
      throw UnsupportedError(
          describe_cufile_error(path.string() + ": cuFileHandleRegister" +
                                    (alignment > 1 ? "" : " (the file system refused O_DIRECT)"),
                                status));
    }
    try {
      auto file = std::make_unique<GdsFile>(path, opened.fd, opened.size, alignment, *api_, handle,
                                            device_);
      static_cast<void>(guard.release());
      return file;
    } catch (...) {
      api_->handle_deregister(handle);
      throw;
    }
  }

  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    // Every file must be one this backend opened: the cuFile handle is what cuFileRead needs.
    for (const ReadRequest& r : requests) {
      if (!live_gds_files().contains(r.file)) {
        throw UnsupportedError(r.file->path().string() +
                               ": backend 'gds' can only read files it opened itself");
      }
    }
    ReadTracker tracker(requests, block_size_, control);
    const BufferRegistrations registrations(*api_, device_, requests, register_buffers_);
    const auto work = [&]() noexcept {
      const NumaPlacement placement(numa_node_);
      try {
        const CudaContextScope scope(device_);
        ReadOperation op;
        while (tracker.next(&op)) serve(tracker, op, registrations);
      } catch (...) {
        tracker.fail(std::current_exception());  // the context could not be made current
      }
    };
    const std::uint64_t workers =
        std::min<std::uint64_t>(std::max(threads_, 1U), tracker.operation_count());
    {
      std::vector<std::jthread> pool;
      try {
        pool.reserve(workers > 0 ? workers - 1 : 0);
        while (pool.size() + 1 < workers) pool.emplace_back(work);
      } catch (...) {
        // Fewer workers only make the read slower.
      }
      work();
    }  // joins the pool: no cuFileRead is in flight past this point
    tracker.finish();
  }

 private:
  void serve(ReadTracker& tracker, ReadOperation& op,
             const BufferRegistrations& registrations) const noexcept {
    const auto* file = static_cast<const GdsFile*>(op.file);  // checked in read()
    for (;;) {
      std::byte* base = registrations.base_of(op.dest);
      std::byte* buffer = base != nullptr ? base : op.dest;
      const auto buffer_offset = static_cast<off_t>(op.dest - buffer);
      errno = 0;
      const ssize_t got = api_->read(file->handle(), buffer, op.length,
                                     static_cast<off_t>(op.offset), buffer_offset);
      const int error_number = errno;
      std::int64_t result = got;
      if (got == -1) {
        result = -(error_number != 0 ? error_number : EIO);
      } else if (got < -WARPLOAD_CUFILEOP_BASE_ERR) {
        fail_cufile(tracker, op, static_cast<int>(-got));
        return;
      }
      if (tracker.complete(op, result) != ReadTracker::Step::kResubmit) return;
    }
  }

  void fail_cufile(ReadTracker& tracker, const ReadOperation& op, int code) const noexcept {
    if (tracker.stopped()) return;
    try {
      const std::string what = op.file->path().string() + ": cuFileRead of " +
                               std::to_string(op.length) + " bytes at offset " +
                               std::to_string(op.offset) + " into cuda:" + std::to_string(device_) +
                               " failed";
      tracker.fail(std::make_exception_ptr(
          IoError(describe_cufile_error(what, CUfileError_t{code, 0}), EIO, op.offset)));
    } catch (...) {
      tracker.fail(std::current_exception());
    }
  }

  int device_;
  unsigned threads_;
  std::uint64_t block_size_;
  bool register_buffers_;
  CufileMode mode_ = CufileMode::kCompat;
  const CufileApi* api_ = nullptr;
  int numa_node_ = -1;
  StorageCapabilities capabilities_;
};

}  // namespace

std::unique_ptr<Storage> make_gds_storage(const StorageOptions& options, CufileMode* mode) {
  return std::make_unique<GdsStorage>(options, mode);
}

}  // namespace warpload::detail
