// Resolving what the user named (a file, a directory, an HF index) into safetensors files.
#pragma once

#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "warpload/format.hpp"

namespace warpload::detail {

struct CheckpointFiles {
  std::vector<std::filesystem::path> files;
  // Set when the files came from a model.safetensors.index.json.
  std::filesystem::path index;
  // tensor name -> file path (index directory / file name); empty without an index.
  std::unordered_map<std::string, std::filesystem::path> weight_map;
};

// A .safetensors file → itself. A directory → its model.safetensors.index.json if present,
// else every *.safetensors in it sorted by name. A *.json file → parsed as an HF index.
// Throws NotFoundError (missing path, directory without shards) or
// InvalidFileError(kInvalidIndex) naming the index and what is wrong with it.
[[nodiscard]] CheckpointFiles resolve_checkpoint(const std::filesystem::path& path);

// Checks that the files of an index hold exactly the tensors its weight_map names, each in
// the file it names. `headers[i]` is the header of `files.files[i]`. No-op without an index.
void check_index(const CheckpointFiles& files, const std::vector<const Header*>& headers);

}  // namespace warpload::detail
