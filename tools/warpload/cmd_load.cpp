// warpload load PATH... [--backend NAME] [--direct] [--threads N] [--block-size B]
//                       [--queue-depth Q] [--config FILE] [--device DEV] [--staging SIZE]
//                       [--hash] [--json] [--verify] [--manifest FILE] [--memory-limit SIZE]

#include <fmt/core.h>
#include <sys/resource.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "backend_names.hpp"
#include "commands.hpp"
#include "json_writer.hpp"
#include "manifest.hpp"
#include "progress.hpp"
#include "text_table.hpp"
#include "units.hpp"
#include "warpload/chunked.hpp"
#include "warpload/config.hpp"
#include "warpload/device.hpp"
#include "warpload/loader.hpp"

namespace warpload::cli {
namespace {

struct LoadedTensor {
  const PlannedFile* file = nullptr;
  const TensorInfo* info = nullptr;
  std::uint64_t xxh3 = 0;  // only with --hash
};

std::string hex64(std::uint64_t value) { return fmt::format("{:016x}", value); }

// Peak resident memory of this process so far, in bytes: the checkpoint's bytes plus the
// loader's overhead (no second copy should show up here).
std::uint64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;
}

// Resident memory of this process now, in bytes (/proc/self/statm); 0 when unreadable.
std::uint64_t current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t pages = 0;
  std::uint64_t resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

// Peak resident memory since the last reset_peak_rss() (VmHWM), in bytes; falls back to the
// process's lifetime peak where /proc/self/status lacks it.
std::uint64_t window_peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return peak_rss_bytes();
}

// Starts a new peak-RSS window (writing 5 to /proc/self/clear_refs resets VmHWM to the
// current RSS); false where the kernel refuses, and the window is then the process lifetime.
bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

// Memory a device load costs, measured around Loader::load(): the device's primary context
// is created first (a small allocation held across the load), so the driver's own host and
// device memory for the context does not count as the load's.
struct DeviceLoadMemory {
  std::shared_ptr<Buffer> context_anchor;
  std::uint64_t rss_before = 0;
  std::uint64_t device_free_before = 0;
  bool peak_window = false;
  // Filled after the load:
  std::uint64_t host_growth = 0;
  std::uint64_t device_used = 0;

  void before(Device device) {
    context_anchor = make_cuda_allocator(device)->allocate(256, 256);
    device_free_before = cuda_memory_info(device).free_bytes;
    rss_before = current_rss_bytes();
    peak_window = reset_peak_rss();
  }
  void after(Device device) {
    const std::uint64_t peak = window_peak_rss_bytes();
    host_growth = peak > rss_before ? peak - rss_before : 0;
    const std::uint64_t free_after = cuda_memory_info(device).free_bytes;
    device_used = device_free_before > free_after ? device_free_before - free_after : 0;
  }
};

