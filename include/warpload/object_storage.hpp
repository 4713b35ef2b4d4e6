// Object storage paths (docs/object-storage.md): `s3://bucket/key`, `http://...` and
// `https://...` are accepted wherever a path is, and read by the "http" backend.
#pragma once

#include <string_view>

namespace warpload {

// True when `path` names an object by URL: it starts with "s3://", "http://" or "https://"
// (scheme case-insensitive). Thread safe, never throws.
[[nodiscard]] bool is_object_url(std::string_view path) noexcept;

}  // namespace warpload
