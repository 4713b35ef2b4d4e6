#include "warpload/config.hpp"

#include <fcntl.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <system_error>

#include "warpload/error.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;

const char* env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? value : nullptr;
}

[[noreturn]] void invalid(const fs::path& path, const std::string& what) {
  throw InvalidFileError(FormatRule::kInvalidConfig,
                         path.string() + ": " + what + " (invalid_config)");
}

// Typed access to one object's keys; a present key of the wrong type is an error naming the
// file and the key.
class ConfigObject {
 public:
  ConfigObject(const fs::path& path, simdjson::dom::object object, std::string prefix)
      : path_(path), object_(object), prefix_(std::move(prefix)) {}

  std::optional<simdjson::dom::element> find(std::string_view key) const {
    simdjson::dom::element e;
    if (object_.at_key(key).get(e) != simdjson::SUCCESS) return std::nullopt;
    return e;
  }

  std::optional<std::uint64_t> count(std::string_view key, std::uint64_t max) const {
    auto e = find(key);
    if (!e) return std::nullopt;
    std::uint64_t u = 0;
    std::int64_t i = 0;
    if (e->get_uint64().get(u) == simdjson::SUCCESS) {
      if (u > max) wrong(key, "a count of at most " + std::to_string(max));
      return u;
    }
    if (e->get_int64().get(i) == simdjson::SUCCESS) wrong(key, "a non-negative integer");
    wrong(key, "a non-negative integer");
  }

  std::optional<std::int64_t> integer(std::string_view key, std::int64_t min,
                                      std::int64_t max) const {
    auto e = find(key);
    if (!e) return std::nullopt;
    std::int64_t i = 0;
    if (e->get_int64().get(i) != simdjson::SUCCESS || i < min || i > max) {
      wrong(key, "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    return i;
  }

  std::optional<double> number(std::string_view key) const {
    auto e = find(key);
    if (!e) return std::nullopt;
    double d = 0;
    if (e->get_double().get(d) != simdjson::SUCCESS) wrong(key, "a number");
    return d;
  }

  std::optional<bool> boolean(std::string_view key) const {
    auto e = find(key);
    if (!e) return std::nullopt;
    bool b = false;
    if (e->get_bool().get(b) != simdjson::SUCCESS) wrong(key, "true or false");
    return b;
  }

  std::optional<std::string> string(std::string_view key) const {
    auto e = find(key);
    if (!e) return std::nullopt;
    std::string_view s;
    if (e->get_string().get(s) != simdjson::SUCCESS) wrong(key, "a string");
    return std::string(s);
  }

  std::optional<ConfigObject> object(std::string_view key) const {
    auto e = find(key);
    if (!e) return std::nullopt;
    simdjson::dom::object o;
    if (e->get_object().get(o) != simdjson::SUCCESS) wrong(key, "an object");
    return ConfigObject(path_, o, prefix_ + std::string(key) + ".");
  }

  std::optional<std::vector<std::string>> strings(std::string_view key) const {
    auto e = find(key);
    if (!e) return std::nullopt;
    simdjson::dom::array a;
    if (e->get_array().get(a) != simdjson::SUCCESS) wrong(key, "an array of strings");
    std::vector<std::string> out;
    for (simdjson::dom::element item : a) {
      std::string_view s;
      if (item.get_string().get(s) != simdjson::SUCCESS) wrong(key, "an array of strings");
      out.emplace_back(s);
    }
    return out;
  }

 private:
  [[noreturn]] void wrong(std::string_view key, const std::string& expected) const {
    invalid(path_, "\"" + prefix_ + std::string(key) + "\" must be " + expected);
  }

  const fs::path& path_;
  simdjson::dom::object object_;
  std::string prefix_;
};

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw NotFoundError(path.string() + ": config file not found");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot open config file", errno, 0);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) throw IoError(path.string() + ": cannot read config file", errno, 0);
  return bytes.str();
}

// Compact JSON for the few value types a config holds.
class ConfigWriter {
 public:
  void key(std::string_view k) {
    comma();
    quoted(k);
    out_ += ':';
    after_key_ = true;
  }
  void string(std::string_view s) {
    comma();
    quoted(s);
  }
  void raw(std::string_view text) {
    comma();
    out_ += text;
  }
  void number(std::uint64_t v) { raw(std::to_string(v)); }
  void number(std::int64_t v) { raw(std::to_string(v)); }
  void number(double v) {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    raw(ec == std::errc() && std::isfinite(v) ? std::string_view(buf, end - buf) : "0");
  }
  void boolean(bool b) { raw(b ? "true" : "false"); }
  void open(char c) {
    comma();
    out_ += c;
    first_ = true;
  }
  void close(char c) {
    out_ += c;
    first_ = false;
  }
  std::string take() { return std::move(out_); }