void print_json(const LoadCommandOptions& options, const LoadStats& stats,
                const std::vector<LoadedTensor>& tensors, double wall_seconds,
                const std::optional<DeviceLoadMemory>& device_memory, std::uint64_t staging_bytes,
                std::size_t chunks) {
  std::string out;
  JsonWriter w(out);
  w.begin_object()
      .field("bytes", stats.bytes)
      .field("seconds", stats.seconds)
      .field("gbps", stats.gbps())
      .field("backend", stats.backend)
      .field("device", stats.device)
      .field("direct", stats.storage.direct)
      .field("direct_files", static_cast<std::uint64_t>(stats.direct_files))
      .field("files", static_cast<std::uint64_t>(stats.files))
      .field("gds_fallback", stats.gds_fallback)
      .field("gds_compat_mode", stats.gds_compat_mode)
      .field("peak_rss_bytes", peak_rss_bytes())
      .field("wall_seconds", wall_seconds);
  if (device_memory) {
    // Host growth is the peak during the load over the RSS before it (context already up);
    // device memory used is the drop in the device's free memory while the tensors live.
    w.field("staging_bytes", staging_bytes)
        .field("staging_memory", stats.staging_memory)
        .field("host_rss_growth_bytes", device_memory->host_growth)
        .field("host_rss_peak_windowed", device_memory->peak_window)
        .field("device_memory_used_bytes", device_memory->device_used);
  }
  if (options.verify) w.field("verify_seconds", stats.verify_seconds);
  if (!options.manifest.empty()) w.field("manifest", options.manifest.string());
  if (options.memory_limit != 0) {
    w.field("memory_limit", options.memory_limit)
        .field("chunks", static_cast<std::uint64_t>(chunks));
  }
  w.key("config");
  if (stats.config.empty()) {
    w.null();
  } else {
    w.value(stats.config.string());
  }
  // What the load ran with: the command line's settings, then the config's (0 = default).
  w.key("options")
      .begin_object()
      .field("threads", stats.storage.threads)
      .field("block_size", stats.storage.block_size)
      .field("queue_depth", stats.storage.queue_depth)
      .end_object();
  w.key("tensors").begin_array();
  for (const LoadedTensor& t : tensors) {
    w.begin_object()
        .field("file", t.file->path.string())
        .field("name", t.info->name)
        .field("dtype", dtype_name(t.info->dtype));
    w.key("shape").begin_array();
    for (const std::uint64_t dim : t.info->shape) {
      w.value(dim);
    }
    w.end_array();
    w.field("nbytes", t.info->nbytes());
    if (options.hash) {
      w.field("xxh3_64", hex64(t.xxh3));
    }
    w.end_object();
  }
  w.end_array();
  w.end_object();
  out.push_back('\n');
  fmt::print("{}", out);
}

void print_text(const LoadCommandOptions& options, const std::vector<PlannedFile>& files,
                const LoadStats& stats, const std::vector<LoadedTensor>& tensors,
                const std::optional<DeviceLoadMemory>& device_memory, std::uint64_t staging_bytes,
                std::size_t chunks) {
  std::string out;
  if (options.hash) {
    const bool several_files = files.size() > 1;
    const auto labels = file_labels(files);
    std::vector<TextTable::Column> columns = {
        {"NAME"}, {"DTYPE"}, {"SHAPE"}, {"BYTES", TextTable::kRight}, {"XXH3_64"}};
    if (several_files) {
      columns.push_back({"FILE"});
    }
    TextTable table(std::move(columns));
    for (const LoadedTensor& t : tensors) {
      std::vector<std::string> row = {t.info->name, std::string(dtype_name(t.info->dtype)),
                                      format_shape(t.info->shape), std::to_string(t.info->nbytes()),
                                      hex64(t.xxh3)};
      if (several_files) {
        row.push_back(labels.at(t.file->path));
      }
      table.add_row(std::move(row));
    }
    out += table.render();
    out += '\n';
  }
  out += fmt::format("loaded {} bytes ({}), {} tensors from {} file{} in {}: {:.2f} GB/s ({})\n",
                     stats.bytes, format_bytes(stats.bytes), tensors.size(), stats.files,
                     stats.files == 1 ? "" : "s", format_seconds(stats.seconds), stats.gbps(),
                     describe_backend(stats, stats.storage.direct));
  if (stats.device != "cpu") out += fmt::format("device: {}\n", stats.device);
  if (options.memory_limit != 0) {
    out += fmt::format("memory limit {}: {} chunk{}, each read while the previous one was used\n",
                       format_bytes(options.memory_limit), chunks, chunks == 1 ? "" : "s");
  }
  if (device_memory) {
    const auto over = [&stats](std::uint64_t used) {
      return stats.bytes ? (static_cast<double>(used) / static_cast<double>(stats.bytes) - 1) * 100
                         : 0.0;
    };
    out += fmt::format(
        "device memory used {} ({:+.2f}% over the bytes loaded); host memory grew {} during the "
        "load (staging ring {})\n",
        format_bytes(device_memory->device_used), over(device_memory->device_used),
        format_bytes(device_memory->host_growth), format_bytes(staging_bytes));
  }
  if (!stats.config.empty()) {
    out += fmt::format("config: {}\n", stats.config.string());
  }
  if (options.verify) {
    out += fmt::format("verify: every tensor re-read from its file and identical ({})\n",
                       format_seconds(stats.verify_seconds));
  }
  if (!options.manifest.empty()) {
    out +=
        fmt::format("manifest: {} tensors match {}\n", tensors.size(), options.manifest.string());
  }
  const std::uint64_t rss = peak_rss_bytes();
  out += fmt::format(
      "peak RSS {} ({:+.1f}% over the bytes loaded)\n", format_bytes(rss),
      stats.bytes ? (static_cast<double>(rss) / static_cast<double>(stats.bytes) - 1) * 100 : 0.0);
  fmt::print("{}", out);
}

}  // namespace

