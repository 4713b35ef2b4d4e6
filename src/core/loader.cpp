#include "warpload/loader.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "common/printable.hpp"
#include "storage/device_storage.hpp"
#include "core/file_set.hpp"
#include "core/progress_monitor.hpp"
#include "core/staged_pipeline.hpp"
#include "core/tensor_view.hpp"
#include "core/verify.hpp"
#include "device/cuda_shim.hpp"
#include "warpload/config.hpp"
#include "warpload/device.hpp"
#include "warpload/error.hpp"

namespace warpload {

std::uint64_t TensorView::numel() const noexcept {
  std::uint64_t n = 1;
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  return n;
}

namespace {

struct TensorRef {
  std::uint32_t file;
  std::uint32_t tensor;
};

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v / a * a; }

// allocator->allocate() for `path`: an allocator's OutOfMemoryError does not know the file, so
// it is rethrown naming it (found by the fault matrix, tests/fault_matrix_test.cpp).
std::shared_ptr<Buffer> allocate_for(Allocator& allocator, const std::filesystem::path& path,
                                     std::uint64_t size, std::uint64_t alignment) {
  try {
    return allocator.allocate(size, alignment);
  } catch (const OutOfMemoryError& e) {
    throw OutOfMemoryError(path.string() + ": cannot allocate " + std::to_string(size) +
                           " bytes: " + e.what());
  }
}

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
  std::uint64_t down = align_down(v, a);
  return down == v ? v : down + a;
}


}  // namespace

struct Loader::State {
  LoadOptions options;
  std::vector<PlannedFile> files;
  std::unordered_map<std::string, TensorRef, NameHash, std::equal_to<>> by_name;
  std::uint64_t total_bytes = 0;

  // After load(): per file, the buffer and where its data section starts in it.
  std::vector<std::shared_ptr<Buffer>> buffers;
  std::vector<std::byte*> data_starts;
  // Tensors moved to their own aligned buffer because their place in the file was not.
  std::unordered_map<std::string, std::shared_ptr<Buffer>> realigned;
  bool loaded = false;
  bool load_started = false;

  const TensorRef& find(std::string_view name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw NotFoundError("no tensor named '" + std::string(name) + "'");
    return it->second;
  }
  const TensorInfo& info(const TensorRef& ref) const {
    return files[ref.file].header.tensors[ref.tensor];
  }
};

Loader::Loader() : Loader(LoadOptions{}) {}

Loader::Loader(LoadOptions options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
}
Loader::~Loader() = default;
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;

void Loader::add(const std::filesystem::path& path) {
  State& s = *state_;
  if (s.load_started) throw UnsupportedError(path.string() + ": add() after load()");
  detail::CheckpointFiles resolved = detail::resolve_checkpoint(path);

  // Parse everything first so a failure leaves the plan as it was.
  std::vector<PlannedFile> added;
  added.reserve(resolved.files.size());
  for (const auto& file : resolved.files) {
    for (const auto& existing : s.files) {
      std::error_code ec;
      if (std::filesystem::equivalent(existing.path, file, ec)) {
        throw InvalidFileError(FormatRule::kDuplicateTensor,
                               file.string() + ": file is already part of this load");
      }
    }
    added.push_back(PlannedFile{file, read_header(file)});
  }
  std::vector<const Header*> headers;
  headers.reserve(added.size());
  for (const auto& f : added) headers.push_back(&f.header);
  detail::check_index(resolved, headers);

  std::unordered_map<std::string, TensorRef, NameHash, std::equal_to<>> names;
  const auto first_new = static_cast<std::uint32_t>(s.files.size());
  for (std::uint32_t f = 0; f < added.size(); ++f) {
    const auto& tensors = added[f].header.tensors;
    for (std::uint32_t t = 0; t < tensors.size(); ++t) {
      const std::string& name = tensors[t].name;
      const PlannedFile* other = nullptr;
      if (auto it = s.by_name.find(name); it != s.by_name.end()) {
        other = &s.files[it->second.file];
      } else if (auto jt = names.find(name); jt != names.end()) {
        other = &added[jt->second.file - first_new];
      }
      if (other != nullptr) {
        throw InvalidFileError(FormatRule::kDuplicateTensor,
                               added[f].path.string() + ": tensor '" + detail::printable(name) +
                                   "' is also in " + other->path.string());
      }
      names.emplace(name, TensorRef{first_new + f, t});
    }
  }
  for (auto& f : added) {
    s.total_bytes += f.header.data_size();
    s.files.push_back(std::move(f));
  }
  s.by_name.merge(names);
}

