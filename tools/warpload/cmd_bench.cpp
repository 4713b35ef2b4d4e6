// warpload bench PATH... [--runs 3] [--json] [--backends a,b,...] [--device cuda:N]
//
// With --device cuda:N every row loads into that device (host backends through the staged
// pipeline, plus a row for each device-memory backend: gds), and the pinned host-to-device copy
// rate, measured first in the same run, is a third limit.
//
// Cold phase first (the cold limit, then every row with the page cache dropped before each
// run), then the warm phase (files read into the cache once, the warm limit, every row):
// that order fills and empties the cache as few times as possible.

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "backend_names.hpp"
#include "commands.hpp"
#include "json_writer.hpp"
#include "machine_limits.hpp"
#include "text_table.hpp"
#include "units.hpp"
#include "warpload/device.hpp"
#include "warpload/error.hpp"
#include "warpload/loader.hpp"
#include "warpload/object_storage.hpp"

namespace warpload::cli {
namespace {

namespace fs = std::filesystem;

// Below this fraction of bytes cached, the warm phase reads the files in again.
constexpr double kWarmEnough = 0.99;
// The pinned host-to-device limit: 256 MiB per copy, best of 5 (after a warm-up copy).
constexpr std::uint64_t kH2dBytes = std::uint64_t{256} << 20;
constexpr unsigned kH2dRuns = 5;

struct Measurement {
  std::optional<double> gbps;  // best of the runs; empty when not measured
  std::string resolved;        // the backend the loader reported for the best run
};

struct BenchRow {
  std::string backend;
  bool direct = false;
  Measurement cold;
  Measurement warm;

  [[nodiscard]] std::string label() const { return direct ? backend + " --direct" : backend; }
};

struct BenchResult {
  std::vector<BenchRow> rows;
  std::optional<double> cold_limit;
  std::optional<double> warm_limit;
  std::string device = "cpu";
  std::optional<double> h2d_limit;  // --device cuda:N: pinned host-to-device copies
  std::size_t files = 0;
  std::uint64_t bytes = 0;       // tensor bytes, as the loader counts them
  std::uint64_t file_bytes = 0;  // whole files, as the limits read them
  unsigned runs = 0;
  CacheDrop cache_drop = CacheDrop::kFailed;
  std::vector<std::string> notes;

