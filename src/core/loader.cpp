#include "warpload/loader.hpp"

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "core/rank_plan.hpp"
#include "core/read_executor.hpp"
#include "core/tensor_view.hpp"
#include "core/verify.hpp"
#include "device/cuda_shim.hpp"
#include "warpload/device.hpp"
#include "warpload/error.hpp"

namespace warpload {

struct Loader::State {
  LoadOptions options;
  CheckpointPlan plan;

  // After load(): per file, the buffer and where its data section starts in it.
  std::vector<std::shared_ptr<Buffer>> buffers;
  std::vector<std::byte*> data_starts;
  // Tensors moved to their own aligned buffer because their place in the file was not.
  std::unordered_map<std::string, std::shared_ptr<Buffer>> realigned;
  int device_index = -1;
  bool loaded = false;
  bool load_started = false;
};

Loader::Loader() : Loader(LoadOptions{}) {}

Loader::Loader(LoadOptions options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
}
Loader::~Loader() = default;
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;

void Loader::add(const std::filesystem::path& path) {
  if (state_->load_started) throw UnsupportedError(path.string() + ": add() after load()");
  state_->plan.add(path);
}

void Loader::add(std::span<const std::filesystem::path> paths) {
  for (const auto& p : paths) add(p);
}

const CheckpointPlan& Loader::plan() const noexcept { return state_->plan; }
const std::vector<PlannedFile>& Loader::files() const noexcept { return state_->plan.files(); }
std::uint64_t Loader::total_bytes() const noexcept { return state_->plan.total_bytes(); }
bool Loader::loaded() const noexcept { return state_->loaded; }

LoadStats Loader::load() {
  State& s = *state_;
  if (s.loaded) throw UnsupportedError("load() called on a loaded Loader; release() first");
  const auto& files = s.plan.files();
  detail::ReadExecutor executor(s.options, files);

  // Each file's data section goes to one buffer; the executor lays it out for its read.
  std::vector<std::shared_ptr<Buffer>> buffers(files.size());
  std::vector<std::byte*> data_starts(files.size(), nullptr);
  for (std::size_t i = 0; i < files.size(); ++i) {
    const Header& h = files[i].header;
    detail::Placement p = executor.place(i, h.data_offset(), h.file_size);
    executor.add(i, h.data_offset(), h.file_size, p.dest);
    buffers[i] = std::move(p.buffer);
    data_starts[i] = p.dest;
  }
  LoadStats stats = executor.run(s.plan.total_bytes());
  executor.close_files();
  stats.bytes = s.plan.total_bytes();
  stats.files = files.size();

  // Views must be aligned to their element size: the few tensors whose place in the file does
  // not allow that get buffers of their own.
  Allocator& allocator = *executor.allocator();
  const int device_index = executor.device().index;
  const bool device_buffers = allocator.kind() == MemoryKind::kDevice;
  std::unordered_map<std::string, std::shared_ptr<Buffer>> realigned;
  for (std::size_t i = 0; i < files.size(); ++i) {
    for (const TensorInfo& t : files[i].header.tensors) {
      if (auto side = detail::realigned_copy(allocator, t, data_starts[i] + t.begin, device_index,
                                             files[i].path)) {
        realigned.emplace(t.name, std::move(side));
      }
    }
  }

  if (s.options.verify) {
    const auto verify_start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < files.size(); ++i) {
      detail::verify_loaded_file(files[i].path, files[i].header, device_buffers ? device_index : -1,
                                 [&](const TensorInfo& t) -> const std::byte* {
                                   const auto it = realigned.find(t.name);
                                   return it != realigned.end() ? it->second->data()
                                                                : data_starts[i] + t.begin;
                                 });
    }
    stats.verify_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - verify_start).count();
  }

  s.buffers = std::move(buffers);
  s.data_starts = std::move(data_starts);
  s.realigned = std::move(realigned);
  s.device_index = device_index;
  s.loaded = true;
  s.load_started = true;
  return stats;
}

std::vector<std::string> Loader::keys() const { return state_->plan.keys(); }

bool Loader::contains(std::string_view name) const noexcept { return state_->plan.contains(name); }

const TensorInfo& Loader::info(std::string_view name) const { return state_->plan.info(name); }

const PlannedFile& Loader::file_of(std::string_view name) const {
  return state_->plan.file_of(name);
}

std::map<std::string, std::string> Loader::metadata() const { return state_->plan.metadata(); }

TensorView Loader::tensor(std::string_view name) const {
  const State& s = *state_;
  const TensorLocation where = s.plan.find(name);
  const std::string& file = s.plan.files()[where.file].path.string();
  if (!s.loaded) {
    throw UnsupportedError(file + ": tensor '" + std::string(name) + "' requested before load()");
  }
  const TensorInfo& t = s.plan.info(where);
  const auto& buffer = s.buffers[where.file];
  if (t.nbytes() == 0) {
    // No bytes to point at: give empty tensors an aligned address all the same.
    return detail::make_tensor_view(t, buffer->data(), buffer, file);
  }
  if (auto it = s.realigned.find(t.name); it != s.realigned.end()) {
    return detail::make_tensor_view(t, it->second->data(), it->second, file);
  }
  return detail::make_tensor_view(t, s.data_starts[where.file] + t.begin, buffer, file);
}

void Loader::copy_to_host(std::string_view name, std::span<std::byte> dest) const {
  const TensorView v = tensor(name);
  if (dest.size() < v.nbytes) {
    throw std::invalid_argument("copy_to_host of '" + v.name + "': " + std::to_string(dest.size()) +
                                " bytes given for " + std::to_string(v.nbytes));
  }
  if (v.nbytes == 0) return;
  if (v.memory == MemoryKind::kDevice) {
    detail::copy_to_host(dest.data(), v.data, v.nbytes, state_->device_index);
  } else {
    std::memcpy(dest.data(), v.data, v.nbytes);
  }
}

TensorView Loader::shard(std::string_view name, int rank, int world, int dim) const {
  const TensorLocation where = state_->plan.find(name);
  const TensorInfo& t = state_->plan.info(where);
  // The one shard rule (DistributedLoader uses it too); its errors name the file.
  const detail::BlockBytes block =
      detail::block_bytes(t, rank, world, dim, state_->plan.files()[where.file].path.string());
  return detail::block_view(tensor(name), block);
}

void Loader::release() noexcept {
  State& s = *state_;
  s.buffers.clear();
  s.data_starts.clear();
  s.realigned.clear();
  s.loaded = false;
}

}  // namespace warpload