void Loader::add(std::span<const std::filesystem::path> paths) {
  for (const auto& p : paths) add(p);
}

const std::vector<PlannedFile>& Loader::files() const noexcept { return state_->files; }
std::uint64_t Loader::total_bytes() const noexcept { return state_->total_bytes; }
bool Loader::loaded() const noexcept { return state_->loaded; }

LoadStats Loader::load() {
  State& s = *state_;
  if (s.loaded) throw UnsupportedError("load() called on a loaded Loader; release() first");
  const Device device = Device::parse(s.options.device);

  std::shared_ptr<Storage> storage = s.options.custom_storage;
  detail::DeviceStorage device_storage;  // how a device load reads: GDS, or staged (and why)
  ResolvedSettings settings;
  std::filesystem::path config_path;
  if (!storage) {
    std::optional<TunedSettings> config;
    if (s.options.use_config) {
      if (auto found = find_config_file(s.options.config)) {
        config = read_config(*found);
        config_path = *found;
      }
    }
    settings = apply_config(s.options.backend, s.options.storage, config ? &*config : nullptr);
    if (!settings.from_config) config_path.clear();
    // A missing driver or device is the load's error whatever the backend.
    if (device.is_cuda()) detail::check_cuda_device(device.index);
    try {
      if (device.is_cuda()) {
        device_storage =
            detail::choose_device_storage(settings.backend, settings.storage, device, s.files);
        storage = device_storage.storage;
      } else {
        storage = make_storage(settings.backend, settings.storage);
      }
    } catch (const UnsupportedError& e) {
      if (!settings.from_config || !s.options.backend.empty()) throw;
      throw UnsupportedError(config_path.string() + ": the config's backend: " + e.what());
    }
  }
  std::shared_ptr<Allocator> allocator = s.options.allocator;
  if (device.is_cuda()) {
    if (allocator && allocator->kind() != MemoryKind::kDevice) {
      throw std::invalid_argument("LoadOptions::allocator must make device memory for device '" +
                                  device.name() + "'");
    }
    if (!allocator) allocator = make_cuda_allocator(device);
  } else {
    if (!allocator) allocator = storage->preferred_allocator();
    if (!allocator) allocator = make_host_allocator();
  }
  // A backend that cannot write device memory reaches it through the staged pipeline.
  const bool staged = device.is_cuda() && !storage->capabilities().device_memory;
  if (!staged && allocator->kind() != MemoryKind::kHost && !storage->capabilities().device_memory) {
    throw UnsupportedError("backend '" + storage->capabilities().name +
                           "' cannot read into non-host memory in this build");
  }
  const bool device_buffers = allocator->kind() == MemoryKind::kDevice;

  std::vector<std::unique_ptr<StorageFile>> open_files;
  std::vector<ReadRequest> requests;
  std::vector<std::shared_ptr<Buffer>> buffers(s.files.size());
  std::vector<std::byte*> data_starts(s.files.size(), nullptr);
  std::vector<detail::StagedFile> staged_files;
  std::uint64_t largest_read = 0;
  open_files.reserve(s.files.size());

  for (std::size_t i = 0; i < s.files.size(); ++i) {
    const PlannedFile& planned = s.files[i];
    const Header& h = planned.header;
    // GDS opened (and registered) every file while choosing the backend.
    auto file = device_storage.files.empty() ? storage->open(planned.path)
                                             : std::move(device_storage.files[i]);
    if (file->size() != h.file_size) {
      throw IoError(planned.path.string() + ": file changed size since its header was read (" +
                        std::to_string(h.file_size) + " -> " + std::to_string(file->size()) +
                        " bytes)",
                    0, 0);
    }
    // Read the aligned superset of the data section; the section then starts
    // `data_offset % alignment` bytes into the buffer.
    const std::uint64_t a = file->alignment();
    const std::uint64_t begin = align_down(h.data_offset(), a);
    const std::uint64_t end = align_up(h.file_size, a);
    const std::uint64_t length = end - begin;
    if (staged) {
      // The data section goes to offset 0 of the device buffer; the superset is read into
      // pinned slots and only data-section bytes are copied.
      buffers[i] =
          allocate_for(*allocator, s.files[i].path, std::max<std::uint64_t>(h.data_size(), 1), 256);
      data_starts[i] = buffers[i]->data();
      if (h.data_size() > 0) {
        staged_files.push_back(detail::StagedFile{file.get(), begin, end, h.data_offset(),
                                                  h.file_size, data_starts[i]});
        largest_read = std::max(largest_read, length);
      }
    } else {
      buffers[i] = allocate_for(*allocator, s.files[i].path, std::max<std::uint64_t>(length, 1),
                                std::max<std::uint64_t>(a, device_buffers ? 256 : 64));
      data_starts[i] = buffers[i]->data() + (h.data_offset() - begin);
      if (h.data_size() > 0) {
        requests.push_back(ReadRequest{file.get(), begin, length, buffers[i]->data()});
      }
    }
    open_files.push_back(std::move(file));
  }

  const auto direct_files = static_cast<std::size_t>(std::count_if(
      open_files.begin(), open_files.end(), [](const auto& f) { return f->direct(); }));
  ReadControl control;
  if (s.options.cancel != nullptr && s.options.cancel->load()) {
    throw CancelledError(s.files.empty() ? std::string("load cancelled")
                                         : s.files.front().path.string() + ": load cancelled");
  }
  const auto start = std::chrono::steady_clock::now();
  {
    detail::ProgressMonitor monitor(s.options.on_progress, control, s.total_bytes, s.options.cancel);
    if (staged) {
      detail::run_staged_load(*storage, staged_files, device,
                              detail::plan_staging_from_env(s.options.staging_bytes, largest_read),
                              &control);
    } else {
      storage->read(requests, &control);
    }
  }
  const auto stop = std::chrono::steady_clock::now();
  if (s.options.on_progress) s.options.on_progress(s.total_bytes, s.total_bytes);
  open_files.clear();

  // Views must be aligned to their element size: the few tensors whose place in the file does
  // not allow that get buffers of their own.
  for (std::size_t i = 0; i < s.files.size(); ++i) {
    for (const TensorInfo& t : s.files[i].header.tensors) {
      if (auto side = detail::realigned_copy(*allocator, t, data_starts[i] + t.begin,
                                             device.index, s.files[i].path)) {
        s.realigned.emplace(t.name, std::move(side));
      }
    }
  }

  double verify_seconds = 0;
  if (s.options.verify) {
    const auto verify_start = std::chrono::steady_clock::now();
    try {
      for (std::size_t i = 0; i < s.files.size(); ++i) {
        detail::verify_loaded_file(
            s.files[i].path, s.files[i].header, device_buffers ? device.index : -1,
            [&](const TensorInfo& t) -> const std::byte* {
              const auto it = s.realigned.find(t.name);
              return it != s.realigned.end() ? it->second->data() : data_starts[i] + t.begin;
            });
      }
    } catch (...) {
      s.realigned.clear();  // nothing of a failed load is kept
      throw;
    }
    verify_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - verify_start).count();
  }

  s.buffers = std::move(buffers);
  s.data_starts = std::move(data_starts);
  s.loaded = true;
  s.load_started = true;

  LoadStats stats;
  stats.bytes = s.total_bytes;
  stats.seconds = std::chrono::duration<double>(stop - start).count();
  stats.backend = storage->capabilities().name;
  stats.device = device.name();
  stats.files = s.files.size();
  stats.direct_files = direct_files;
  stats.config = std::move(config_path);
  stats.storage = settings.storage;
  stats.gds_fallback = std::move(device_storage.gds_fallback);
  stats.gds_compat_mode = device_storage.gds_compat_mode;
  stats.verify_seconds = verify_seconds;
  return stats;
}

