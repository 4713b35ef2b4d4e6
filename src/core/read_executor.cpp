#include "core/read_executor.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/align.hpp"
#include "core/progress_monitor.hpp"
#include "core/staging_pool.hpp"
#include "device/cuda_shim.hpp"
#include "storage/device_storage.hpp"
#include "storage/object_store.hpp"
#include "warpload/config.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr std::uint64_t kHostViewAlignment = 64;     // a cache line: every dtype's alignment
constexpr std::uint64_t kDeviceViewAlignment = 256;  // what cuMemAlloc gives

}  // namespace

ReadExecutor::ReadExecutor(const LoadOptions& options, std::span<const PlannedFile> files)
    : options_(options), files_(files), device_(Device::parse(options.device)) {
  open_.resize(files.size());
  storage_ = options_.custom_storage ? options_.custom_storage : choose_storage(files);
  const StorageCapabilities& caps = storage_->capabilities();

  allocator_ = options_.allocator;
  if (device_.is_cuda()) {
    if (allocator_ && allocator_->kind() != MemoryKind::kDevice) {
      throw std::invalid_argument("LoadOptions::allocator must make device memory for device '" +
                                  device_.name() + "'");
    }
    if (!allocator_) allocator_ = make_cuda_allocator(device_);
    staged_ = !caps.device_memory;
  } else {
    if (allocator_ && allocator_->kind() != MemoryKind::kHost && !caps.device_memory) {
      throw UnsupportedError("backend '" + caps.name +
                             "' cannot read into non-host memory in this build");
    }
    if (!allocator_) allocator_ = storage_->preferred_allocator();
    if (!allocator_) allocator_ = make_host_allocator();
  }
  base_stats_.backend = caps.name;
  base_stats_.device = device_.name();
}

ReadExecutor::~ReadExecutor() = default;

std::shared_ptr<Storage> ReadExecutor::choose_storage(std::span<const PlannedFile> files) {
  const LoadSettings resolved =
      resolve_settings(options_.backend, options_.storage, options_.config, options_.use_config);
  base_stats_.config = resolved.config;
  base_stats_.storage = resolved.settings.storage;
  // A missing driver or device is the load's error whatever the backend.
  if (device_.is_cuda()) check_cuda_device(device_.index);
  // URLs: the settings file's backend is for local files, so only an explicit one is kept.
  std::string backend = resolved.settings.backend;
  if (options_.backend.empty() && !files.empty() && is_object_url(files.front().path.string())) {
    backend = std::string(default_backend_name());
  }
  backend = backend_for_files(backend, files);
  try {
    if (!device_.is_cuda()) return make_storage(backend, resolved.settings.storage);
    DeviceStorage chosen =
        choose_device_storage(backend, resolved.settings.storage, device_, files);
    // GDS opened (and registered) every file while being chosen.
    for (std::size_t i = 0; i < chosen.files.size(); ++i) open_[i] = std::move(chosen.files[i]);
    base_stats_.gds_fallback = std::move(chosen.gds_fallback);
    base_stats_.gds_compat_mode = chosen.gds_compat_mode;
    return std::move(chosen.storage);
  } catch (const UnsupportedError& e) {
    if (resolved.config.empty() || !options_.backend.empty()) throw;
    throw UnsupportedError(resolved.config.string() + ": the config's backend: " + e.what());
  }
}

StorageFile& ReadExecutor::open(std::size_t file) {
  if (file >= files_.size()) {
    throw std::out_of_range("read of file " + std::to_string(file) + " of a plan of " +
                            std::to_string(files_.size()));
  }
  auto& slot = open_[file];
  if (!slot) {
    const PlannedFile& planned = files_[file];
    auto opened = storage_->open(planned.path);
    if (opened->size() != planned.header.file_size) {
      throw IoError(planned.path.string() + ": file changed size since its header was read (" +
                        std::to_string(planned.header.file_size) + " -> " +
                        std::to_string(opened->size()) + " bytes)",
                    0, 0);
    }
    slot = std::move(opened);
  }
  return *slot;
}

std::uint64_t ReadExecutor::alignment(std::size_t file) { return open(file).alignment(); }

ReadWindow ReadExecutor::window(std::size_t file, std::uint64_t begin, std::uint64_t end) {
  const std::uint64_t a = alignment(file);
  const bool device_memory = allocator_->kind() == MemoryKind::kDevice;
  ReadWindow w;
  if (staged_) {
    // Only [begin, end) reaches the destination; the superset stays in the pinned slots.
    w.bytes = end - begin;
    w.alignment = kDeviceViewAlignment;
    return w;
  }
  const std::uint64_t first = align_down(begin, a);
  w.lead = begin - first;
  w.bytes = align_up(end, a) - first;
  w.alignment = std::max(a, device_memory ? kDeviceViewAlignment : kHostViewAlignment);
  return w;
}