std::string describe_backend(const LoadStats& stats, bool direct) {
  const char* plural = stats.files == 1 ? "" : "s";
  const BackendInfo* found = find_backend(stats.backend);
  const BackendInfo info = found != nullptr ? *found : BackendInfo{};  // none: custom storage
  if (info.picks_direct) {
    return fmt::format("{}: {} of {} file{} O_DIRECT", stats.backend, stats.direct_files,
                       stats.files, plural);
  }
  if (info.uses_usrbio && stats.staging_memory.starts_with("pool: ")) {
    return stats.backend + ", into " + stats.device + " from registered iovs (no CPU copy)";
  }
  if (info.uses_usrbio) {
    return stats.backend + (resolve_usrbio_target(stats.storage.usrbio.target) == UsrbioTarget::kIov
                                ? ", zero copy into iovs"
                                : ", through staging iovs");
  }
  if (info.device_destinations) {
    return stats.gds_compat_mode ? stats.backend + ", cuFile compatibility mode" : stats.backend;
  }
  if (!direct) return stats.backend;
  if (stats.direct_files == stats.files) return stats.backend + ", O_DIRECT";
  return fmt::format("{}, O_DIRECT for {} of {} file{}; the file system refused it for the rest",
                     stats.backend, stats.direct_files, stats.files, plural);
}

namespace {

// Checks the manifest, then prints: shared by whole and chunked loads.
void finish_load(const LoadCommandOptions& options, const std::vector<PlannedFile>& files,
                 const LoadStats& stats, const std::vector<LoadedTensor>& tensors,
                 const std::optional<Manifest>& manifest, double wall_seconds,
                 const std::optional<DeviceLoadMemory>& device_memory, std::uint64_t staging_bytes,
                 std::size_t chunks) {
  if (manifest) {
    std::vector<TensorDigest> digests;
    for (const LoadedTensor& t : tensors) digests.push_back({t.file, t.info, t.xxh3});
    check_manifest(*manifest, digests);
  }
  if (options.json) {
    print_json(options, stats, tensors, wall_seconds, device_memory, staging_bytes, chunks);
  } else {
    print_text(options, files, stats, tensors, device_memory, staging_bytes, chunks);
  }
}

// --memory-limit: the engine's ChunkedReader; each chunk is hashed (and verified by the reader)
// while the next one is read, and dropped before the one after it is read.
void run_chunked_load(const LoadCommandOptions& options, LoadOptions load_options,
                      const std::optional<Manifest>& manifest, ProgressBar& bar) {
  if (Device::parse(options.device).is_cuda()) {
    throw UsageError(
        "--memory-limit bounds host memory; a device load already holds only its staging ring "
        "(--staging) in host memory");
  }
  auto plan = std::make_shared<CheckpointPlan>();
  plan->add(options.paths);
  const auto wall_start = std::chrono::steady_clock::now();
  ChunkedReader reader(plan, std::move(load_options), ChunkOptions{options.memory_limit, true});
  std::vector<LoadedTensor> tensors;
  while (auto chunk = reader.next()) {
    for (const TensorView& view : *chunk) {
      const TensorLocation where = plan->find(view.name);
      LoadedTensor t{&plan->files()[where.file], &plan->info(where), 0};
      if (options.hash || manifest) t.xxh3 = XXH3_64bits(view.data, view.nbytes);
      tensors.push_back(t);
    }
  }
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  bar.finish();
  LoadStats stats = reader.stats();
  stats.files = plan->files().size();
  finish_load(options, plan->files(), stats, tensors, manifest, wall_seconds, std::nullopt, 0,
              reader.chunks().size());
}

}  // namespace

