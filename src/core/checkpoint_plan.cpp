#include <system_error>
#include <unordered_map>
#include <utility>

#include "common/printable.hpp"
#include "core/file_set.hpp"
#include "storage/object_store.hpp"
#include "warpload/error.hpp"
#include "warpload/plan.hpp"

namespace warpload {

struct CheckpointPlan::State {
  std::vector<PlannedFile> files;
  std::unordered_map<std::string, TensorLocation, NameHash, std::equal_to<>> by_name;
  std::uint64_t total_bytes = 0;
};

CheckpointPlan::CheckpointPlan() : state_(std::make_unique<State>()) {}
CheckpointPlan::~CheckpointPlan() = default;
CheckpointPlan::CheckpointPlan(const CheckpointPlan& other)
    : state_(std::make_unique<State>(*other.state_)) {}
CheckpointPlan& CheckpointPlan::operator=(const CheckpointPlan& other) {
  if (this != &other) state_ = std::make_unique<State>(*other.state_);
  return *this;
}
CheckpointPlan::CheckpointPlan(CheckpointPlan&&) noexcept = default;
CheckpointPlan& CheckpointPlan::operator=(CheckpointPlan&&) noexcept = default;

void CheckpointPlan::add(const std::filesystem::path& path) {
  State& s = *state_;
  detail::CheckpointFiles resolved = detail::resolve_checkpoint(path);

  // Parse everything first so a failure leaves the plan as it was.
  std::vector<PlannedFile> added;
  added.reserve(resolved.files.size());
  for (const auto& file : resolved.files) {
    const bool url = detail::is_object_url(file.string());
    for (const auto& existing : s.files) {
      std::error_code ec;
      if (url ? existing.path == file : std::filesystem::equivalent(existing.path, file, ec)) {
        throw InvalidFileError(FormatRule::kDuplicateTensor,
                               file.string() + ": file is already part of this load");
      }
    }
    added.push_back(PlannedFile{file, url ? detail::read_url_header(file) : read_header(file)});
  }
  std::vector<const Header*> headers;
  headers.reserve(added.size());
  for (const auto& f : added) headers.push_back(&f.header);
  detail::check_index(resolved, headers);

  std::unordered_map<std::string, TensorLocation, NameHash, std::equal_to<>> names;
  const std::size_t first_new = s.files.size();
  for (std::size_t f = 0; f < added.size(); ++f) {
    const auto& tensors = added[f].header.tensors;
    for (std::size_t t = 0; t < tensors.size(); ++t) {
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
      names.emplace(name, TensorLocation{first_new + f, t});
    }
  }
  for (auto& f : added) {
    s.total_bytes += f.header.data_size();
    s.files.push_back(std::move(f));
  }
  s.by_name.merge(names);
}

void CheckpointPlan::add(std::span<const std::filesystem::path> paths) {
  for (const auto& p : paths) add(p);
}

const std::vector<PlannedFile>& CheckpointPlan::files() const noexcept { return state_->files; }
std::uint64_t CheckpointPlan::total_bytes() const noexcept { return state_->total_bytes; }

std::vector<std::string> CheckpointPlan::keys() const {
  std::vector<std::string> out;
  out.reserve(state_->by_name.size());
  for (const auto& f : state_->files) {
    for (const auto& t : f.header.tensors) out.push_back(t.name);
  }
  return out;
}

bool CheckpointPlan::contains(std::string_view name) const noexcept {
  return state_->by_name.contains(name);
}

TensorLocation CheckpointPlan::find(std::string_view name) const {
  auto it = state_->by_name.find(name);
  if (it == state_->by_name.end()) {
    throw NotFoundError("no tensor named '" + detail::printable(name) + "'");
  }
  return it->second;
}

const TensorInfo& CheckpointPlan::info(std::string_view name) const { return info(find(name)); }

const TensorInfo& CheckpointPlan::info(TensorLocation where) const noexcept {
  return state_->files[where.file].header.tensors[where.tensor];
}

const PlannedFile& CheckpointPlan::file_of(std::string_view name) const {
  return state_->files[find(name).file];
}

std::map<std::string, std::string> CheckpointPlan::metadata() const {
  std::map<std::string, std::string> out;
  for (const auto& f : state_->files)
    out.insert(f.header.metadata.begin(), f.header.metadata.end());
  return out;
}

}  // namespace warpload