std::vector<std::string> Loader::keys() const {
  std::vector<std::string> out;
  out.reserve(state_->by_name.size());
  for (const auto& f : state_->files) {
    for (const auto& t : f.header.tensors) out.push_back(t.name);
  }
  return out;
}

bool Loader::contains(std::string_view name) const noexcept {
  return state_->by_name.contains(name);
}

const TensorInfo& Loader::info(std::string_view name) const {
  return state_->info(state_->find(name));
}

const PlannedFile& Loader::file_of(std::string_view name) const {
  return state_->files[state_->find(name).file];
}

std::map<std::string, std::string> Loader::metadata() const {
  std::map<std::string, std::string> out;
  for (const auto& f : state_->files)
    out.insert(f.header.metadata.begin(), f.header.metadata.end());
  return out;
}

TensorView Loader::tensor(std::string_view name) const {
  const State& s = *state_;
  const TensorRef& ref = s.find(name);
  if (!s.loaded) {
    throw UnsupportedError(s.files[ref.file].path.string() + ": tensor '" + std::string(name) +
                           "' requested before load()");
  }
  const TensorInfo& t = s.info(ref);
  const std::string& file = s.files[ref.file].path.string();
  if (t.nbytes() == 0) {
    // No bytes to point at: give empty tensors an aligned address all the same.
    return detail::make_tensor_view(t, s.buffers[ref.file]->data(), s.buffers[ref.file], file);
  }
  if (auto it = s.realigned.find(t.name); it != s.realigned.end()) {
    return detail::make_tensor_view(t, it->second->data(), it->second, file);
  }
  return detail::make_tensor_view(t, s.data_starts[ref.file] + t.begin, s.buffers[ref.file], file);
}

