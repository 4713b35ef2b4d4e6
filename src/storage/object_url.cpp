#include "storage/object_url.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <stdexcept>

#include "storage/aws_credentials.hpp"
#include "warpload/object_storage.hpp"

namespace warpload::detail {
namespace {

bool starts_with_nocase(std::string_view text, std::string_view prefix) noexcept {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  }
  return true;
}

[[noreturn]] void bad_url(std::string_view text, const std::string& why) {
  throw std::invalid_argument(std::string(text) + ": not a readable URL: " + why);
}

// "scheme://host[:port]" of an http(s) URL, or "" when it has none.
std::string endpoint_of(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return {};
  const auto host_end = url.find_first_of("/?#", scheme_end + 3);
  const std::string_view endpoint = url.substr(0, host_end);
  if (endpoint.size() == scheme_end + 3) return {};
  return std::string(endpoint);
}

}  // namespace

bool is_object_url(std::string_view text) noexcept {
  return starts_with_nocase(text, "s3://") || starts_with_nocase(text, "http://") ||
         starts_with_nocase(text, "https://");
}

std::string percent_encode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0xF];
    }
  }
  return out;
}

std::string ObjectUrl::bucket_url() const {
  // Path-style (a custom endpoint) puts the bucket in the path; virtual-hosted in the host.
  return path_style ? endpoint + "/" + bucket + "/" : endpoint + "/";
}

std::string ObjectUrl::key_url(std::string_view other_key) const {
  return bucket_url() + percent_encode(other_key, true);
}

ObjectUrl parse_object_url(std::string_view text) {
  ObjectUrl url;
  url.text = std::string(text);
  if (starts_with_nocase(text, "http://") || starts_with_nocase(text, "https://")) {
    url.endpoint = endpoint_of(text);
    if (url.endpoint.empty()) bad_url(text, "no host");
    if (std::any_of(text.begin(), text.end(),
                    [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; })) {
      bad_url(text, "contains white space (encode it as %20)");
    }
    url.request_url = url.text;
    return url;
  }
  if (!starts_with_nocase(text, "s3://")) bad_url(text, "the scheme is not s3, http or https");
  url.s3 = true;
  const std::string_view rest = text.substr(5);
  const auto slash = rest.find('/');
  url.bucket = std::string(rest.substr(0, slash));
  url.key = slash == std::string_view::npos ? std::string() : std::string(rest.substr(slash + 1));
  if (url.bucket.empty()) bad_url(text, "no bucket");
  if (!std::all_of(url.bucket.begin(), url.bucket.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_';
      })) {
    bad_url(text, "the bucket name has characters S3 does not allow");
  }
  url.region = aws_region();
  const char* custom = std::getenv("AWS_ENDPOINT_URL");
  if (custom != nullptr && *custom != '\0') {
    std::string endpoint(custom);
    while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
    if (!starts_with_nocase(endpoint, "http://") && !starts_with_nocase(endpoint, "https://")) {
      bad_url(text, "AWS_ENDPOINT_URL '" + endpoint + "' is not an http:// or https:// URL");
    }
    if (endpoint_of(endpoint) != endpoint) {
      bad_url(text, "AWS_ENDPOINT_URL '" + endpoint + "' must be scheme://host[:port] only");
    }
    url.endpoint = endpoint;
    url.path_style = true;
  } else {
    url.endpoint = "https://" + url.bucket + ".s3." + url.region + ".amazonaws.com";
  }
  url.request_url = url.key_url(url.key);
  return url;
}

}  // namespace warpload::detail

namespace warpload {

bool is_object_url(std::string_view path) noexcept { return detail::is_object_url(path); }

}  // namespace warpload
