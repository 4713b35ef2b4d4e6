// HttpStorage: the "http" backend. Reads objects named by URL (s3://, http://, https://) with
// ranged GETs through the transfer engine in object_client.cpp, straight into the
// destination. Files have no descriptor; each knows its URL, size and the ETag pinned when the
// plan read its header, which every range then requires.
#include <cerrno>
#include <exception>
#include <stdexcept>
#include <utility>
#include <vector>

#include "storage/backends.hpp"
#include "storage/object_client.hpp"
#include "storage/object_store.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

class ObjectFile final : public StorageFile {
 public:
  ObjectFile(ObjectUrl url, const PinnedObject& version, const HttpSettings& settings)
      : StorageFile(url.text, -1, version.size, 1),
        url_(std::move(url)),
        etag_(version.etag),
        settings_(settings) {}

  [[nodiscard]] const ObjectUrl& url() const noexcept { return url_; }
  [[nodiscard]] const std::string& etag() const noexcept { return etag_; }

  // One ranged GET (with the engine's retries); -EIO for any failure.
  [[nodiscard]] std::int64_t read_some(std::byte* dest, std::size_t size,
                                       std::uint64_t offset) noexcept override {
    if (offset >= this->size()) return 0;
    const std::uint64_t length = std::min<std::uint64_t>(size, this->size() - offset);
    try {
      const ObjectRange range{&url_, etag_, offset, length, dest};
      fetch_ranges({&range, 1}, settings_, nullptr);
      return static_cast<std::int64_t>(length);
    } catch (...) {
      return -EIO;
    }
  }

 private:
  ObjectUrl url_;
  std::string etag_;
  HttpSettings settings_;
};

class HttpStorage final : public Storage {
 public:
  explicit HttpStorage(const StorageOptions& options)
      : settings_(resolve_http_settings(options.http, options.threads)) {
    capabilities_.name = "http";
  }

  [[nodiscard]] const StorageCapabilities& capabilities() const noexcept override {
    return capabilities_;
  }

  [[nodiscard]] std::unique_ptr<StorageFile> open(const std::filesystem::path& path) override {
    const std::string text = path.string();
    if (!is_object_url(text)) {
      throw UnsupportedError(text +
                             ": backend 'http' reads URLs only (s3://, http://, https://); "
                             "use another backend for local files");
    }
    ObjectUrl url;
    try {
      url = parse_object_url(text);
    } catch (const std::invalid_argument& e) {
      throw NotFoundError(e.what());
    }
    PinnedObject version;
    if (!pinned_object_version(text, &version)) {
      // Opened without a plan: ask the server (one small ranged GET) and pin what it says.
      const ObjectPrefix prefix = fetch_prefix(url, 1, settings_);
      version = PinnedObject{prefix.size, prefix.etag};
    }
    return std::make_unique<ObjectFile>(std::move(url), std::move(version), settings_);
  }

  void read(std::span<const ReadRequest> requests, ReadControl* control) override {
    std::vector<ObjectRange> ranges;
    std::vector<ReadRequest> others;
    ranges.reserve(requests.size());
    for (const ReadRequest& r : requests) {
      // A file opened here, or a decorator's (tests) served through read_some().
      auto* file = dynamic_cast<ObjectFile*>(r.file);
      if (file == nullptr) {
        others.push_back(r);
        continue;
      }
      // Past-end-of-file tails are not read (ReadRequest contract).
      if (r.offset >= file->size()) continue;
      const std::uint64_t length = std::min(r.length, file->size() - r.offset);
      ranges.push_back(ObjectRange{&file->url(), file->etag(), r.offset, length, r.dest});
    }
    fetch_ranges(ranges, settings_, control);
    if (!others.empty()) {
      ReadTracker tracker(others, settings_.request_size, control);
      run_posix_reads(tracker, settings_.connections);
      tracker.finish();
    }
  }

 private:
  StorageCapabilities capabilities_;
  HttpSettings settings_;
};

}  // namespace

std::string fetch_object_text(const std::filesystem::path& path, std::uint64_t max_bytes) {
  ObjectUrl url;
  try {
    url = parse_object_url(path.string());
  } catch (const std::invalid_argument& e) {
    throw NotFoundError(e.what());
  }
  return fetch_body(url, url.request_url, max_bytes, resolve_http_settings({}));
}

std::vector<std::filesystem::path> list_object_urls(const std::filesystem::path& path) {
  ObjectUrl url;
  try {
    url = parse_object_url(path.string());
  } catch (const std::invalid_argument& e) {
    throw NotFoundError(e.what());
  }
  if (!url.s3) {
    throw UnsupportedError(url.text +
                           ": plain HTTP cannot list a directory: name a "
                           ".safetensors file or a model.safetensors.index.json");
  }
  ObjectUrl prefix = url;
  if (!prefix.key.empty() && prefix.key.back() != '/') prefix.key += '/';
  std::vector<std::filesystem::path> urls;
  for (const std::string& key : list_object_keys(prefix, resolve_http_settings({}))) {
    urls.emplace_back("s3://" + url.bucket + "/" + key);
  }
  return urls;
}

Header read_url_header(const std::filesystem::path& url) {
  try {
    return read_object_header(url);
  } catch (const std::invalid_argument& e) {
    throw NotFoundError(e.what());
  }
}

std::string backend_for_files(std::string_view backend, std::span<const PlannedFile> files) {
  const PlannedFile* url = nullptr;
  const PlannedFile* local = nullptr;
  for (const PlannedFile& f : files) {
    (is_object_url(f.path.string()) ? url : local) = &f;
  }
  const BackendInfo* info = find_backend(backend);
  if (url == nullptr) {
    if (info != nullptr && info->reads_urls) {
      throw UnsupportedError(local->path.string() + ": backend '" + std::string(backend) +
                             "' reads URLs only (s3://, http://, https://), not local files");
    }
    return std::string(backend);
  }
  if (local != nullptr) {
    throw UnsupportedError(local->path.string() +
                           ": one load reads either URLs or local files, "
                           "not both (" +
                           url->path.string() + " is a URL)");
  }
  if (backend == default_backend_name()) return "http";
  if (info != nullptr && !info->reads_urls) {
    throw UnsupportedError(url->path.string() + ": backend '" + std::string(backend) +
                           "' reads local files only; URLs are read by backend 'http' (or "
                           "'auto')");
  }
  return std::string(backend);
}

std::unique_ptr<Storage> make_http_storage(const StorageOptions& options) {
  return std::make_unique<HttpStorage>(options);
}

}  // namespace warpload::detail