  // The warm figure of the baseline backend (the reference's way of reading), if measured.
  [[nodiscard]] std::optional<double> baseline_warm() const {
    for (const BenchRow& row : rows) {
      const BackendInfo* info = find_backend(row.backend);
      if (info != nullptr && info->baseline && !row.direct) {
        return row.warm.gbps;
      }
    }
    return std::nullopt;
  }
};

std::optional<double> ratio(const std::optional<double>& a, const std::optional<double>& b) {
  if (!a || !b || *b <= 0) {
    return std::nullopt;
  }
  return *a / *b;
}

void report(const std::string& line) { fmt::print(stderr, "bench: {}\n", line); }

std::string gbps_text(const std::optional<double>& gbps) {
  return gbps ? fmt::format("{:.2f} GB/s", *gbps) : std::string("n/a");
}

LoadStats load_once(const BenchRow& row, const std::vector<fs::path>& paths,
                    const std::string& device) {
  LoadOptions options;
  options.backend = row.backend;
  options.device = device;
  options.storage.direct = row.direct;
  options.use_config = false;  // bench measures the built-in defaults, never a tuned config
  options.cancel = interrupt_flag();
  Loader loader(std::move(options));
  loader.add(paths);
  LoadStats stats = loader.load();
  loader.release();
  return stats;
}

// Best of `runs` loads; `before_each` prepares the page cache and returns false to give up.
void measure_row(const BenchRow& row, Measurement& m, const std::vector<fs::path>& paths,
                 const std::string& device, unsigned runs, const std::function<bool()>& before_each,
                 std::vector<std::string>& notes) {
  try {
    for (unsigned r = 0; r < runs; ++r) {
      if (!before_each()) {
        notes.push_back(
            fmt::format("{}: page cache could not be dropped before a cold run", row.label()));
        m.gbps.reset();
        return;
      }
      const LoadStats stats = load_once(row, paths, device);
      const BackendInfo* info = find_backend(row.backend);
      if (info != nullptr && info->stages_when_unusable && !stats.gds_fallback.empty()) {
        // The load went through the staged pipeline: that is another row's figure.
        notes.push_back(fmt::format("{}: not used: {}", row.backend, stats.gds_fallback));
        m.gbps.reset();
        return;
      }
      if (!m.gbps || stats.gbps() > *m.gbps) {
        m.gbps = stats.gbps();
        m.resolved = describe_backend(stats, row.direct);
      }
    }
  } catch (const UnsupportedError& e) {
    notes.push_back(fmt::format("{}: {}", row.label(), e.what()));
    m.gbps.reset();
  } catch (const IoError& e) {
    // A file system without O_DIRECT refuses it with EINVAL: the row cannot run here.
    if (!row.direct || e.error_number() != EINVAL) {
      throw;
    }
    notes.push_back(fmt::format("{}: {}", row.label(), e.what()));
    m.gbps.reset();
  }
}

std::optional<double> best_limit(Throughput (*measure)(std::span<const fs::path>),
                                 const std::vector<fs::path>& files, unsigned runs) {
  std::optional<double> best;
  for (unsigned r = 0; r < runs; ++r) {
    const double gbps = measure(files).gbps();
    if (!best || gbps > *best) {
      best = gbps;
    }
  }
  return best;
}

BenchResult run_measurements(const BenchOptions& options) {
  Device device;
  try {
    device = Device::parse(options.device);
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--device: {}", e.what()));
  }
  for (const std::string& name : options.backends) {
    static_cast<void>(check_backend_name(name, "--backends", device.is_cuda()));
  }
  // URLs: the backends that read them, measured from the server only (no page cache to drop,
  // no local limits; the object store's own ceiling: benchmarks/object_store_bench.py).
  const bool urls = std::any_of(options.paths.begin(), options.paths.end(),
                                [](const fs::path& p) { return is_object_url(p.string()); });
  // Every benchmarked backend this load can name here, in the registry's order.
  std::vector<std::string> selected;
  for (const BackendInfo& info : storage_backends()) {
    if (urls != info.reads_urls || !usable_here(info, device.is_cuda())) continue;
    if (!urls && !info.benchmarked) continue;
    if (options.backends.empty() || std::find(options.backends.begin(), options.backends.end(),
                                              info.name) != options.backends.end()) {
      selected.push_back(info.name);
    }
  }

  BenchResult result;
  result.runs = options.runs;
  result.device = device.name();
  for (const std::string& name : selected) {
    result.rows.push_back({name, false, {}, {}});
    if (backend_takes_direct(name)) {
      result.rows.push_back({name, true, {}, {}});
    }
  }

  std::vector<fs::path> files;
  {
    Loader plan;
    plan.add(options.paths);
    for (const PlannedFile& file : plan.files()) {
      files.push_back(file.path);
      result.file_bytes += file.header.file_size;
    }
    result.files = files.size();
    result.bytes = plan.total_bytes();
  }
  report(fmt::format("{} files, {} ({} bytes), best of {} run{}", result.files,
                     format_bytes(result.file_bytes), result.file_bytes, options.runs,
                     options.runs == 1 ? "" : "s"));
  if (device.is_cuda()) {
    // Measured first, in this run: the ceiling of every row, whatever the storage does.
    result.h2d_limit = measure_pinned_copy_gbps(device, kH2dBytes, kH2dRuns);
    report(fmt::format("H2D limit    {} ({})", gbps_text(result.h2d_limit), result.device));
  }

  if (urls) {
    result.notes.emplace_back(
        "URLs: each row loads from the server, best of the runs; no cold phase or local limits "
        "(benchmarks/object_store_bench.py measures a plain parallel download for a ceiling)");
    report(result.notes.back());
    for (BenchRow& row : result.rows) {
      measure_row(
          row, row.warm, options.paths, result.device, options.runs, [] { return true; },
          result.notes);
      report(fmt::format("from server {:<10} {}", row.label(), gbps_text(row.warm.gbps)));
    }
    return result;
  }

  // ---- cold ----
  // Dropping first also writes back the pages of a checkpoint generated moments ago, which
  // O_DIRECT reads would otherwise have to flush inside the cold limit's timing.
  result.cache_drop = drop_page_cache(files);
  const bool can_drop = result.cache_drop != CacheDrop::kFailed;
  if (!can_drop) {
    result.notes.emplace_back("cold: page cache could not be dropped; cold rows use O_DIRECT only");
    report(result.notes.back());
  }
  try {
    result.cold_limit = best_limit(&measure_cold_limit, files, options.runs);
    report(fmt::format("cold limit   {}", gbps_text(result.cold_limit)));
  } catch (const UnsupportedError& e) {
    result.notes.push_back(fmt::format("cold limit: {}", e.what()));
    report(fmt::format("cold limit   n/a ({})", e.what()));
  }

  for (BenchRow& row : result.rows) {
    if (!row.direct && !can_drop) {
      continue;
    }
    measure_row(
        row, row.cold, options.paths, result.device, options.runs,
        [&] {
          // O_DIRECT rows do not need the drop, but auto decides by residency.
          return !can_drop || drop_page_cache(files) != CacheDrop::kFailed || row.direct;
        },
        result.notes);
    report(fmt::format("cold  {:<16} {}", row.label(), gbps_text(row.cold.gbps)));
  }

  // ---- warm ----
  auto make_warm = [&] {
    if (page_cache_resident_fraction(files) < kWarmEnough) {
      read_into_page_cache(files);
    }
    return true;
  };
  make_warm();
  result.warm_limit = best_limit(&measure_warm_limit, files, options.runs);
  report(fmt::format("warm limit   {}", gbps_text(result.warm_limit)));
  for (BenchRow& row : result.rows) {
    measure_row(row, row.warm, options.paths, result.device, options.runs, make_warm, result.notes);
    report(fmt::format("warm  {:<16} {}", row.label(), gbps_text(row.warm.gbps)));
  }
  return result;
}

std::string optional_text(const std::optional<double>& value, const char* format) {
  return value ? fmt::format(fmt::runtime(format), *value) : std::string("—");
}

std::optional<double> percent(const std::optional<double>& fraction) {
  return fraction ? std::optional(*fraction * 100) : std::nullopt;
}

// "× mmap (warm)": the baseline backend's column.
std::string baseline_column() {
  for (const BackendInfo& info : storage_backends()) {
    if (info.baseline) return fmt::format("× {} (warm)", info.name);
  }
  return "× baseline (warm)";
}

void print_text(const BenchResult& r) {
  const bool device = r.device != "cpu";
  std::vector<TextTable::Column> columns = {{"backend"},
                                            {"cold GB/s", TextTable::kRight},
                                            {"% cold limit", TextTable::kRight},
                                            {"warm GB/s", TextTable::kRight},
                                            {"% warm limit", TextTable::kRight},
                                            {baseline_column(), TextTable::kRight}};
  if (device) {
    columns.push_back({"% H2D (warm)", TextTable::kRight});
  }
  TextTable table(std::move(columns));
  const std::optional<double> baseline_warm = r.baseline_warm();
  for (const BenchRow& row : r.rows) {
    std::vector<std::string> cells = {
        row.label(),
        optional_text(row.cold.gbps, "{:.2f}"),
        optional_text(percent(ratio(row.cold.gbps, r.cold_limit)), "{:.0f}%"),
        optional_text(row.warm.gbps, "{:.2f}"),
        optional_text(percent(ratio(row.warm.gbps, r.warm_limit)), "{:.0f}%"),
        optional_text(ratio(row.warm.gbps, baseline_warm), "{:.2f}×")};
    if (device) {
      cells.push_back(optional_text(percent(ratio(row.warm.gbps, r.h2d_limit)), "{:.0f}%"));
    }
    table.add_row(std::move(cells));
  }
  std::string out = table.render();
  out += '\n';
  if (device) {
    out += fmt::format(
        "device: {} (host backends through the staged pipeline of pinned buffers and async "
        "copies; gds, and auto where cuFile runs in GDS mode, straight into device memory)\n",
        r.device);
    out += fmt::format(
        "H2D limit: {}  (pinned host-to-device copies of {}, cuMemcpyHtoDAsync, best of {})\n",
        gbps_text(r.h2d_limit), format_bytes(kH2dBytes), kH2dRuns);
  }
  out += fmt::format("cold limit: {}  (sequential O_DIRECT reads of 1 MiB, one at a time)\n",
                     gbps_text(r.cold_limit));
  out += fmt::format(
      "warm limit: {}  (2 threads pread() from the page cache into freshly mapped memory)\n",
      gbps_text(r.warm_limit));
  out += fmt::format("files: {}, bytes: {} ({}); best of {} run{}; page cache dropped with: {}\n",
                     r.files, r.bytes, format_bytes(r.bytes), r.runs, r.runs == 1 ? "" : "s",
                     cache_drop_name(r.cache_drop));
  out += "settings: built-in defaults (any config file is ignored; see warpload tune)\n";
  for (const BenchRow& row : r.rows) {
    // Say what "auto" (or any backend that picks for itself) turned out to be.
    const std::string as_asked = row.direct ? row.backend + ", O_DIRECT" : row.backend;
    const bool cold_differs = row.cold.gbps && row.cold.resolved != as_asked;
    const bool warm_differs = row.warm.gbps && row.warm.resolved != as_asked;
    if (cold_differs || warm_differs) {
      out += fmt::format("{} ran as: cold {}, warm {}\n", row.label(),
                         row.cold.gbps ? row.cold.resolved : "—",
                         row.warm.gbps ? row.warm.resolved : "—");
    }
  }
  for (const std::string& note : r.notes) {
    out += fmt::format("note: {}\n", note);
  }
  fmt::print("{}", out);
}

void optional_field(JsonWriter& w, std::string_view key, const std::optional<double>& value) {
  w.key(key);
  if (value) {
    w.value(*value);
  } else {
    w.null();
  }
}

void print_json(const BenchResult& r) {
  std::string out;
  JsonWriter w(out);
  w.begin_object()
      .field("files", static_cast<std::uint64_t>(r.files))
      .field("bytes", r.bytes)
      .field("file_bytes", r.file_bytes)
      .field("runs", r.runs)
      .field("cache_drop", cache_drop_name(r.cache_drop))
      .field("device", r.device)
      .field("uses_config", false);
  optional_field(w, "cold_limit_gbps", r.cold_limit);
  optional_field(w, "warm_limit_gbps", r.warm_limit);
  optional_field(w, "h2d_limit_gbps", r.h2d_limit);
  const std::optional<double> baseline_warm = r.baseline_warm();
  w.key("rows").begin_array();
  for (const BenchRow& row : r.rows) {
    w.begin_object()
        .field("label", row.label())
        .field("backend", row.backend)
        .field("direct", row.direct);
    optional_field(w, "cold_gbps", row.cold.gbps);
    optional_field(w, "cold_fraction_of_limit", ratio(row.cold.gbps, r.cold_limit));
    w.field("cold_backend", row.cold.resolved);
    optional_field(w, "warm_gbps", row.warm.gbps);
    optional_field(w, "warm_fraction_of_limit", ratio(row.warm.gbps, r.warm_limit));
    w.field("warm_backend", row.warm.resolved);
    optional_field(w, "warm_vs_mmap", ratio(row.warm.gbps, baseline_warm));
    optional_field(w, "warm_fraction_of_h2d", ratio(row.warm.gbps, r.h2d_limit));
    optional_field(w, "cold_fraction_of_h2d", ratio(row.cold.gbps, r.h2d_limit));
    w.end_object();
  }
  w.end_array();
  w.key("notes").begin_array();
  for (const std::string& note : r.notes) {
    w.value(note);
  }
  w.end_array();
  w.end_object();
  out.push_back('\n');
  fmt::print("{}", out);
}

}  // namespace

void run_bench(const BenchOptions& options) {
  const BenchResult result = run_measurements(options);
  if (options.json) {
    print_json(result);
  } else {
    print_text(result);
  }
}

}  // namespace warpload::cli
