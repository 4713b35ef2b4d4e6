// Object storage locations: the one place `s3://`, `http://` and `https://` paths are parsed.
//
//   http(s)://host[:port]/path   requested as written (the path must already be URL-encoded)
//   s3://bucket/key              requested at AWS_ENDPOINT_URL/bucket/key (path-style) when that
//                                variable is set, else https://bucket.s3.REGION.amazonaws.com/key
//                                (virtual-hosted); the key is percent-encoded, '/' kept
//
// Paths travel through the rest of the library as std::filesystem::path holding the URL text;
// is_object_url() is how other layers tell a URL from a local path. Thread safety: free
// functions, no shared state.
#pragma once

#include <string>
#include <string_view>

namespace warpload::detail {

// True for text starting with "s3://", "http://" or "https://" (scheme case-insensitive).
[[nodiscard]] bool is_object_url(std::string_view text) noexcept;

// Percent-encodes every byte but RFC 3986 unreserved ones; '/' too unless `keep_slash`.
[[nodiscard]] std::string percent_encode(std::string_view text, bool keep_slash);

struct ObjectUrl {
  std::string text;  // as given: what messages name
  bool s3 = false;
  std::string bucket;       // s3 only
  std::string key;          // s3 only, decoded (as listed by ListObjectsV2)
  std::string endpoint;     // scheme://host[:port] requests go to (no trailing '/')
  std::string request_url;  // the URL GETs are sent to
  std::string region;       // s3 only: what requests are signed for
  bool path_style = false;  // s3 only: the bucket is in the path (a custom endpoint)

  // The request URL of the bucket itself (s3 only), for ListObjectsV2.
  [[nodiscard]] std::string bucket_url() const;
  // The request URL of another key in the same bucket (s3 only).
  [[nodiscard]] std::string key_url(std::string_view other_key) const;
};

// Parses `text`. Throws std::invalid_argument naming it when it is not a URL this library
// reads (unknown scheme, no host, s3:// without a bucket, a bad AWS_ENDPOINT_URL).
// For s3:// URLs the region comes from aws_region() (aws_credentials.hpp).
[[nodiscard]] ObjectUrl parse_object_url(std::string_view text);

}  // namespace warpload::detail
