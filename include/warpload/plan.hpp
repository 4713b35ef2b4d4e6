// CheckpointPlan: the files of a checkpoint, their validated headers and a tensor-name index.
// Every loader plans through one (Loader, DistributedLoader, ChunkedReader); nothing here
// reads tensor bytes.
//
//   warpload::CheckpointPlan plan;
//   plan.add("/models/llama");          // file, directory, or index.json
//   for (const auto& f : plan.files()) ...;
//   const TensorInfo& t = plan.info("lm_head.weight");
//
// What add() accepts: a .safetensors file; a directory (its model.safetensors.index.json if
// present, else every *.safetensors in it, sorted by name); an HF index.json (the files its
// weight_map names, which must exist and must hold exactly the tensors it maps).
//
// Thread safety: add() is not concurrent with anything; the queries are safe from any number
// of threads between add()s. Errors name the file (and the tensor where one applies).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "warpload/format.hpp"

namespace warpload {

// One file of a plan.
struct PlannedFile {
  std::filesystem::path path;
  Header header;
};

// Where a tensor is: files()[file].header.tensors[tensor].
struct TensorLocation {
  std::size_t file = 0;
  std::size_t tensor = 0;
};

// Consecutive tensors [first, last) (data order) of file `file` of a plan: what a chunk of a
// ChunkedReader and a segment of a multi-rank load are made of.
struct TensorSpan {
  std::size_t file = 0;
  std::size_t first = 0;
  std::size_t last = 0;
};

class CheckpointPlan {
 public:
  CheckpointPlan();
  ~CheckpointPlan();
  CheckpointPlan(const CheckpointPlan&);
  CheckpointPlan& operator=(const CheckpointPlan&);
  CheckpointPlan(CheckpointPlan&&) noexcept;
  CheckpointPlan& operator=(CheckpointPlan&&) noexcept;

  // Adds a file, a directory or an index.json. Headers are read and validated now; a failing
  // add() leaves the plan unchanged. Throws NotFoundError, InvalidFileError (kDuplicateTensor
  // when a name is already planned from another file, or the same file is added twice),
  // IoError.
  void add(const std::filesystem::path& path);
  void add(std::span<const std::filesystem::path> paths);

  // Files in the order added, each with its validated header.
  [[nodiscard]] const std::vector<PlannedFile>& files() const noexcept;
  // Sum of the data sections of all files.
  [[nodiscard]] std::uint64_t total_bytes() const noexcept;
  // Tensor names in plan order (file order, then data order).
  [[nodiscard]] std::vector<std::string> keys() const;
  [[nodiscard]] bool contains(std::string_view name) const noexcept;
  // Throws NotFoundError for an unknown name.
  [[nodiscard]] TensorLocation find(std::string_view name) const;
  [[nodiscard]] const TensorInfo& info(std::string_view name) const;
  [[nodiscard]] const TensorInfo& info(TensorLocation where) const noexcept;
  [[nodiscard]] const PlannedFile& file_of(std::string_view name) const;
  // "__metadata__" of every file merged (a key present in several files with different
  // values keeps the first file's).
  [[nodiscard]] std::map<std::string, std::string> metadata() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace warpload
