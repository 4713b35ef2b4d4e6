// LoadOptions::verify: after a load, every tensor's bytes are read again from the file on a
// path that shares nothing with the storage backends (a fresh descriptor, buffered pread() in
// sequential chunks, no O_DIRECT, no io_uring, no mapping) and compared with what the load
// handed out. It catches a backend, an engine or a device copy that delivered wrong bytes;
// bytes that are already wrong on disk are the manifest's job (`warpload hash`, docs/cli.md).
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>

#include "warpload/format.hpp"

namespace warpload::detail {

// Where the loaded bytes of `tensor` are (its view's data).
using LoadedTensorBytes = std::function<const std::byte*(const TensorInfo& tensor)>;

// Compares every tensor of `header` (the file at `path`) with `loaded`. `device_index` is the
// CUDA ordinal holding the loaded bytes, or -1 for host memory. Throws IoError naming the
// file, the tensor and the file offset of the first byte that differs (errno EIO); IoError or
// NotFoundError when the file cannot be read again or changed size.
void verify_loaded_file(const std::filesystem::path& path, const Header& header, int device_index,
                        const LoadedTensorBytes& loaded);

// As verify_loaded_file() for tensors [first, last) of `header` only (consecutive in data
// order): what a chunked read holds at a time.
void verify_loaded_tensors(const std::filesystem::path& path, const Header& header,
                           std::size_t first, std::size_t last, int device_index,
                           const LoadedTensorBytes& loaded);

}  // namespace warpload::detail
