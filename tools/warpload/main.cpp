// warpload: inspect, load, benchmark, tune and generate safetensors checkpoints.
//
// Parses the command line with CLI11 and runs one subcommand. Every failure ends as one line
// "warpload: <message>" on stderr and a distinct exit status (see kExitStatusHelp).

#include <fmt/core.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "backend_names.hpp"
#include "commands.hpp"
#include "units.hpp"
#include "warpload/error.hpp"
#include "warpload/storage.hpp"
#include "warpload/version.hpp"

namespace {

namespace cli = warpload::cli;
using warpload::BackendInfo;
using warpload::default_backend_name;

enum ExitStatus : int {
  kGeneric = 1,
  kUsage = 2,
  kInvalidFile = 3,
  kNotFound = 4,
  kIo = 5,
  kUnsupported = 6,
  kOutOfMemory = 7,
  kCancelled = 130,
};

constexpr const char* kExitStatusHelp =
    "Exit status: 0 success, 1 error, 2 usage, 3 invalid file, 4 not found, 5 I/O error,\n"
    "6 unsupported, 7 out of memory, 130 interrupted.";

int status_for(warpload::ErrorKind kind) {
  switch (kind) {
    case warpload::ErrorKind::kInvalidFile:
      return kInvalidFile;
    case warpload::ErrorKind::kNotFound:
      return kNotFound;
    case warpload::ErrorKind::kIo:
      return kIo;
    case warpload::ErrorKind::kUnsupported:
      return kUnsupported;
    case warpload::ErrorKind::kOutOfMemory:
      return kOutOfMemory;
    case warpload::ErrorKind::kCancelled:
      return kCancelled;
  }
  return kGeneric;
}

// Prints the one error line (newlines inside the message folded) and returns `status`.
int fail(int status, std::string_view message) {
  std::string line(message);
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::fflush(stdout);
  fmt::print(stderr, "warpload: {}\n", line);
  return status;
}

// Ctrl-C: end a progress bar's line and say why; then either let a command that honours
// interrupt_flag() unwind (the first time), or exit 130 at once. Only async-signal-safe calls
// (the flag is lock-free).
bool g_stderr_is_tty = false;
std::atomic<bool> g_interrupt{false};
volatile std::sig_atomic_t g_cancellable = 0;
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_interrupt(int /*signal*/) {
  static constexpr char kTty[] = "\nwarpload: interrupted\n";
  static constexpr char kPlain[] = "warpload: interrupted\n";
  if (g_stderr_is_tty) {
    (void)!::write(STDERR_FILENO, kTty, sizeof(kTty) - 1);
  } else {
    (void)!::write(STDERR_FILENO, kPlain, sizeof(kPlain) - 1);
  }
  if (g_cancellable != 0 && !g_interrupt.exchange(true)) return;
  ::_exit(kCancelled);
}

// A size option: "4MiB", "1M", "512KiB", "2GiB" or plain bytes (see units.hpp).
// The PATH... positional every reading subcommand takes.
void add_paths(CLI::App* command, std::vector<std::string>& paths) {
  command
      ->add_option("PATH", paths,
                   "safetensors file, directory of shards, model.safetensors.index.json, a "
                   "Hugging Face model id org/name[@revision] in the local hub cache, or a URL: "
                   "s3://bucket/key (a file, an index.json or a prefix), http(s)://... "
                   "(docs/object-storage.md)")
      ->required();
}

CLI::Validator size_transform() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<std::uint64_t> bytes = cli::parse_size(text);
        if (!bytes) {
          return "'" + text + "' is not a size (e.g. 4096, 512KiB, 4MiB, 2GiB)";
        }
        if (*bytes == 0) {
          return "must be greater than 0";
        }
        text = std::to_string(*bytes);
        return {};
      },
      "SIZE");
}

std::vector<std::filesystem::path> to_paths(const std::vector<std::string>& strings) {
  return {strings.begin(), strings.end()};
}

