// warpload tune PATH... [--backend NAME] [--config FILE] [--runs N] [--quick]
//
// Coarse to fine: first the backend (every one the registry marks `tuned` that can run here,
// with and without --direct where it applies; or only the named one) at its defaults, then one
// parameter at a time on the best so far, each sweep keeping the fastest value; the leaders are
// measured twice more and ranked by their median, to damp noise. Every run is cold when the page
// cache can be dropped (as bench does), warm otherwise. The best settings are written to the config
// file that `load` and the library read.
//
// URLs (docs/object-storage.md): the candidates are the backends that read URLs, measured from
// the server (no page cache to drop), and the sweep is their `http` settings (connections,
// request size); only the config's "http" section is replaced, its settings for local files
// are kept.

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "backend_names.hpp"
#include "commands.hpp"
#include "machine_limits.hpp"
#include "text_table.hpp"
#include "units.hpp"
#include "warpload/config.hpp"
#include "warpload/device.hpp"
#include "warpload/error.hpp"
#include "warpload/loader.hpp"
#include "warpload/object_storage.hpp"

namespace warpload::cli {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;
constexpr double kWarmEnough = 0.99;
// Single runs on a shared machine vary by 10-20%, enough to crown a lucky candidate. So the
// leaders are measured kConfirmSamples times in all and ranked by their median; a candidate
// that still beats them on one run is confirmed too (at most kMaxConfirmed in all).
constexpr std::size_t kConfirmTop = 3;
constexpr std::size_t kConfirmSamples = 3;
constexpr std::size_t kMaxConfirmed = 6;

struct Candidate {
  std::string backend;
  StorageOptions storage;
};

Candidate direct_candidate(std::string backend) {
  Candidate c{std::move(backend), {}};
  c.storage.direct = true;
  return c;
}

// Whether the candidate's backend reads only files on its own file system (a 3FS mount): one
// that cannot serve these files is skipped, not an error.
bool needs_mount(const Candidate& c) {
  const BackendInfo* info = find_backend(c.backend);
  return info != nullptr && info->needs_mount;
}

std::string size_text(std::uint64_t bytes) {
  if (bytes % kMiB == 0) return fmt::format("{}MiB", bytes / kMiB);
  if (bytes % 1024 == 0) return fmt::format("{}KiB", bytes / 1024);
  return std::to_string(bytes);
}

// "uring --direct block=4MiB threads=2 qd=64": the settings that differ from the defaults.
std::string label(const Candidate& c) {
  std::string out = c.backend;
  const StorageOptions& s = c.storage;
  if (s.direct) out += " --direct";
  if (s.block_size != 0) out += " block=" + size_text(s.block_size);
  if (s.threads != 0) out += fmt::format(" threads={}", s.threads);
  if (s.queue_depth != 0) out += fmt::format(" qd={}", s.queue_depth);
  const UsrbioOptions& u = s.usrbio;
  if (u.rings != 0) out += fmt::format(" rings={}", u.rings);
  if (u.entries != 0) out += fmt::format(" entries={}", u.entries);
  if (u.io_depth != 0) out += fmt::format(" io_depth={}", u.io_depth);
  if (u.staging_bytes != 0) out += " staging=" + size_text(u.staging_bytes);
  if (u.iov_block_size != 0) out += " iov_block=" + size_text(u.iov_block_size);
  if (s.http.connections != 0) out += fmt::format(" connections={}", s.http.connections);
  if (s.http.request_size != 0) out += " request=" + size_text(s.http.request_size);
  if (u.target != UsrbioTarget::kAuto)
    out += fmt::format(" target={}", usrbio_target_name(u.target));
  return out;
}

// One tunable setting: the values to try given the best settings so far, and how to set one.
struct Parameter {
  const char* name;
  std::function<std::vector<std::int64_t>(const StorageOptions&)> values;
  std::function<void(StorageOptions&, std::int64_t)> set;
};

std::function<std::vector<std::int64_t>(const StorageOptions&)> fixed(
    std::vector<std::int64_t> values) {
  return [values = std::move(values)](const StorageOptions&) { return values; };
}

// The settings `backend` reads (BackendInfo::uses_*), in the order they are swept.
std::vector<Parameter> parameters_for(const std::string& backend, bool quick) {
  const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  Parameter block{"block size",
                  fixed(quick ? std::vector<std::int64_t>{1 * kMiB, 8 * kMiB}
                              : std::vector<std::int64_t>{1 * kMiB, 4 * kMiB, 8 * kMiB, 16 * kMiB}),
                  [u](StorageOptions& s, std::int64_t v) { s.block_size = u(v); }};
  Parameter threads{
      "threads",
      fixed(quick ? std::vector<std::int64_t>{1, 2} : std::vector<std::int64_t>{1, 2, 4}),
      [](StorageOptions& s, std::int64_t v) { s.threads = static_cast<unsigned>(v); }};
  const BackendInfo* info = find_backend(backend);
  if (info == nullptr) return {};
  std::vector<Parameter> sweep;
  if (info->uses_http) {
    // Not threads: that setting is shared with the local backends the config may name.
    sweep.push_back(Parameter{
        "connections",
        fixed(quick ? std::vector<std::int64_t>{8, 16} : std::vector<std::int64_t>{4, 8, 16, 32}),
        [](StorageOptions& s, std::int64_t v) { s.http.connections = static_cast<unsigned>(v); }});
    sweep.push_back(Parameter{
        "request size",
        fixed(quick ? std::vector<std::int64_t>{8 * kMiB, 16 * kMiB}
                    : std::vector<std::int64_t>{4 * kMiB, 8 * kMiB, 16 * kMiB, 32 * kMiB}),
        [u](StorageOptions& s, std::int64_t v) { s.http.request_size = u(v); }});
    return sweep;
  }
  if (!info->uses_usrbio) {
    if (info->uses_block_size) sweep.push_back(block);
    if (info->uses_threads) sweep.push_back(threads);
  }
  if (info->uses_queue_depth) {
    Parameter depth{
        "queue depth",
        fixed(quick ? std::vector<std::int64_t>{8, 32} : std::vector<std::int64_t>{8, 32, 64}),
        [](StorageOptions& s, std::int64_t v) { s.queue_depth = static_cast<unsigned>(v); }};
    sweep.push_back(depth);
  }
  if (info->uses_usrbio) {
    Parameter rings{
        "rings",
        fixed(quick ? std::vector<std::int64_t>{1, 2} : std::vector<std::int64_t>{1, 2, 4}),
        [](StorageOptions& s, std::int64_t v) { s.usrbio.rings = static_cast<unsigned>(v); }};
    Parameter entries{
        "entries",
        fixed(quick ? std::vector<std::int64_t>{64} : std::vector<std::int64_t>{16, 64, 256}),
        [](StorageOptions& s, std::int64_t v) { s.usrbio.entries = static_cast<int>(v); }};
    Parameter io_depth{"io_depth", fixed({0, -8, 8}), [](StorageOptions& s, std::int64_t v) {
                         s.usrbio.io_depth = static_cast<int>(v);
                       }};
    Parameter staging{"staging bytes",
                      fixed(quick ? std::vector<std::int64_t>{0}
                                  : std::vector<std::int64_t>{0, 64 * kMiB, 256 * kMiB}),
                      [u](StorageOptions& s, std::int64_t v) { s.usrbio.staging_bytes = u(v); }};
    // Unblocked, or iov blocks of one chunk (the block size chosen so far).
    Parameter iov_block{"iov block size",
                        [](const StorageOptions& s) {
                          return std::vector<std::int64_t>{
                              0, static_cast<std::int64_t>(s.block_size ? s.block_size : 8 * kMiB)};
                        },
                        [u](StorageOptions& s, std::int64_t v) { s.usrbio.iov_block_size = u(v); }};
    // Where host bytes land: both are measured, whatever auto would pick here.
    Parameter target{
        "target",
        fixed({static_cast<std::int64_t>(UsrbioTarget::kIov),
               static_cast<std::int64_t>(UsrbioTarget::kStaging)}),
        [](StorageOptions& s, std::int64_t v) { s.usrbio.target = static_cast<UsrbioTarget>(v); }};
    sweep.push_back(target);
    if (info->uses_block_size) sweep.push_back(block);
    if (info->uses_threads) sweep.push_back(threads);
    sweep.insert(sweep.end(), {rings, entries, io_depth, staging, iov_block});
  }
  return sweep;  // empty (mmap): nothing to sweep
}

struct Result {
  Candidate candidate;
  std::vector<double> samples;  // GB/s, one per measurement (each the best of --runs loads)

