// The Loader: many safetensors files, one plan, one load, zero-copy tensor views.
//
//   warpload::Loader loader;                        // default: config's backend, else "auto"
//   loader.add("/models/llama");                    // file, directory, or index.json
//   loader.load();                                  // reads every tensor's bytes
//   warpload::TensorView w = loader.tensor("lm_head.weight");
//
// What add() accepts: see CheckpointPlan (warpload/plan.hpp). Reads go through the one read
// path every loader shares (docs/architecture.md, "One load path"); for a checkpoint larger
// than memory use ChunkedReader (warpload/chunked.hpp).
//
// Placement: each file's data section lands in one Buffer from the allocator, so a tensor is
// a pointer into it. Tensors are aligned to at least their element size: a tensor whose
// offset in the file would leave it misaligned (only files not written by the reference
// writer have those) is moved to an aligned side buffer after the read.
//
// Device loads (LoadOptions::device "cuda:N"): each file's data section is placed at offset 0
// of one device Buffer (256-byte aligned), so TensorView::data is a device address
// (memory == MemoryKind::kDevice), not dereferenceable on the host. A tensor whose offset
// inside its file's data section is not a multiple of its element size (the reference writer
// never produces one) is moved after the read, with a device-to-device copy, into a device
// buffer of its own: correct, at the cost of that tensor's bytes once more while it lives.
//
// Lifetime: views hold a reference to their buffer, so they stay valid after the Loader is
// destroyed or release()d. Thread safety: add/plan/load/release are not concurrent with each
// other; after load() returns, queries are safe from any number of threads.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "warpload/dtype.hpp"
#include "warpload/format.hpp"
#include "warpload/memory.hpp"
#include "warpload/plan.hpp"
#include "warpload/storage.hpp"
#include "warpload/tensor_view.hpp"