 private:
  void quoted(std::string_view s) {
    out_ += '"';
    for (const char c : s) {
      if (c == '"' || c == '\\') {
        out_ += '\\';
        out_ += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char esc[8];
        std::snprintf(esc, sizeof(esc), "\\u%04x", static_cast<unsigned>(c));
        out_ += esc;
      } else {
        out_ += c;
      }
    }
    out_ += '"';
  }
  void comma() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_ && !out_.empty()) out_ += ',';
    first_ = false;
  }
  std::string out_;
  bool first_ = true;
  bool after_key_ = false;
};

}  // namespace

fs::path default_config_path() {
  if (const char* xdg = env("XDG_CONFIG_HOME"); xdg != nullptr && fs::path(xdg).is_absolute()) {
    return fs::path(xdg) / "warpload" / "config.json";
  }
  if (const char* home = env("HOME"))
    return fs::path(home) / ".config" / "warpload" / "config.json";
  throw NotFoundError("no default config location: neither XDG_CONFIG_HOME nor HOME is set");
}

std::optional<fs::path> find_config_file(const fs::path& explicit_path) {
  std::error_code ec;
  if (!explicit_path.empty()) {
    if (!fs::exists(explicit_path, ec)) {
      throw NotFoundError(explicit_path.string() + ": config file not found");
    }
    return explicit_path;
  }
  if (const char* from_env = env("WARPLOAD_CONFIG")) {
    if (!fs::exists(from_env, ec)) {
      throw NotFoundError(std::string(from_env) +
                          ": config file not found (named by WARPLOAD_CONFIG)");
    }
    return fs::path(from_env);
  }
  if (env("XDG_CONFIG_HOME") == nullptr && env("HOME") == nullptr) return std::nullopt;
  fs::path fallback = default_config_path();
  if (fs::is_regular_file(fallback, ec)) return fallback;
  return std::nullopt;
}

fs::path config_write_path(const fs::path& explicit_path) {
  if (!explicit_path.empty()) return explicit_path;
  if (const char* from_env = env("WARPLOAD_CONFIG")) return fs::path(from_env);
  return default_config_path();
}

TunedSettings read_config(const fs::path& path) {
  const std::string text = read_file(path);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (const auto error = parser.parse(text).get(root); error != simdjson::SUCCESS) {
    invalid(path, std::string("not valid JSON: ") + simdjson::error_message(error));
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) invalid(path, "not a JSON object");
  const ConfigObject c(path, object, "");

  if (auto version = c.integer("version", 0, std::numeric_limits<int>::max());
      version && *version > kConfigVersion) {
    invalid(path, "version " + std::to_string(*version) + " is newer than this warpload reads (" +
                      std::to_string(kConfigVersion) + ")");
  }
  constexpr std::uint64_t kMaxUnsigned = std::numeric_limits<unsigned>::max();
  constexpr std::int64_t kMaxInt = std::numeric_limits<int>::max();
  TunedSettings s;
  s.backend = c.string("backend").value_or("");
  s.storage.direct = c.boolean("direct").value_or(false);
  s.storage.threads = static_cast<unsigned>(c.count("threads", kMaxUnsigned).value_or(0));
  s.storage.block_size =
      c.count("block_size", std::numeric_limits<std::uint64_t>::max()).value_or(0);
  s.storage.queue_depth = static_cast<unsigned>(c.count("queue_depth", kMaxUnsigned).value_or(0));
  if (auto u = c.object("usrbio")) {
    UsrbioOptions& o = s.storage.usrbio;
    o.rings = static_cast<unsigned>(u->count("rings", kMaxUnsigned).value_or(0));
    o.entries = static_cast<int>(u->integer("entries", 0, kMaxInt).value_or(0));
    o.io_depth = static_cast<int>(u->integer("io_depth", -kMaxInt, kMaxInt).value_or(0));
    o.staging_bytes =
        u->count("staging_bytes", std::numeric_limits<std::uint64_t>::max()).value_or(0);
    o.iov_block_size =
        u->count("iov_block_size", std::numeric_limits<std::uint64_t>::max()).value_or(0);
    if (auto target = u->string("target"); target && !parse_usrbio_target(*target, &o.target)) {
      invalid(path,
              "usrbio.target must be \"auto\", \"iov\" or \"staging\" (got \"" + *target + "\")");
    }
  }
  if (auto h = c.object("http")) {
    HttpOptions& o = s.storage.http;
    o.connections = static_cast<unsigned>(h->count("connections", kMaxUnsigned).value_or(0));
    o.request_size =
        h->count("request_size", std::numeric_limits<std::uint64_t>::max()).value_or(0);
  }
  if (auto t = c.object("tuned_on")) {
    TunedOn on;
    on.paths = t->strings("paths").value_or(std::vector<std::string>{});
    on.bytes = t->count("bytes", std::numeric_limits<std::uint64_t>::max()).value_or(0);
    on.gbps = t->number("gbps").value_or(0);
    on.date = t->string("date").value_or("");
    s.tuned_on = std::move(on);
  }
  return s;
}