  // The median (upper middle for an even count): what the ranking uses.
  [[nodiscard]] double gbps() const {
    std::vector<double> sorted = samples;
    std::sort(sorted.begin(), sorted.end());
    return sorted.empty() ? 0.0 : sorted[sorted.size() / 2];
  }
};

class Tuner {
 public:
  Tuner(const TuneOptions& options, std::vector<fs::path> files, bool urls)
      : options_(options), files_(std::move(files)), urls_(urls) {
    if (urls_) {
      note("URLs: every candidate is measured from the server (no page cache to drop)");
      return;
    }
    // Dropping first also writes back the pages of a checkpoint generated moments ago.
    drop_ = drop_page_cache(files_);
    cold_ = drop_ != CacheDrop::kFailed;
    if (!cold_) {
      note(
          "the page cache could not be dropped (e.g. tmpfs): buffered candidates are measured "
          "warm (files in the page cache); O_DIRECT ones read past it where the file system "
          "allows");
    }
  }

  [[nodiscard]] bool cold() const noexcept { return cold_; }
  [[nodiscard]] CacheDrop cache_drop() const noexcept { return drop_; }
  [[nodiscard]] const std::vector<std::string>& notes() const noexcept { return notes_; }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }

  // Best GB/s of --runs loads (remembered per label); nullopt when it cannot run here.
  std::optional<double> measure(const Candidate& c) {
    const std::string key = label(c);
    if (auto it = results_.find(key); it != results_.end()) return it->second.gbps();
    if (failed_.contains(key)) return std::nullopt;
    const std::optional<double> gbps = measure_runs(c, options_.runs);
    if (!gbps) {
      failed_.insert({key, true});
      return std::nullopt;
    }
    results_[key] = Result{c, {*gbps}};
    fmt::print(stderr, "tune: {:<52} {:.2f} GB/s\n", key, *gbps);
    return gbps;
  }

