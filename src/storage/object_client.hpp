// The object storage transfer engine (libcurl) and the small fetches planning needs.
//
// fetch_ranges() lands byte ranges of objects in memory: curl multi handles (`threads` of them,
// each on its own thread) keep `connections` ranged GETs in flight between them (keep-alive
// connections, HTTP/2 where TLS offers it); each range is cut into `request_size` GETs whose write
// callback copies straight into the destination, bounds-checked (a body longer than asked fails the
// range, nothing is written past it). Reliability:
//   - 5xx, 408, 429 (S3 SlowDown), connection resets, refused connections, truncated bodies
//     and stalls (no byte for stall_timeout_ms) are retried with exponential backoff and jitter,
//     up to `attempts` tries per GET; a retry asks only for the bytes still missing;
//   - a range of an object with a pinned ETag carries If-Match; a 412, or a response whose
//     ETag differs, is "the object was replaced during the load" and is not retried;
//   - 404 is NotFoundError, other failures IoError, each naming the URL and the offset; the
//     S3 error code and message, a wrong region and TLS failures are spelled out.
// ReadControl: bytes_done grows as bytes land; cancel stops every transfer within ~50 ms.
// On a throw nothing is in flight.
//
// S3 requests are signed by libcurl (CURLOPT_AWS_SIGV4) with aws_credentials().
// Thread safety: every function may be called from any thread; calls share nothing but the
// pinned versions table (mutex) and libcurl's global init (once).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/object_url.hpp"
#include "warpload/format.hpp"
#include "warpload/storage.hpp"

namespace warpload::detail {

// HttpOptions with every 0 replaced by its default.
struct HttpSettings {
  unsigned connections = 0;
  std::uint64_t request_size = 0;
  unsigned stall_timeout_ms = 0;
  unsigned attempts = 0;
  unsigned backoff_ms = 0;
  unsigned threads = 0;  // engines (multi handles, each on a thread) sharing the connections
};
inline constexpr unsigned kDefaultHttpConnections = 16;
inline constexpr std::uint64_t kDefaultHttpRequestSize = 8ULL << 20;
inline constexpr unsigned kDefaultHttpStallTimeoutMs = 30'000;
inline constexpr unsigned kDefaultHttpAttempts = 10;
inline constexpr unsigned kDefaultHttpBackoffMs = 100;
inline constexpr unsigned kMaxDefaultThreads = 4;
// `threads`: StorageOptions::threads; 0 = the cores, at most kMaxDefaultThreads.
[[nodiscard]] HttpSettings resolve_http_settings(const HttpOptions& options,
                                                 unsigned threads = 0) noexcept;

// Bytes [offset, offset + length) of the object at `url` land at [dest, dest + length).
struct ObjectRange {
  const ObjectUrl* url = nullptr;
  std::string etag;  // required of every response (If-Match) when not empty
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::byte* dest = nullptr;
};

// Reads every range completely (see the top). Throws NotFoundError, IoError, CancelledError,
// UnsupportedError (no S3 credentials).
void fetch_ranges(std::span<const ObjectRange> ranges, const HttpSettings& settings,
                  ReadControl* control);

// What one GET of an object's first bytes says about it.
struct ObjectPrefix {
  std::uint64_t size = 0;        // the object's size
  std::string etag;              // its ETag as sent (quotes kept), "" if the server sends none
  std::vector<std::byte> bytes;  // its first min(asked, size) bytes
};
[[nodiscard]] ObjectPrefix fetch_prefix(const ObjectUrl& url, std::uint64_t bytes,
                                        const HttpSettings& settings);

// The whole body of a GET of `request_url` (an object, or a listing), at most `max_bytes`.
// Messages name `url.text`.
[[nodiscard]] std::string fetch_body(const ObjectUrl& url, const std::string& request_url,
                                     std::uint64_t max_bytes, const HttpSettings& settings);

// The keys under an s3:// URL's key taken as a prefix, in S3's (lexicographic) order, through
// ListObjectsV2 and its continuation tokens.
// `page_size` > 0 asks for pages of at most that many keys (max-keys; tests).
[[nodiscard]] std::vector<std::string> list_object_keys(const ObjectUrl& prefix,
                                                        const HttpSettings& settings,
                                                        unsigned page_size = 0);

// The header of the safetensors object at `url`: one speculative ranged GET of the first
// kSpeculativeHeaderBytes, then the rest of the header when it is longer. Pins the object's
// size and ETag (pin_object_version) so that the load's reads require this version.
inline constexpr std::uint64_t kSpeculativeHeaderBytes = 1ULL << 20;
[[nodiscard]] Header read_object_header(const std::filesystem::path& url);

// The version of an object a plan read the header of; the backend's open() uses it instead
// of asking the server again, and its reads then require this ETag. Re-pinned by every header
// read (a new plan sees a replaced object as it now is).
struct PinnedObject {
  std::uint64_t size = 0;
  std::string etag;
};
void pin_object_version(const std::string& url, PinnedObject pinned);
[[nodiscard]] bool pinned_object_version(const std::string& url, PinnedObject* out);

// Decodes the five XML entities and numeric character references; exposed for tests.
[[nodiscard]] std::string xml_unescape(std::string_view text);

}  // namespace warpload::detail