void run_load(const LoadCommandOptions& options) {
  bool to_device = false;
  try {
    to_device = Device::parse(options.device).is_cuda();
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--device: {}", e.what()));
  }
  if (!options.backend.empty()) {
    static_cast<void>(check_backend_name(options.backend, "--backend", to_device));
  }
  if (options.direct) {
    // Without --backend the config picks the backend: resolve it the way the loader will.
    const std::string backend =
        resolve_settings(options.backend, {}, options.config, true).settings.backend;
    if (!backend_takes_direct(backend)) {
      throw UsageError(fmt::format("--direct does not apply to backend '{}'", backend));
    }
  }

  LoadOptions load_options;
  load_options.backend = options.backend;
  load_options.config = options.config;
  load_options.device = options.device;
  load_options.storage.direct = options.direct;
  load_options.storage.threads = options.threads;
  load_options.storage.block_size = options.block_size;
  load_options.storage.queue_depth = options.queue_depth;
  load_options.verify = options.verify;
  load_options.cancel = interrupt_flag();
  if (options.staging_bytes != 0) load_options.staging_bytes = options.staging_bytes;
  ProgressBar bar(stderr, "load");
  if (bar.enabled()) {
    load_options.on_progress = [&bar](std::uint64_t done, std::uint64_t total) {
      bar.update(done, total);
    };
  }

  // Read before the load, so a bad manifest fails fast.
  const std::optional<Manifest> manifest =
      options.manifest.empty() ? std::nullopt : std::optional(read_manifest(options.manifest));

  const std::uint64_t staging_bytes = load_options.staging_bytes;
  if (options.memory_limit != 0) {
    run_chunked_load(options, std::move(load_options), manifest, bar);
    return;
  }
  const Device device = Device::parse(options.device);
  std::optional<DeviceLoadMemory> device_memory;
  Loader loader(std::move(load_options));
  loader.add(options.paths);
  if (to_device) device_memory.emplace().before(device);
  const auto wall_start = std::chrono::steady_clock::now();
  const LoadStats stats = loader.load();
  const double wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  if (device_memory) device_memory->after(device);
  bar.finish();

  // Hashing reads the loaded memory after the timed phase, so it is not in the GB/s. Device
  // tensors are first copied back to one reused host buffer.
  std::vector<LoadedTensor> tensors;
  std::vector<std::byte> host_copy;
  for (const PlannedFile& file : loader.files()) {
    for (const TensorInfo& info : file.header.tensors) {
      LoadedTensor t{&file, &info, 0};
      if (options.hash || !options.manifest.empty()) {
        const TensorView view = loader.tensor(info.name);
        if (view.memory == MemoryKind::kDevice) {
          host_copy.resize(view.nbytes);
          loader.copy_to_host(info.name, host_copy);
          t.xxh3 = XXH3_64bits(host_copy.data(), view.nbytes);
        } else {
          t.xxh3 = XXH3_64bits(view.data, view.nbytes);
        }
      }
      tensors.push_back(t);
    }
  }
  finish_load(options, loader.files(), stats, tensors, manifest, wall_seconds, device_memory,
              staging_bytes, 0);
}

}  // namespace warpload::cli