std::string config_to_json(const TunedSettings& s) {
  ConfigWriter w;
  w.open('{');
  w.key("version");
  w.number(static_cast<std::int64_t>(kConfigVersion));
  if (!s.backend.empty()) {
    w.key("backend");
    w.string(s.backend);
  }
  w.key("direct");
  w.boolean(s.storage.direct);
  w.key("threads");
  w.number(static_cast<std::uint64_t>(s.storage.threads));
  w.key("block_size");
  w.number(s.storage.block_size);
  w.key("queue_depth");
  w.number(static_cast<std::uint64_t>(s.storage.queue_depth));
  const UsrbioOptions& u = s.storage.usrbio;
  w.key("usrbio");
  w.open('{');
  w.key("rings");
  w.number(static_cast<std::uint64_t>(u.rings));
  w.key("entries");
  w.number(static_cast<std::int64_t>(u.entries));
  w.key("io_depth");
  w.number(static_cast<std::int64_t>(u.io_depth));
  w.key("staging_bytes");
  w.number(u.staging_bytes);
  w.key("iov_block_size");
  w.number(u.iov_block_size);
  w.key("target");
  w.string(std::string(usrbio_target_name(u.target)));
  w.close('}');
  w.key("http");
  w.open('{');
  w.key("connections");
  w.number(static_cast<std::uint64_t>(s.storage.http.connections));
  w.key("request_size");
  w.number(s.storage.http.request_size);
  w.close('}');
  if (s.tuned_on) {
    w.key("tuned_on");
    w.open('{');
    w.key("paths");
    w.open('[');
    for (const std::string& p : s.tuned_on->paths) w.string(p);
    w.close(']');
    w.key("bytes");
    w.number(s.tuned_on->bytes);
    w.key("gbps");
    w.number(s.tuned_on->gbps);
    w.key("date");
    w.string(s.tuned_on->date);
    w.close('}');
  }
  w.close('}');
  std::string out = w.take();
  out += '\n';
  return out;
}

void write_config(const fs::path& path, const TunedSettings& settings) {
  const std::string text = config_to_json(settings);
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) {
    throw IoError(
        path.string() + ": cannot create directory " + parent.string() + ": " + ec.message(),
        ec.value(), 0);
  }
  // A unique temporary name in the same directory, so the rename is atomic.
  std::string name = path.filename().string();
  name.insert(0, 1, '.');
  name.append(".XXXXXX");
  std::string tmp = (parent / name).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    const int err = errno;
    throw IoError(path.string() + ": cannot create a temporary file: " + std::strerror(err), err,
                  0);
  }
  auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw IoError(path.string() + ": " + what + ": " + std::strerror(err), err, 0);
  };
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) fail("cannot write");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw IoError(path.string() + ": cannot write: " + std::strerror(err), err, 0);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw IoError(path.string() + ": cannot replace: " + std::strerror(err), err, 0);
  }
}

ResolvedSettings apply_config(std::string_view backend, const StorageOptions& explicit_options,
                              const TunedSettings* config) {
  ResolvedSettings r;
  r.backend = std::string(backend.empty() ? default_backend_name() : backend);
  r.storage = explicit_options;
  if (config == nullptr) return r;
  // The http settings are for URLs whatever backend the config names for local files.
  if (r.storage.http.connections == 0) {
    r.storage.http.connections = config->storage.http.connections;
  }
  if (r.storage.http.request_size == 0) {
    r.storage.http.request_size = config->storage.http.request_size;
  }
  const std::string config_backend =
      config->backend.empty() ? std::string(default_backend_name()) : config->backend;
  if (!backend.empty() && backend != config_backend) return r;  // config is for another backend

  r.backend = config_backend;
  r.from_config = true;
  const StorageOptions& c = config->storage;
  StorageOptions& s = r.storage;
  if (backend.empty() && !s.direct) s.direct = c.direct;
  if (s.threads == 0) s.threads = c.threads;
  if (s.block_size == 0) s.block_size = c.block_size;
  if (s.queue_depth == 0) s.queue_depth = c.queue_depth;
  UsrbioOptions& u = s.usrbio;
  if (u.rings == 0) u.rings = c.usrbio.rings;
  if (u.entries == 0) u.entries = c.usrbio.entries;
  if (u.io_depth == 0) u.io_depth = c.usrbio.io_depth;
  if (u.staging_bytes == 0) u.staging_bytes = c.usrbio.staging_bytes;
  if (u.iov_block_size == 0) u.iov_block_size = c.usrbio.iov_block_size;
  if (u.target == UsrbioTarget::kAuto) u.target = c.usrbio.target;
  return r;
}

LoadSettings resolve_settings(std::string_view backend, const StorageOptions& explicit_options,
                              const std::filesystem::path& explicit_path, bool use_config) {
  std::optional<TunedSettings> config;
  LoadSettings out;
  if (use_config) {
    if (auto found = find_config_file(explicit_path)) {
      config = read_config(*found);
      out.config = *found;
    }
  }
  out.settings = apply_config(backend, explicit_options, config ? &*config : nullptr);
  if (!out.settings.from_config) out.config.clear();
  return out;
}

}  // namespace warpload