int run(int argc, char** argv) {
  CLI::App app("warpload: load safetensors checkpoints fast", "warpload");
  app.set_version_flag("--version", fmt::format("warpload {}", warpload::kVersionString));
  app.require_subcommand(1);
  app.footer(kExitStatusHelp);

  std::vector<std::string> inspect_paths;
  cli::InspectOptions inspect;
  CLI::App* inspect_cmd = app.add_subcommand(
      "inspect", "List tensors (name, dtype, shape, bytes) and totals without reading data");
  add_paths(inspect_cmd, inspect_paths);
  inspect_cmd->add_flag("--json", inspect.json, "print one JSON object");

  std::vector<std::string> load_paths;
  cli::LoadCommandOptions load;
  CLI::App* load_cmd = app.add_subcommand(
      "load", "Load every tensor into host or device memory and report the throughput");
  add_paths(load_cmd, load_paths);
  load_cmd->add_option(
      "--backend", load.backend,
      fmt::format("storage backend: {}; with --device cuda:N also {} (those this machine can "
                  "run; default: the config's, else {})",
                  cli::backend_list([](const BackendInfo& b) { return b.host_destinations; }),
                  cli::backend_list([](const BackendInfo& b) {
                    return b.device_destinations && !b.host_destinations;
                  }),
                  default_backend_name()));
  load_cmd->add_flag(
      "--direct", load.direct,
      fmt::format("open files with O_DIRECT ({})",
                  cli::backend_list([](const BackendInfo& b) { return b.takes_direct; })));
  load_cmd->add_option("--threads", load.threads, "worker threads (default: backend's)")
      ->check(CLI::Range(1U, 1024U));
  load_cmd
      ->add_option("--block-size", load.block_size,
                   "bytes per read, e.g. 4MiB (default: backend's)")
      ->transform(size_transform());
  load_cmd->add_option("--queue-depth", load.queue_depth, "uring reads in flight per thread")
      ->check(CLI::Range(1U, 65536U));
  load_cmd->add_option("--config", load.config,
                       "settings file from `warpload tune` (default: $WARPLOAD_CONFIG, else "
                       "~/.config/warpload/config.json if it exists)");
  load_cmd->add_option("--device", load.device,
                       "where tensors go: cpu or cuda:N (GPUDirect Storage with --backend gds "
                       "or auto where it works, else staged through pinned memory; default: cpu)");
  load_cmd
      ->add_option("--staging", load.staging_bytes,
                   "pinned host memory for a device load's staging ring, e.g. 1GiB (default: "
                   "256MiB)")
      ->transform(size_transform());
  load_cmd->add_flag("--hash", load.hash,
                     "print XXH3-64 of every tensor (after the timing; device tensors are "
                     "copied back to host first)");
  load_cmd->add_flag("--json", load.json, "print one JSON object");
  load_cmd->add_flag("--verify", load.verify,
                     "after the load, re-read every tensor from its file with plain pread() and "
                     "fail on any difference (exit 5)");
  load_cmd->add_option("--manifest", load.manifest,
                       "check every tensor's XXH3-64 against a manifest from `warpload hash` "
                       "(a difference: exit 3)");
  load_cmd
      ->add_option("--memory-limit", load.memory_limit,
                   "read in chunks so that loaded tensor bytes never exceed this, e.g. 2GiB "
                   "(the next chunk is read while the current one is hashed or verified); for "
                   "checkpoints larger than memory")
      ->transform(size_transform());

  std::vector<std::string> hash_paths;
  cli::HashOptions hash;
  CLI::App* hash_cmd = app.add_subcommand(
      "hash", "Print a manifest of per-tensor XXH3-64 digests (for load --manifest)");
  add_paths(hash_cmd, hash_paths);
  hash_cmd->add_option(
      "--backend", hash.backend,
      fmt::format("storage backend: {} (default: the config's, else {}); the bytes are verified "
                  "with a second, plain read either way",
                  cli::backend_list([](const BackendInfo& b) { return b.host_destinations; }),
                  default_backend_name()));

  std::vector<std::string> bench_paths;
  cli::BenchOptions bench;
  CLI::App* bench_cmd = app.add_subcommand(
      "bench", "Every backend cold and warm against this machine's cold and warm limits");
  add_paths(bench_cmd, bench_paths);
  bench_cmd->add_option("--runs", bench.runs, "runs per figure; the best is reported")
      ->capture_default_str()
      ->check(CLI::Range(1U, 1000U));
  bench_cmd->add_flag("--json", bench.json, "print one JSON object");
  bench_cmd
      ->add_option(
          "--backends", bench.backends,
          fmt::format("comma-separated backends to measure, of {} (default: all "
                      "available)",
                      cli::backend_list([](const BackendInfo& b) { return b.benchmarked; })))
      ->delimiter(',');
  bench_cmd->add_option("--device", bench.device,
                        "cpu or cuda:N: load into the device (every backend staged, plus gds) and "
                        "add the measured pinned host-to-device copy rate as a limit");

  std::vector<std::string> tune_paths;
  cli::TuneOptions tune;
  CLI::App* tune_cmd = app.add_subcommand(
      "tune", "Measure backend settings on these files and save the fastest as the config");
  add_paths(tune_cmd, tune_paths);
  tune_cmd->add_option(
      "--backend", tune.backend,
      fmt::format("tune only this backend (default: {}, with and without --direct where it "
                  "applies, those this machine can run)",
                  cli::backend_list([](const BackendInfo& b) { return b.tuned; })));
  tune_cmd->add_option("--config", tune.config,
                       "file to write (default: $WARPLOAD_CONFIG, else "
                       "~/.config/warpload/config.json)");
  tune_cmd->add_option("--runs", tune.runs, "runs per candidate; the best counts")
      ->capture_default_str()
      ->check(CLI::Range(1U, 100U));
  tune_cmd->add_flag("--quick", tune.quick, "fewer values per parameter");
  tune_cmd->add_option("--device", tune.device,
                       "cpu or cuda:N: time every candidate as a load into that device (for 3fs "
                       "this compares the registered iov ring, target iov, with pinned slots "
                       "filled through staging iovs, target staging)");

  std::string gen_dir;
  cli::GenOptions gen;
  CLI::App* gen_cmd =
      app.add_subcommand("gen", "Write a deterministic demo checkpoint (Llama-shaped, sharded)");
  gen_cmd->add_option("DIR", gen_dir, "output directory (created if missing)")->required();
  gen_cmd->add_option("--size", gen.size, "total tensor bytes, e.g. 2GiB (default: 2GiB)")
      ->transform(size_transform());
  gen_cmd->add_option("--shards", gen.shards, "number of shards (default: one per 5 GB)")
      ->check(CLI::Range(1U, 99999U));
  gen_cmd->add_option("--seed", gen.seed, "seed of the tensor bytes")->capture_default_str();
  gen_cmd->add_flag("--dry-run", gen.dry_run, "print the layout, write nothing");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      return app.exit(e);  // --help, --version
    }
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-') {
      return fail(
          kUsage,
          fmt::format("unknown command '{}' (commands: inspect, load, hash, bench, tune, gen)",
                      argv[1]));
    }
    return fail(kUsage, fmt::format("{} (see warpload --help)", e.what()));
  }

  g_stderr_is_tty = ::isatty(STDERR_FILENO) == 1;
  (void)std::signal(SIGINT, on_interrupt);

  if (inspect_cmd->parsed()) {
    inspect.paths = to_paths(inspect_paths);
    cli::run_inspect(inspect);
  } else if (load_cmd->parsed()) {
    load.paths = to_paths(load_paths);
    cli::run_load(load);
  } else if (hash_cmd->parsed()) {
    hash.paths = to_paths(hash_paths);
    cli::run_hash(hash);
  } else if (bench_cmd->parsed()) {
    bench.paths = to_paths(bench_paths);
    cli::run_bench(bench);
  } else if (tune_cmd->parsed()) {
    tune.paths = to_paths(tune_paths);
    cli::run_tune(tune);
  } else if (gen_cmd->parsed()) {
    gen.dir = gen_dir;
    cli::run_gen(gen);
  }
  std::fflush(stdout);
  if (std::ferror(stdout) != 0) {
    return fail(kIo, "cannot write to standard output");
  }
  return 0;
}

}  // namespace

const std::atomic<bool>* warpload::cli::interrupt_flag() {
  g_cancellable = 1;
  return &g_interrupt;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const cli::UsageError& e) {
    return fail(kUsage, e.what());
  } catch (const warpload::Error& e) {
    // Interrupted: "interrupted" was said already.
    if (e.kind() == warpload::ErrorKind::kCancelled && g_interrupt.load()) return kCancelled;
    return fail(status_for(e.kind()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(kOutOfMemory, "out of memory");
  } catch (const std::filesystem::filesystem_error& e) {
    const bool missing = e.code() == std::errc::no_such_file_or_directory;
    return fail(missing ? kNotFound : kIo, e.what());
  } catch (const std::exception& e) {
    return fail(kGeneric, e.what());
  }
}