  // An untimed load, its figure discarded (and its failure too: measure() reports it).
  void warm_up(const Candidate& c) {
    try {
      (void)measure_runs(c, 1);
    } catch (const CancelledError&) {
      throw;  // Ctrl-C
    } catch (const Error&) {
    }
  }

  // Measures a candidate until it has kConfirmSamples figures.
  void confirm(const Candidate& c) {
    Result& r = results_[label(c)];
    while (r.samples.size() < kConfirmSamples) {
      const std::optional<double> gbps = measure_runs(c, options_.runs);
      if (!gbps) break;
      r.samples.push_back(*gbps);
      fmt::print(stderr, "tune: {:<52} {:.2f} GB/s (again)\n", label(c), *gbps);
    }
  }

  [[nodiscard]] std::vector<Result> ranked() const {
    std::vector<Result> out;
    for (const auto& [key, r] : results_) out.push_back(r);
    std::stable_sort(out.begin(), out.end(),
                     [](const Result& a, const Result& b) { return a.gbps() > b.gbps(); });
    return out;
  }

  void note(std::string text) {
    fmt::print(stderr, "tune: note: {}\n", text);
    notes_.push_back(std::move(text));
  }

 private:
  std::optional<double> measure_runs(const Candidate& c, unsigned runs) {
    std::optional<double> best;
    try {
      for (unsigned r = 0; r < runs; ++r) {
        prepare_cache(c.storage.direct);
        LoadOptions lo;
        lo.backend = c.backend;
        lo.storage = c.storage;
        lo.use_config = false;  // measure exactly these settings
        lo.device = options_.device;
        lo.cancel = interrupt_flag();
        Loader loader(std::move(lo));
        loader.add(options_.paths);
        const LoadStats stats = loader.load();
        loader.release();
        bytes_ = stats.bytes;
        if (c.storage.direct && stats.direct_files < stats.files) {
          note(fmt::format("{}: the file system refused O_DIRECT for {} of {} files; skipped",
                           label(c), stats.files - stats.direct_files, stats.files));
          return std::nullopt;
        }
        if (!best || stats.gbps() > *best) best = stats.gbps();
      }
    } catch (const CancelledError&) {
      throw;  // Ctrl-C: no candidate is skipped for it
    } catch (const UnsupportedError& e) {
      note(fmt::format("{}: {}", label(c), e.what()));
      return std::nullopt;
    } catch (const IoError& e) {
      // A backend that cannot serve these files (O_DIRECT refused with EINVAL, 3fs on a file
      // outside a 3FS mount) is skipped; any other read error is the user's problem.
      if (!(c.storage.direct && e.error_number() == EINVAL) && !needs_mount(c)) throw;
      note(fmt::format("{}: {}", label(c), e.what()));
      return std::nullopt;
    } catch (const Error& e) {
      if (!needs_mount(c)) throw;  // 3fs refuses files outside a 3FS mount in several ways
      note(fmt::format("{}: {}", label(c), e.what()));
      return std::nullopt;
    }
    return best;
  }