void Loader::copy_to_host(std::string_view name, std::span<std::byte> dest) const {
  const TensorView v = tensor(name);
  if (dest.size() < v.nbytes) {
    throw std::invalid_argument("copy_to_host of '" + v.name + "': " + std::to_string(dest.size()) +
                                " bytes given for " + std::to_string(v.nbytes));
  }
  if (v.nbytes == 0) return;
  if (v.memory == MemoryKind::kDevice) {
    detail::copy_to_host(dest.data(), v.data, v.nbytes,
                         Device::parse(state_->options.device).index);
  } else {
    std::memcpy(dest.data(), v.data, v.nbytes);
  }
}

TensorView Loader::shard(std::string_view name, int rank, int world, int dim) const {
  TensorView v = tensor(name);
  const auto ndim = static_cast<int>(v.shape.size());
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument("shard of '" + v.name + "': rank " + std::to_string(rank) +
                                " is not in [0, world=" + std::to_string(world) + ")");
  }
  if (ndim == 0) throw std::invalid_argument("shard of '" + v.name + "': tensor is 0-d");
  if (dim < -ndim || dim >= ndim) {
    throw std::invalid_argument("shard of '" + v.name + "': dim " + std::to_string(dim) +
                                " out of range for " + std::to_string(ndim) + "-d tensor");
  }
  const auto d = static_cast<std::size_t>(dim < 0 ? dim + ndim : dim);
  const std::int64_t size = v.shape[d];
  // Written so that no step can overflow for sizes up to 2^63 - 1 (empty tensors may have
  // such dims): ceil(size / world) without size + world - 1, and end without begin + block.
  const std::int64_t block = size / world + (size % world != 0 ? 1 : 0);
  const std::int64_t begin = block >= size ? std::min<std::int64_t>(rank, 1) * size
                                           : std::min<std::int64_t>(block * rank, size);
  const std::int64_t end = begin + std::min<std::int64_t>(block, size - begin);
  std::int64_t outer = 1;  // product of the dims before d, saturated (only compared with 1)
  for (std::size_t i = 0; i < d; ++i) {
    if (__builtin_mul_overflow(outer, v.shape[i], &outer)) outer = INT64_MAX;
  }

  const std::uint32_t bits = dtype_bits(v.dtype);
  const std::uint64_t first_bit = static_cast<std::uint64_t>(begin * v.strides[d]) * bits;
  v.shape[d] = end - begin;
  v.contiguous = outer <= 1 || end - begin == size || v.numel() == 0;
  if (bits % 8 != 0) {
    const std::uint64_t local_bits = static_cast<std::uint64_t>(v.strides[d] * (end - begin)) *
                                     static_cast<std::uint64_t>(outer) * bits;
    if (!v.contiguous || first_bit % 8 != 0 || local_bits % 8 != 0) {
      throw UnsupportedError(file_of(name).path.string() + ": tensor '" + v.name + "': shard " +
                             std::to_string(rank) + "/" + std::to_string(world) + " of a " +
                             std::string(dtype_name(v.dtype)) + " tensor along dim " +
                             std::to_string(d) + " does not start and end on whole bytes");
    }
  }
  v.data += first_bit / 8;
  if (v.numel() == 0) {
    v.nbytes = 0;
  } else if (v.contiguous) {
    v.nbytes = v.numel() * bits / 8;
  } else {
    // Bytes spanned from the first element to one past the last.
    std::uint64_t last = 0;
    for (std::size_t i = 0; i < v.shape.size(); ++i) {
      last += static_cast<std::uint64_t>((v.shape[i] - 1) * v.strides[i]);
    }
    v.nbytes = (last + 1) * bits / 8;
  }
  return v;
}

void Loader::release() noexcept {
  State& s = *state_;
  s.buffers.clear();
  s.data_starts.clear();
  s.realigned.clear();
  s.loaded = false;
}

}  // namespace warpload
