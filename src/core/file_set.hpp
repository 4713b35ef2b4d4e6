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
// A path that does not exist but reads as a Hugging Face model id, `org/name[@revision]`
// → that model's snapshot in the local hub cache (hf_snapshot_dir), resolved as a directory.
// A URL (s3://, http://, https://; storage/object_store.hpp): a *.safetensors object → itself;
// a *.json object → parsed as an HF index, its files resolved relative to it; an s3:// prefix
// → listed (ListObjectsV2): its model.safetensors.index.json if present, else its
// *.safetensors objects sorted by key ("subdirectories" are not entered).
// Throws NotFoundError (missing path, directory without shards, id not in the cache) or
// InvalidFileError(kInvalidIndex) naming the index and what is wrong with it.
[[nodiscard]] CheckpointFiles resolve_checkpoint(const std::filesystem::path& path);

// The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub (huggingface_hub's order).
[[nodiscard]] std::filesystem::path hf_hub_cache_dir();

// True when `text` has the shape of a model id: `org/name` or `org/name@revision`, each
// part of letters, digits, '-', '_' and '.', not starting with '.' ("./x", "../x" are paths).
[[nodiscard]] bool looks_like_model_id(const std::string& text);

// <cache>/models--org--name/snapshots/<commit> for `org/name[@revision]` (default revision
// "main"; a branch or tag is looked up in refs/<revision>, a commit hash used as is). No
// network. Throws NotFoundError naming the directories it looked in when the model or the
// revision is not in the cache.
[[nodiscard]] std::filesystem::path hf_snapshot_dir(const std::string& model_id);

// Checks that the files of an index hold exactly the tensors its weight_map names, each in
// the file it names. `headers[i]` is the header of `files.files[i]`. No-op without an index.
void check_index(const CheckpointFiles& files, const std::vector<const Header*>& headers);

}  // namespace warpload::detail
