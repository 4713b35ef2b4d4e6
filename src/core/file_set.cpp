#include "core/file_set.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <set>
#include <system_error>

#include "storage/object_store.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
// An index names files and tensors; anything this large is not one.
constexpr std::uintmax_t kMaxIndexBytes = 256u << 20;

[[noreturn]] void bad_index(const fs::path& index, const std::string& what) {
  throw InvalidFileError(FormatRule::kInvalidIndex, index.string() + ": " + what);
}

// A weight_map value must name a file in the index's directory tree: no absolute paths,
// no "..", so an index cannot point the loader anywhere else on the machine.
bool is_safe_relative(const fs::path& p) {
  if (p.empty() || p.is_absolute()) return false;
  return std::none_of(p.begin(), p.end(), [](const fs::path& part) { return part == ".."; });
}

// The files and weight map of the index at `index` whose text is `json`. Local files named
// must exist; objects named by a URL index are checked when their headers are read.
CheckpointFiles parse_index(const fs::path& index, const simdjson::padded_string& json) {
  std::error_code ec;
  CheckpointFiles out;
  out.index = index;
  const fs::path dir = index.parent_path();
  std::set<fs::path> seen_files;
  // The DOM parser validates the whole document (trailing content included); an index is
  // small, so building the tree costs nothing that matters.
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto error = parser.parse(json).get(root)) {
    bad_index(index, std::string("not valid JSON: ") + simdjson::error_message(error));
  }
  simdjson::dom::object root_object;
  if (root.get_object().get(root_object)) bad_index(index, "top level is not a JSON object");
  simdjson::dom::object map;
  bool have_map = false;
  for (auto [key, value] : root_object) {
    if (key != "weight_map") continue;
    if (have_map) bad_index(index, "\"weight_map\" appears twice");
    if (value.get_object().get(map)) bad_index(index, "\"weight_map\" is not an object");
    have_map = true;
  }
  if (!have_map) bad_index(index, "no \"weight_map\" object");
  for (auto [key, value] : map) {
    std::string tensor(key);
    std::string_view file_name;
    if (value.get_string().get(file_name)) {
      bad_index(index, "weight_map entry for tensor '" + tensor + "' is not a string");
    }
    fs::path relative(file_name);
    if (!is_safe_relative(relative)) {
      bad_index(index, "tensor '" + tensor + "' maps to '" + std::string(file_name) +
                           "', which is not a file name relative to the index");
    }
    fs::path file = dir / relative;
    if (!out.weight_map.emplace(tensor, file).second) {
      bad_index(index, "tensor '" + tensor + "' appears twice in weight_map");
    }
    seen_files.insert(file);
  }
  if (seen_files.empty()) bad_index(index, "weight_map names no files");
  out.files.assign(seen_files.begin(), seen_files.end());
  for (const auto& file : out.files) {
    if (!is_object_url(file.string()) && !fs::exists(file, ec)) {
      throw NotFoundError(index.string() + ": names '" + file.string() + "', which does not exist");
    }
  }
  return out;
}

CheckpointFiles read_index(const fs::path& index) {
  std::error_code ec;
  const auto size = fs::file_size(index, ec);
  if (ec) throw NotFoundError(index.string() + ": " + ec.message());
  if (size > kMaxIndexBytes) bad_index(index, "index file is larger than 256 MiB");

  simdjson::padded_string json;
  if (auto error = simdjson::padded_string::load(index.string()).get(json)) {
    throw IoError(index.string() + ": cannot read index: " + simdjson::error_message(error), 0, 0);
  }
  return parse_index(index, json);
}

bool ends_with(std::string_view text, std::string_view tail) {
  return text.size() >= tail.size() && text.substr(text.size() - tail.size()) == tail;
}

// A URL: a .safetensors object, an index .json, or (s3://) a prefix holding either.
CheckpointFiles resolve_url(const fs::path& url) {
  const std::string text = url.string();
  if (ends_with(text, ".json")) {
    const std::string body = fetch_object_text(url, kMaxIndexBytes);
    return parse_index(url, simdjson::padded_string(body));
  }
  if (ends_with(text, ".safetensors")) {
    CheckpointFiles out;
    out.files.push_back(url);
    return out;
  }
  const std::vector<fs::path> listed = list_object_urls(url);
  const std::string directory = ends_with(text, "/") ? text : text + "/";
  CheckpointFiles out;
  for (const fs::path& object : listed) {
    const std::string name = object.string();
    // Like a local directory: its own objects, not those of "subdirectories".
    if (!name.starts_with(directory) || name.find('/', directory.size()) != std::string::npos) {
      continue;
    }
    if (ends_with(name, std::string("/") + kIndexName)) {
      const std::string body = fetch_object_text(object, kMaxIndexBytes);
      return parse_index(object, simdjson::padded_string(body));
    }
    if (ends_with(name, ".safetensors")) out.files.push_back(object);
  }
  if (out.files.empty()) {
    throw NotFoundError(text + ": no .safetensors objects under this prefix");
  }
  std::sort(out.files.begin(), out.files.end());
  return out;
}

bool is_id_part(std::string_view part) {
  if (part.empty() || part.front() == '.') return false;
  return std::all_of(part.begin(), part.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string(value) : std::string();
}

}  // namespace