  void prepare_cache(bool direct) {
    if (direct || urls_) return;  // O_DIRECT bypasses the page cache either way
    if (cold_) {
      if (drop_page_cache(files_) == CacheDrop::kFailed) {
        throw IoError("the page cache could not be dropped between runs", 0, 0);
      }
    } else if (page_cache_resident_fraction(files_) < kWarmEnough) {
      read_into_page_cache(files_);
    }
  }

  const TuneOptions& options_;
  std::vector<fs::path> files_;
  bool urls_ = false;
  CacheDrop drop_ = CacheDrop::kFailed;
  bool cold_ = false;
  std::uint64_t bytes_ = 0;
  std::map<std::string, Result> results_;
  std::map<std::string, bool> failed_;
  std::vector<std::string> notes_;
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

}  // namespace

void run_tune(const TuneOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  // A device that cannot be used fails the command now, not every candidate.
  if (const Device device = Device::parse(options.device); device.is_cuda()) {
    static_cast<void>(cuda_memory_info(device));
  }
  // Coarse candidates: backends (and O_DIRECT where it applies) at their defaults.
  std::vector<Candidate> coarse;
  const auto add_coarse = [&](const BackendInfo& info) {
    coarse.push_back({info.name, {}});
    if (info.takes_direct) coarse.push_back(direct_candidate(info.name));
  };
  const bool urls = std::any_of(options.paths.begin(), options.paths.end(),
                                [](const fs::path& p) { return is_object_url(p.string()); });
  if (!options.backend.empty()) {
    const BackendInfo& info = check_backend_name(options.backend, "--backend", false);
    if (info.reads_urls != urls) {
      throw UsageError(fmt::format("--backend: '{}' reads {}", info.name,
                                   info.reads_urls ? "URLs only" : "local files only"));
    }
    add_coarse(info);
  } else {
    for (const BackendInfo& info : storage_backends()) {
      if (!usable_here(info, false) || info.reads_urls != urls) continue;
      if (info.tuned || urls) add_coarse(info);
    }
  }
  // Fail on a bad destination before spending minutes measuring.
  const fs::path config_path = config_write_path(options.config);

  std::vector<fs::path> files;
  std::uint64_t file_bytes = 0;
  {
    LoadOptions plan_options;
    plan_options.use_config = false;
    Loader plan(std::move(plan_options));
    plan.add(options.paths);
    for (const PlannedFile& file : plan.files()) {
      files.push_back(file.path);
      file_bytes += file.header.file_size;
    }
  }
  fmt::print(stderr, "tune: {} file{}, {}, {} run{} per candidate\n", files.size(),
             files.size() == 1 ? "" : "s", format_bytes(file_bytes), options.runs,
             options.runs == 1 ? "" : "s");

  Tuner tuner(options, files, urls);
  std::optional<Candidate> best;
  double best_gbps = 0;
  const auto consider = [&](const Candidate& c) {
    const std::optional<double> gbps = tuner.measure(c);
    if (gbps && (!best || *gbps > best_gbps)) {
      best = c;
      best_gbps = *gbps;
    }
  };
  // One untimed load first: the first load after the machine idled pays for memory the VM
  // handed back to its host (docs/performance.md), which would penalise whichever candidate
  // comes first.
  tuner.warm_up(coarse.front());
  for (const Candidate& c : coarse) consider(c);
  if (!best) {
    throw UnsupportedError("tune: no candidate could load these files (see the notes above)");
  }

  // Fine: one parameter at a time, around the best so far.
  for (const Parameter& p : parameters_for(best->backend, options.quick)) {
    const Candidate base = *best;
    for (const std::int64_t value : p.values(base.storage)) {
      Candidate c = base;
      p.set(c.storage, value);
      consider(c);
    }
  }

  // Noise: measure the top few once more and pick again.
  // Confirm the leaders, then whoever still tops the ranking on a single run.
  std::vector<Result> ranked = tuner.ranked();
  if (!options.quick && ranked.size() > 1) {
    std::size_t confirmed = 0;
    for (; confirmed < std::min(kConfirmTop, ranked.size()); ++confirmed) {
      tuner.confirm(ranked[confirmed].candidate);
    }
    ranked = tuner.ranked();
    while (ranked.front().samples.size() < kConfirmSamples && confirmed < kMaxConfirmed) {
      tuner.confirm(ranked.front().candidate);
      ++confirmed;
      ranked = tuner.ranked();
    }
  }
  const Result& winner = ranked.front();

  TunedSettings settings;
  settings.backend = winner.candidate.backend;
  settings.storage = winner.candidate.storage;
  if (urls) {
    // Only the "http" section: the settings for local files (and what they were measured on)
    // stay as the file has them.
    std::error_code ec;
    settings = fs::exists(config_path, ec) ? read_config(config_path) : TunedSettings{};
    settings.storage.http = winner.candidate.storage.http;
  }
  TunedOn on;
  for (const fs::path& p : options.paths) {
    std::error_code ec;
    const fs::path absolute = is_object_url(p.string()) ? p : fs::absolute(p, ec);
    on.paths.push_back(ec || is_object_url(p.string()) ? p.string()
                                                       : absolute.lexically_normal().string());
  }
  on.bytes = tuner.bytes();
  on.gbps = winner.gbps();
  on.date = utc_now();
  if (!urls || !settings.tuned_on) settings.tuned_on = std::move(on);
  write_config(config_path, settings);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  TextTable table({{"rank", TextTable::kRight},
                   {"settings"},
                   {"GB/s", TextTable::kRight},
                   {"% of best", TextTable::kRight},
                   {"runs", TextTable::kRight}});
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    table.add_row({std::to_string(i + 1), label(ranked[i].candidate),
                   fmt::format("{:.2f}", ranked[i].gbps()),
                   fmt::format("{:.0f}%", ranked[i].gbps() / winner.gbps() * 100),
                   std::to_string(ranked[i].samples.size())});
  }
  std::string out = table.render();
  out += '\n';
  out += fmt::format(
      "measured {}; best of {} load{} per run{}; {} candidates in {}\n",
      urls ? std::string("from the server")
      : tuner.cold()
          ? fmt::format("cold (page cache dropped with {} before each buffered run)",
                        cache_drop_name(tuner.cache_drop()))
          : std::string("warm for buffered candidates (page cache could not be dropped)"),
      options.runs, options.runs == 1 ? "" : "s",
      options.quick || ranked.size() <= 1
          ? ""
          : fmt::format("; GB/s of the leaders is the median of their {} runs", kConfirmSamples),
      ranked.size(), format_seconds(seconds));
  for (const std::string& note : tuner.notes()) out += fmt::format("note: {}\n", note);
  out += fmt::format("best: {} ({:.2f} GB/s)\n", label(winner.candidate), winner.gbps());
  out += fmt::format("wrote config: {}\n", config_path.string());
  fmt::print("{}", out);
}

}  // namespace warpload::cli
