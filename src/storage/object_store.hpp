// What the layers above the storage layer need to know about object storage: whether a path
// is a URL, how to resolve and read what a URL names, and which backend reads it.
// Everything else (libcurl, signing, retries) stays in src/storage/object_*.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/object_url.hpp"
#include "warpload/format.hpp"
#include "warpload/plan.hpp"

namespace warpload::detail {

// The whole object at `url` (an index.json), at most `max_bytes`. Throws NotFoundError (404,
// or a URL that does not parse), IoError naming the URL.
[[nodiscard]] std::string fetch_object_text(const std::filesystem::path& url,
                                            std::uint64_t max_bytes);

// The objects under an s3:// prefix (its key taken as a directory: "s3://b/dir" lists
// "dir/"), as s3:// URLs in key order. Throws UnsupportedError for http(s):// URLs (plain
// HTTP cannot list), IoError / NotFoundError naming the URL.
[[nodiscard]] std::vector<std::filesystem::path> list_object_urls(
    const std::filesystem::path& prefix);

// The header of a safetensors object (object_client.hpp, read_object_header).
[[nodiscard]] Header read_url_header(const std::filesystem::path& url);

// The backend a load of `files` reads with, given the configured `backend`: "auto" with URLs
// becomes "http"; a backend that reads only local files with a URL, or one that reads only
// URLs with a local file, is an UnsupportedError naming the path. Mixed URLs and local files
// are refused the same way.
[[nodiscard]] std::string backend_for_files(std::string_view backend,
                                            std::span<const PlannedFile> files);

}  // namespace warpload::detail
