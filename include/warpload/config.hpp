// The settings file: storage settings measured by `warpload tune`, read by every Loader.
//
// Format (JSON; unknown keys are ignored, every key is optional):
//
//   {"version": 1,
//    "backend": "uring",            // a make_storage() name
//    "direct": true,                // O_DIRECT (posix, uring)
//    "threads": 2, "block_size": 1048576, "queue_depth": 32,   // 0 = backend default
//    "usrbio": {"rings": 2, "entries": 64, "io_depth": 0,      // "3fs" backend only
//               "staging_bytes": 0, "iov_block_size": 0,
//               "target": "auto"},                         // "auto", "iov" or "staging"
//    "http": {"connections": 16, "request_size": 8388608},  // URLs ("http" backend), any
//                                                             // backend named above
//    "tuned_on": {"paths": ["/models/llama"], "bytes": 2147496640, "gbps": 1.8,
//                 "date": "2026-11-26T22:40:00Z"}}
//
// Units: block_size, staging_bytes, iov_block_size and tuned_on.bytes are bytes; gbps is
// 10^9 bytes per second. A key of the wrong type (or a negative count) is
// InvalidFileError(FormatRule::kInvalidConfig) naming the file.
//
// Where the file is found (find_config_file), first match wins:
//   1. an explicit path (LoadOptions::config, `warpload load --config FILE`);
//   2. the environment variable WARPLOAD_CONFIG;
//   3. $XDG_CONFIG_HOME/warpload/config.json, else $HOME/.config/warpload/config.json.
// An explicit or WARPLOAD_CONFIG path that does not exist is NotFoundError; a missing default
// file means "no config".
//
// How a Loader applies it (apply_config, at load()): settings the caller set explicitly win,
// then the config, then the backends' built-in defaults. LoadOptions::backend "" means "the
// config's backend, else auto". Fields left 0 (threads, block_size, queue_depth, the usrbio
// counts) take the config's values when the config's backend is the one being used (or
// backend is ""); the config's `direct` applies only when backend is "".
//
// Thread safety: these are free functions over values; they read the environment
// (getenv) and the file system, so do not call them while another thread changes either.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "warpload/storage.hpp"

namespace warpload {

inline constexpr int kConfigVersion = 1;

// What a configuration was measured on (informational; not used when loading).
struct TunedOn {
  std::vector<std::string> paths;  // checkpoint paths as given to `tune`
  std::uint64_t bytes = 0;         // tensor bytes loaded per run
  double gbps = 0;                 // the best throughput, 10^9 bytes per second
  std::string date;                // UTC, ISO 8601
};

// The contents of a settings file. Plain value type.
struct TunedSettings {
  std::string backend;     // empty = the file names none
  StorageOptions storage;  // direct, threads, block_size, queue_depth, usrbio (0 = default)
  std::optional<TunedOn> tuned_on;
};

// The settings a load runs with once the config is applied.
struct ResolvedSettings {
  std::string backend;       // never empty
  StorageOptions storage;    // what make_storage() gets
  bool from_config = false;  // the config supplied the backend or some setting
};

// The default location, whether or not it exists: $XDG_CONFIG_HOME/warpload/config.json
// (when XDG_CONFIG_HOME is set and absolute), else $HOME/.config/warpload/config.json.
// Throws NotFoundError when neither variable is set.
[[nodiscard]] std::filesystem::path default_config_path();

// The config file a load should use: `explicit_path` if not empty, else $WARPLOAD_CONFIG if
// set and not empty, else the default location if that file exists, else nullopt.
// Throws NotFoundError when an explicit or WARPLOAD_CONFIG path does not exist.
[[nodiscard]] std::optional<std::filesystem::path> find_config_file(
    const std::filesystem::path& explicit_path = {});

// Where `tune` writes: `explicit_path` if not empty, else $WARPLOAD_CONFIG if set, else
// default_config_path(). The file need not exist.
[[nodiscard]] std::filesystem::path config_write_path(
    const std::filesystem::path& explicit_path = {});

// Parses a settings file. Throws NotFoundError, IoError, or InvalidFileError
// (FormatRule::kInvalidConfig) naming `path` for malformed JSON or a key of the wrong type.
[[nodiscard]] TunedSettings read_config(const std::filesystem::path& path);

// Serializes settings as the JSON above (with "version").
[[nodiscard]] std::string config_to_json(const TunedSettings& settings);

// Writes settings to `path`: creates missing parent directories, writes a temporary file in
// the same directory and renames it over `path`, so readers see the old or the new file,
// never a partial one. Throws IoError naming the file.
void write_config(const std::filesystem::path& path, const TunedSettings& settings);

// Combines a caller's explicit settings with a config (see the top of this file).
// `backend` "" means "the config's, else auto".
[[nodiscard]] ResolvedSettings apply_config(std::string_view backend,
                                            const StorageOptions& explicit_options,
                                            const TunedSettings* config);

// The one settings resolution every load runs (Loader, DistributedLoader, ChunkedReader, the
// Python bindings): finds the config (`explicit_path`, else $WARPLOAD_CONFIG, else the default
// location, unless `use_config` is false), reads it and applies it with apply_config().
// `config` is the file whose settings were applied, empty when none was. Throws what
// find_config_file() and read_config() throw.
struct LoadSettings {
  ResolvedSettings settings;
  std::filesystem::path config;
};
[[nodiscard]] LoadSettings resolve_settings(std::string_view backend,
                                            const StorageOptions& explicit_options,
                                            const std::filesystem::path& explicit_path,
                                            bool use_config);

}  // namespace warpload
