// The CLI's subcommands. main.cpp parses the command line into these option structs (all
// size suffixes already resolved to bytes) and calls run_*; each prints its own output and
// throws on failure (warpload::Error, UsageError or any std::exception), which main maps to
// one "warpload: <message>" line and an exit status.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "warpload/loader.hpp"

namespace warpload::cli {

// The backend a load ran with and what it did about O_DIRECT: what "auto" chose, e.g.
// "auto: 3 of 4 files O_DIRECT", or, when `direct` was asked for, whether every file got it
// (a file system without O_DIRECT, such as tmpfs, is read buffered instead).
std::string describe_backend(const LoadStats& stats, bool direct);

// The flag Ctrl-C sets for a command that stops cleanly on it (LoadOptions::cancel). Asking
// for it marks the running command as one that does: the first Ctrl-C then sets the flag and
// lets the command unwind and exit normally (exit handlers release staging pools: 3FS iovs and
// their /dev/shm segments), a second one ends the process at once. Without it, Ctrl-C exits
// at once.
const std::atomic<bool>* interrupt_flag();

// A command line that parsed but makes no sense (unknown backend name, bad combination).
// Exits with status 2, like CLI11's own parse errors.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct InspectOptions {
  std::vector<std::filesystem::path> paths;
  bool json = false;
};
void run_inspect(const InspectOptions& options);

struct LoadCommandOptions {
  std::vector<std::filesystem::path> paths;
  std::string backend;           // "" = the config's backend, else auto
  std::filesystem::path config;  // --config FILE; empty = WARPLOAD_CONFIG or default location
  std::string device = "cpu";    // "cpu" or "cuda:N" (LoadOptions::device)
  bool direct = false;
  unsigned threads = 0;             // 0 = backend default
  std::uint64_t block_size = 0;     // 0 = backend default
  unsigned queue_depth = 0;         // 0 = backend default
  std::uint64_t staging_bytes = 0;  // device loads' pinned ring; 0 = LoadOptions' default
  bool hash = false;
  bool json = false;
  bool verify = false;             // LoadOptions::verify: re-read every tensor and compare
  std::filesystem::path manifest;  // --manifest FILE: check every tensor's XXH3-64 against it
  // --memory-limit: read through a ChunkedReader so loaded bytes stay within this; 0 = whole
  // checkpoint at once (Loader).
  std::uint64_t memory_limit = 0;
};
void run_load(const LoadCommandOptions& options);

// `warpload hash`: a manifest of per-tensor XXH3-64 digests on stdout (manifest.hpp).
struct HashOptions {
  std::vector<std::filesystem::path> paths;
  std::string backend;  // "" = the config's backend, else auto
};
void run_hash(const HashOptions& options);

struct BenchOptions {
  std::vector<std::filesystem::path> paths;
  unsigned runs = 3;
  bool json = false;
  std::vector<std::string> backends;  // empty = every available backend
  // "cpu", or "cuda:N": every backend staged into the device, plus "gds", against the measured
  // pinned host-to-device copy rate as well as the cold and warm limits.
  std::string device = "cpu";
};
void run_bench(const BenchOptions& options);

struct TuneOptions {
  std::vector<std::filesystem::path> paths;
  std::string backend;           // "" = try posix, uring, uring --direct (and 3fs if available)
  std::filesystem::path config;  // where to write; empty = WARPLOAD_CONFIG or default location
  unsigned runs = 1;             // runs per candidate; the best counts
  bool quick = false;            // fewer values per parameter
  std::string device = "cpu";    // "cuda:N": candidates timed as device loads (staged ring)
};
void run_tune(const TuneOptions& options);

struct GenOptions {
  std::filesystem::path dir;
  std::uint64_t size = std::uint64_t{2} << 30;
  unsigned shards = 0;  // 0 = one per 5 GB, as Hugging Face's default max_shard_size
  std::uint64_t seed = 0;
  bool dry_run = false;  // print the layout, write nothing
};
void run_gen(const GenOptions& options);

}  // namespace warpload::cli