fs::path hf_hub_cache_dir() {
  if (auto v = env_or_empty("HF_HUB_CACHE"); !v.empty()) return v;
  if (auto v = env_or_empty("HUGGINGFACE_HUB_CACHE"); !v.empty()) return v;  // older name
  if (auto v = env_or_empty("HF_HOME"); !v.empty()) return fs::path(v) / "hub";
  if (auto v = env_or_empty("XDG_CACHE_HOME"); !v.empty()) {
    return fs::path(v) / "huggingface" / "hub";
  }
  return fs::path(env_or_empty("HOME")) / ".cache" / "huggingface" / "hub";
}

bool looks_like_model_id(const std::string& text) {
  const std::string_view id = std::string_view(text).substr(0, text.find('@'));
  const auto slash = id.find('/');
  if (slash == std::string_view::npos) return false;
  if (!is_id_part(id.substr(0, slash)) || !is_id_part(id.substr(slash + 1))) return false;
  if (text.size() == id.size() + 1) return false;  // "org/name@": no revision
  // A file name that does not exist is a missing file, not a model.
  const auto ends_with = [&](std::string_view tail) {
    return id.size() >= tail.size() && id.substr(id.size() - tail.size()) == tail;
  };
  return !ends_with(".safetensors") && !ends_with(".json");
}

fs::path hf_snapshot_dir(const std::string& model_id) {
  const auto at = model_id.find('@');
  const std::string id = model_id.substr(0, at);
  const std::string revision = at == std::string::npos ? "main" : model_id.substr(at + 1);
  std::string folder = "models--" + id;
  folder.replace(folder.find('/'), 1, "--");
  const fs::path cache = hf_hub_cache_dir();
  const fs::path repo = cache / folder;
  std::error_code ec;
  if (!fs::is_directory(repo, ec)) {
    throw NotFoundError(model_id + ": not a file or directory, and not in the Hugging Face " +
                        "cache: looked for " + repo.string() +
                        " (cache from HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface/hub; " +
                        "warpload never downloads)");
  }
  // A branch or tag names a commit through refs/<revision>; a commit hash is a snapshot.
  const fs::path ref = repo / "refs" / revision;
  const bool safe =
      !revision.empty() && revision.find("..") == std::string::npos && revision.front() != '/';
  std::string commit = revision;
  if (std::ifstream in(ref); safe && in) {
    std::getline(in, commit);
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) {
      commit.pop_back();
    }
  }
  fs::path snapshot = repo / "snapshots" / commit;
  if (!safe || commit.empty() || commit.find('/') != std::string::npos ||
      !fs::is_directory(snapshot, ec)) {
    throw NotFoundError(model_id + ": revision '" + revision + "' is not in the Hugging Face " +
                        "cache: looked for " + ref.string() + " and " +
                        (repo / "snapshots" / revision).string());
  }
  return snapshot;
}

CheckpointFiles resolve_checkpoint(const fs::path& path) {
  if (is_object_url(path.string())) return resolve_url(path);
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    if (looks_like_model_id(path.string())) {
      return resolve_checkpoint(hf_snapshot_dir(path.string()));
    }
    throw NotFoundError(path.string() + ": no such file or directory");
  }
  if (fs::is_directory(status)) {
    const fs::path index = path / kIndexName;
    if (fs::exists(index, ec)) return read_index(index);
    CheckpointFiles out;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      if (entry.path().extension() == ".safetensors" && entry.is_regular_file(ec)) {
        out.files.push_back(entry.path());
      }
    }
    if (ec)
      throw IoError(path.string() + ": cannot list directory: " + ec.message(), ec.value(), 0);
    if (out.files.empty()) {
      throw NotFoundError(path.string() + ": directory holds no .safetensors files");
    }
    std::sort(out.files.begin(), out.files.end());
    return out;
  }
  if (path.extension() == ".json") return read_index(path);
  CheckpointFiles out;
  out.files.push_back(path);
  return out;
}

void check_index(const CheckpointFiles& files, const std::vector<const Header*>& headers) {
  if (files.index.empty()) return;
  std::size_t tensors_in_files = 0;
  for (std::size_t i = 0; i < files.files.size(); ++i) {
    for (const TensorInfo& t : headers[i]->tensors) {
      auto it = files.weight_map.find(t.name);
      if (it == files.weight_map.end()) {
        bad_index(files.index, "tensor '" + t.name + "' of " + files.files[i].string() +
                                   " is not in weight_map");
      }
      if (it->second != files.files[i]) {
        bad_index(files.index, "tensor '" + t.name + "' is in " + files.files[i].string() +
                                   " but weight_map names " + it->second.string());
      }
      ++tensors_in_files;
    }
  }
  if (tensors_in_files != files.weight_map.size()) {
    // Some mapped tensor is in none of the files: name one.
    for (const auto& [name, file] : files.weight_map) {
      auto pos = std::find(files.files.begin(), files.files.end(), file) - files.files.begin();
      if (headers[pos]->find(name) == nullptr) {
        bad_index(files.index, "weight_map names tensor '" + name + "' in " + file.string() +
                                   ", which does not hold it");
      }
    }
  }
}

}  // namespace warpload::detail
