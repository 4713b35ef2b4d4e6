#include "manifest.hpp"

#include <fmt/core.h>
#include <simdjson.h>
#include <xxhash.h>

#include <cerrno>
#include <charconv>
#include <set>
#include <string_view>
#include <system_error>

#include "json_writer.hpp"
#include "warpload/error.hpp"

namespace warpload::cli {
namespace {

constexpr std::string_view kFormat = "warpload-manifest";
constexpr std::string_view kAlgorithm = "xxh3_64";

std::string hex64(std::uint64_t value) { return fmt::format("{:016x}", value); }

[[noreturn]] void invalid(const std::filesystem::path& path, std::string_view what) {
  throw InvalidFileError(FormatRule::kInvalidManifest,
                         fmt::format("{}: {} ({})", path.string(), what,
                                     format_rule_name(FormatRule::kInvalidManifest)));
}

[[noreturn]] void mismatch(std::string_view where, std::string_view what) {
  throw InvalidFileError(
      FormatRule::kChecksumMismatch,
      fmt::format("{}: {} ({})", where, what, format_rule_name(FormatRule::kChecksumMismatch)));
}

// Tensor names in messages: as the library prints them (control bytes escaped), kept short.
std::string tensor_label(std::string_view name) {
  std::string out;
  for (const char c : name.substr(0, 200)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  if (name.size() > 200) out += fmt::format("...({} bytes)", name.size());
  return "'" + out + "'";
}

}  // namespace

std::uint64_t tensor_xxh3(const Loader& loader, const TensorInfo& info,
                          std::vector<std::byte>& host_copy) {
  const TensorView view = loader.tensor(info.name);
  if (view.memory == MemoryKind::kDevice) {
    host_copy.resize(view.nbytes);
    loader.copy_to_host(info.name, host_copy);
    return XXH3_64bits(host_copy.data(), view.nbytes);
  }
  return XXH3_64bits(view.data, view.nbytes);
}

std::vector<TensorDigest> digest_tensors(const Loader& loader) {
  std::vector<TensorDigest> out;
  std::vector<std::byte> host_copy;
  for (const PlannedFile& file : loader.files()) {
    for (const TensorInfo& info : file.header.tensors) {
      out.push_back({&file, &info, tensor_xxh3(loader, info, host_copy)});
    }
  }
  return out;
}

std::string manifest_json(const std::vector<TensorDigest>& tensors) {
  std::string out;
  JsonWriter w(out);
  w.begin_object()
      .field("format", kFormat)
      .field("version", std::uint64_t{1})
      .field("algorithm", kAlgorithm);
  w.key("tensors").begin_object();
  for (const TensorDigest& t : tensors) {
    w.key(t.info->name)
        .begin_object()
        .field("file", t.file->path.filename().string())
        .field("nbytes", t.info->nbytes())
        .field("xxh3_64", hex64(t.xxh3))
        .end_object();
  }
  w.end_object().end_object();
  out.push_back('\n');
  return out;
}

Manifest read_manifest(const std::filesystem::path& path) {
  simdjson::padded_string text;
  if (auto error = simdjson::padded_string::load(path.string()).get(text)) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) throw NotFoundError(path.string() + ": no such file");
    throw IoError(path.string() + ": cannot read the manifest: " + simdjson::error_message(error),
                  EIO, 0);
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto error = parser.parse(text).get(root)) {
    invalid(path, fmt::format("not JSON: {}", simdjson::error_message(error)));
  }
  std::string_view format;
  std::string_view algorithm;
  std::uint64_t version = 0;
  if (root["format"].get(format) || format != kFormat) {
    invalid(path, fmt::format("\"format\" must be \"{}\"", kFormat));
  }
  if (root["version"].get(version) || version != 1) invalid(path, "\"version\" must be 1");
  if (root["algorithm"].get(algorithm) || algorithm != kAlgorithm) {
    invalid(path, fmt::format("\"algorithm\" must be \"{}\"", kAlgorithm));
  }
  simdjson::dom::object tensors;
  if (root["tensors"].get(tensors)) invalid(path, "\"tensors\" must be an object");

  Manifest manifest;
  manifest.path = path;
  for (const auto [name, value] : tensors) {
    ManifestEntry entry;
    std::string_view file;
    std::string_view digest;
    if (value["file"].get(file) || value["nbytes"].get(entry.nbytes) ||
        value["xxh3_64"].get(digest)) {
      invalid(path, fmt::format("tensor {}: needs \"file\" (string), \"nbytes\" (integer) and "
                                "\"xxh3_64\" (16 hex digits)",
                                tensor_label(name)));
    }
    const auto [end, error] =
        std::from_chars(digest.data(), digest.data() + digest.size(), entry.xxh3, 16);
    if (digest.size() != 16 || error != std::errc() || end != digest.data() + digest.size()) {
      invalid(path, fmt::format("tensor {}: \"xxh3_64\" must be 16 hex digits, not \"{}\"",
                                tensor_label(name), digest.substr(0, 40)));
    }
    entry.file = file;
    if (!manifest.tensors.emplace(std::string(name), std::move(entry)).second) {
      invalid(path, fmt::format("tensor {} appears twice", tensor_label(name)));
    }
  }
  return manifest;
}

void check_manifest(const Manifest& manifest, const std::vector<TensorDigest>& tensors) {
  std::set<std::string_view> seen;
  for (const TensorDigest& t : tensors) {
    const std::string where =
        fmt::format("{}: tensor {}", t.file->path.string(), tensor_label(t.info->name));
    const auto it = manifest.tensors.find(t.info->name);
    if (it == manifest.tensors.end()) {
      mismatch(where, fmt::format("is not in the manifest {}", manifest.path.string()));
    }
    seen.insert(it->first);
    if (it->second.nbytes != t.info->nbytes()) {
      mismatch(where, fmt::format("{} bytes, the manifest {} says {}", t.info->nbytes(),
                                  manifest.path.string(), it->second.nbytes));
    }
    if (it->second.xxh3 != t.xxh3) {
      mismatch(where, fmt::format("XXH3-64 {} differs from {} in the manifest {}: the bytes are "
                                  "not the ones the manifest was made from",
                                  hex64(t.xxh3), hex64(it->second.xxh3), manifest.path.string()));
    }
  }
  for (const auto& [name, entry] : manifest.tensors) {
    if (!seen.contains(name)) {
      mismatch(manifest.path.string(), fmt::format("tensor {} (file {}) is not in the loaded files",
                                                   tensor_label(name), entry.file));
    }
  }
}

}  // namespace warpload::cli