Placement ReadExecutor::place(std::size_t file, std::uint64_t begin, std::uint64_t end,
                              std::uint64_t phase) {
  const ReadWindow w = window(file, begin, end);
  // Buffered host reads have no alignment of their own: keep data-section alignment instead.
  const std::uint64_t pad =
      !staged_ && w.lead == 0 && alignment(file) == 1 ? phase % kHostViewAlignment : 0;
  Placement p;
  try {
    p.buffer = allocator_->allocate(std::max<std::uint64_t>(pad + w.bytes, 1), w.alignment);
  } catch (const OutOfMemoryError& e) {
    // An allocator's error does not know the file (found by tests/fault_matrix_test.cpp).
    throw OutOfMemoryError(files_[file].path.string() + ": cannot allocate " +
                           std::to_string(pad + w.bytes) + " bytes: " + e.what());
  }
  p.dest = p.buffer->data() + pad + w.lead;
  return p;
}

void ReadExecutor::add(std::size_t file, std::uint64_t begin, std::uint64_t end, std::byte* dest) {
  if (begin >= end) return;
  StorageFile& f = open(file);
  const std::uint64_t a = f.alignment();
  const std::uint64_t first = align_down(begin, a);
  const std::uint64_t last = align_up(end, a);
  if (staged_) {
    staged_files_.push_back(StagedFile{&f, first, last, begin, end, dest});
    largest_staged_read_ = std::max(largest_staged_read_, last - first);
  } else {
    requests_.push_back(ReadRequest{&f, first, last - first, dest - (begin - first)});
  }
  round_bytes_ += end - begin;
  round_read_ += std::min(last, f.size()) - first;
}

void ReadExecutor::add_exact(std::size_t file, std::uint64_t begin, std::uint64_t end,
                             std::byte* dest) {
  if (begin >= end) return;
  if (staged_ || alignment(file) == 1) {
    add(file, begin, end, dest);  // nothing is written outside [dest, dest + end - begin)
    return;
  }
  if (allocator_->kind() != MemoryKind::kHost) {
    throw std::logic_error("ReadExecutor::add_exact: aligned reads into device memory");
  }
  Placement bounce = place(file, begin, end);
  add(file, begin, end, bounce.dest);
  bounces_.push_back(BounceCopy{std::move(bounce), dest, end - begin});
}

void ReadExecutor::discard() noexcept {
  requests_.clear();
  staged_files_.clear();
  bounces_.clear();
  largest_staged_read_ = 0;
  round_bytes_ = 0;
  round_read_ = 0;
}

void ReadExecutor::cancel() noexcept {
  const std::lock_guard lock(cancel_mutex_);
  cancelled_ = true;
  if (active_ != nullptr) active_->cancel.store(true);
}

LoadStats ReadExecutor::run(std::uint64_t progress_total) {
  // This round's work; the executor is ready for the next one whatever happens to this one.
  std::vector<ReadRequest> requests = std::move(requests_);
  std::vector<StagedFile> staged = std::move(staged_files_);
  std::vector<BounceCopy> bounces = std::move(bounces_);
  const std::uint64_t largest = largest_staged_read_;
  const std::uint64_t read = round_read_;
  LoadStats stats = base_stats_;
  stats.bytes = round_bytes_;
  discard();

  ReadControl control;
  {
    const std::lock_guard lock(cancel_mutex_);
    if (cancelled_ || (options_.cancel != nullptr && options_.cancel->load())) {
      cancelled_ = false;
      throw CancelledError(files_.empty() ? std::string("load cancelled")
                                          : files_.front().path.string() + ": load cancelled");
    }
    active_ = &control;
  }
  struct Detach {
    ReadExecutor& self;
    ~Detach() {
      const std::lock_guard lock(self.cancel_mutex_);
      self.active_ = nullptr;
      self.cancelled_ = false;
    }
  } detach{*this};

  const auto start = std::chrono::steady_clock::now();
  {
    const ProgressMonitor monitor(options_.on_progress, control, progress_total, options_.cancel);
    if (!requests.empty()) storage_->read(requests, &control);
    if (!staged.empty()) {
      RingMemory ring = ring_slot_allocator(device_, storage_->staging_memory());
      stats.staging_memory = std::move(ring.description);
      run_staged_load(*storage_, staged, device_,
                      plan_staging_from_env(options_.staging_bytes, largest), &control,
                      std::move(ring.slots));
    }
  }
  for (const BounceCopy& b : bounces) std::memcpy(b.to, b.from.dest, b.bytes);
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (options_.on_progress) options_.on_progress(progress_total, progress_total);
  bytes_read_ += read;
  for (const auto& f : open_) {
    if (!f) continue;
    ++stats.files;
    if (f->direct()) ++stats.direct_files;
  }
  return stats;
}

void ReadExecutor::close_files() noexcept {
  for (auto& f : open_) f.reset();
}

}  // namespace warpload::detail