namespace warpload {

// Settings file (warpload/config.hpp): at load(), unless use_config is false or
// custom_storage is set, the loader finds a config (`config`, else $WARPLOAD_CONFIG, else the
// default location) and applies it: explicit settings here win, then the config, then the
// backends' defaults. `backend` "" means "the config's backend, else auto"; fields of
// `storage` left 0 take the config's values when its backend is the one used; the config's
// `direct` applies only when `backend` is "". LoadStats says what was applied.
struct LoadOptions {
  // see make_storage(); "" = config's, else "auto". Device loads also take "gds" (GPUDirect
  // Storage; "auto" uses it where cuFile runs in GDS mode), falling back to the staged pipeline
  // with one stderr line when it cannot be used (LoadStats::gds_fallback says why).
  std::string backend;
  StorageOptions storage;        // threads, block size, queue depth, O_DIRECT
  std::filesystem::path config;  // explicit settings file; must exist when set
  bool use_config = true;        // false: ignore every settings file
  // Where tensors go: "cpu", or "cuda:N" (warpload/device.hpp, Device::parse; a bad name is
  // std::invalid_argument at load(), a missing driver or device UnsupportedError).
  std::string device = "cpu";
  // null = the backend's preferred_allocator(), else make_host_allocator() for "cpu" and
  // make_cuda_allocator() for "cuda:N" (an explicit one must then be MemoryKind::kDevice).
  std::shared_ptr<Allocator> allocator;
  // Pinned host memory for a CUDA load through a backend that cannot read into device memory
  // (every backend but "gds"): bytes are read into a ring of page-locked slots and copied to the
  // device asynchronously (src/core/staged_pipeline.hpp). This bounds the host memory such a
  // load uses, whatever the checkpoint size; at least 2 slots of 64 KiB are used.
  std::uint64_t staging_bytes = std::uint64_t{256} << 20;
  // A ready backend (e.g. a decorated one); when set, `backend` and `storage` are ignored.
  std::shared_ptr<Storage> custom_storage;
  // Called from a monitor thread about 10 times a second during load(), and once at the
  // end, with bytes landed so far and the total. It must not throw (an exception escaping a
  // thread terminates the process); to stop a load, set `cancel` instead.
  std::function<void(std::uint64_t done, std::uint64_t total)> on_progress;
  // When set, load() checks it before reading and about 10 times a second while reading; once
  // it reads true the reads stop and load() throws CancelledError, keeping nothing (as for any
  // other error). Set it from any thread; it must outlive load(). Used by the Python bindings
  // to cancel on Ctrl-C.
  const std::atomic<bool>* cancel = nullptr;
  // After the read, read every tensor's bytes again from its file with plain pread()s on a
  // fresh descriptor (no backend, no O_DIRECT, no mapping) and compare them with the loaded
  // ones (device tensors are copied back to compare). A difference is IoError (errno EIO)
  // naming the file, the tensor and the file offset of the first differing byte, and nothing
  // is kept, as for any other error. Costs a second read of the checkpoint (from the page
  // cache when it fits); LoadStats::verify_seconds says how long.
  bool verify = false;
};

struct LoadStats {
  std::uint64_t bytes = 0;  // tensor bytes loaded (data sections)
  double seconds = 0;       // wall time of the read phase
  std::string backend;      // resolved backend name
  std::string device;       // where the tensors are: "cpu" or "cuda:N"
  std::size_t files = 0;
  std::size_t direct_files = 0;  // files read with O_DIRECT (how "auto" resolved)
  // The settings file whose settings were applied; empty when none was (no file found,
  // use_config false, custom_storage, or a config for another backend than the one asked).
  std::filesystem::path config;
  // The options the backend was created with, after applying the config (0 = backend's
  // default). Unset when custom_storage was given.
  StorageOptions storage;
  // Device loads with backend "gds" or "auto": why GPUDirect Storage was tried and not used
  // (the load went through the staged pipeline; docs/architecture.md lists the checks), or
  // empty. gds_compat_mode: backend "gds" ran with cuFile in compatibility mode (no nvidia-fs).
  std::string gds_fallback;
  bool gds_compat_mode = false;
  // Device loads through the staged pipeline: what the ring's slots were ("pinned":
  // cuMemHostAlloc; "registered": huge pages under cuMemHostRegister; "pool: 3fs <mount> ...":
  // the backend's own memory, page-locked once and reused across loads); empty otherwise.
  std::string staging_memory;
  // Time spent re-reading and comparing with LoadOptions::verify (not in `seconds`); 0 without.
  double verify_seconds = 0;
  [[nodiscard]] double gbps() const noexcept {
    return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
  }
};

class Loader {
 public:
  Loader();  // default LoadOptions
  explicit Loader(LoadOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  Loader(Loader&&) noexcept;
  Loader& operator=(Loader&&) noexcept;

  // Adds a file, a directory or an index.json (see top of file). Headers are read and
  // validated now; a failing add() leaves the plan unchanged. Throws NotFoundError,
  // InvalidFileError (kDuplicateTensor when a name is already planned from another file, or
  // the same file is added twice), IoError; UnsupportedError after a successful load().
  void add(const std::filesystem::path& path);
  void add(std::span<const std::filesystem::path> paths);

  // The plan: files in the order added, each with its validated header, and the name index.
  [[nodiscard]] const CheckpointPlan& plan() const noexcept;
  [[nodiscard]] const std::vector<PlannedFile>& files() const noexcept;
  // Sum of the data sections of all planned files.
  [[nodiscard]] std::uint64_t total_bytes() const noexcept;

  // Reads every planned file into memory. Throws UnsupportedError when already loaded
  // (release() first). On a throw, no tensor is available (nothing partly filled is ever
  // handed out) and load() may be called again.
  LoadStats load();
  [[nodiscard]] bool loaded() const noexcept;

  // Tensor names across all files, in plan order (file order, then data order).
  [[nodiscard]] std::vector<std::string> keys() const;
  [[nodiscard]] bool contains(std::string_view name) const noexcept;
  // Header facts; available before load(). Throw NotFoundError for an unknown name.
  [[nodiscard]] const TensorInfo& info(std::string_view name) const;
  [[nodiscard]] const PlannedFile& file_of(std::string_view name) const;
  // "__metadata__" of every file merged (a key present in several files with different
  // values keeps the first file's).
  [[nodiscard]] std::map<std::string, std::string> metadata() const;

  // A view of the whole tensor. Throws NotFoundError; UnsupportedError before load().
  [[nodiscard]] TensorView tensor(std::string_view name) const;

  // Copies the whole tensor's bytes (info(name).nbytes()) to host memory at `dest`: a memcpy
  // for host loads, a synchronous device-to-host copy (cuMemcpyDtoH) for device loads. For
  // checks and hashing, not a fast path. Throws like tensor(); std::invalid_argument when
  // `dest` is smaller than the tensor.
  void copy_to_host(std::string_view name, std::span<std::byte> dest) const;

  // The part of a tensor rank `rank` of `world` holds when split along `dim`: blocks of
  // ceil(size / world) elements, the last rank(s) getting fewer (possibly zero), the same
  // rule as fastsafetensors' get_sharded. dim may be negative (counted from the end). The
  // view is zero-copy (strided when dim != 0). Throws std::invalid_argument for a bad rank,
  // world or dim; UnsupportedError for a sub-byte dtype whose shard is not whole bytes.
  [[nodiscard]] TensorView shard(std::string_view name, int rank, int world, int dim = 0) const;

  // Releases every buffer the loader holds (views keep theirs alive). noexcept.
  void release() noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace warpload
