// Tensor manifests: per-tensor XXH3-64 digests that `warpload hash` writes and
// `warpload load --manifest` checks, to detect bytes corrupted at rest (docs/cli.md).
//
//   {"format": "warpload-manifest", "version": 1, "algorithm": "xxh3_64",
//    "tensors": {"lm_head.weight": {"file": "model-00002-of-00002.safetensors",
//                                   "nbytes": 24444928, "xxh3_64": "39e8f25775cf2de8"}}}
//
// Tensors are keyed by name (unique across one load); "file" is the file name without its
// directory, for people reading the manifest, and is not checked: shards may be moved.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "warpload/loader.hpp"

namespace warpload::cli {

// One loaded tensor and the XXH3-64 (seed 0) of its bytes.
struct TensorDigest {
  const PlannedFile* file = nullptr;
  const TensorInfo* info = nullptr;
  std::uint64_t xxh3 = 0;
};

// XXH3-64 of a loaded tensor; device tensors are copied back through `host_copy` first.
[[nodiscard]] std::uint64_t tensor_xxh3(const Loader& loader, const TensorInfo& info,
                                        std::vector<std::byte>& host_copy);

// Every tensor of the loader's files, in plan order, with its digest.
[[nodiscard]] std::vector<TensorDigest> digest_tensors(const Loader& loader);

// The manifest JSON for `tensors`, one line with a trailing newline.
[[nodiscard]] std::string manifest_json(const std::vector<TensorDigest>& tensors);

struct ManifestEntry {
  std::string file;
  std::uint64_t nbytes = 0;
  std::uint64_t xxh3 = 0;
};

struct Manifest {
  std::filesystem::path path;
  std::map<std::string, ManifestEntry, std::less<>> tensors;
};

// Reads a manifest. Throws NotFoundError, IoError, or InvalidFileError(kInvalidManifest)
// naming the manifest.
[[nodiscard]] Manifest read_manifest(const std::filesystem::path& path);

// Checks every loaded tensor against the manifest and that the manifest names no tensor that
// was not loaded. Throws InvalidFileError(kChecksumMismatch) naming the file and tensor (or
// the manifest, for a tensor missing from the load) on the first difference.
void check_manifest(const Manifest& manifest, const std::vector<TensorDigest>& tensors);

}  // namespace warpload::cli
