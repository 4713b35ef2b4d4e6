// warpload gen DIR [--size 2GiB] [--shards N] [--seed S] [--dry-run]

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

#include "commands.hpp"
#include "demo_checkpoint.hpp"
#include "units.hpp"

namespace warpload::cli {
namespace {

// Hugging Face's default max_shard_size ("5GB").
constexpr std::uint64_t kDefaultMaxShardBytes = 5'000'000'000;

}  // namespace

void run_gen(const GenOptions& options) {
  DemoModel model;
  try {
    model = plan_demo_model(options.size);
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--size: {}", e.what()));
  }
  const unsigned count =
      options.shards != 0
          ? options.shards
          : static_cast<unsigned>(std::clamp<std::uint64_t>(
                (model.total_bytes + kDefaultMaxShardBytes - 1) / kDefaultMaxShardBytes, 1,
                model.tensors.size()));
  std::vector<DemoShard> shards;
  try {
    shards = split_demo_shards(model, count);
  } catch (const std::invalid_argument& e) {
    throw UsageError(fmt::format("--shards: {}", e.what()));
  }

  std::uint64_t fp8_layers = 0;
  for (std::uint64_t i = 0; i < model.layers; ++i) {
    fp8_layers += DemoModel::fp8_mlp(i) ? 1 : 0;
  }
  std::string out = fmt::format(
      "layout: hidden {}, {} layers ({} with F8_E4M3 MLPs and block scales), intermediate {}, "
      "{} heads ({} KV, head dim {}), vocab {}\n",
      model.hidden, model.layers, fp8_layers, model.intermediate, model.heads, model.kv_heads,
      model.head_dim, model.vocab);
  for (const DemoShard& shard : shards) {
    out += fmt::format("  {}  {:5} tensor{}  {:>12}\n", shard.file_name, shard.tensors.size(),
                       shard.tensors.size() == 1 ? " " : "s", format_bytes(shard.bytes));
  }
  if (options.dry_run) {
    out += fmt::format("would write {} bytes ({}), {} tensors in {} shard{} to {} (seed {})\n",
                       model.total_bytes, format_bytes(model.total_bytes), model.tensors.size(),
                       shards.size(), shards.size() == 1 ? "" : "s", options.dir.string(),
                       options.seed);
    fmt::print("{}", out);
    return;
  }

  // Everything is printed once the files are written: nothing on stdout after a failure.
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::filesystem::path> written =
      write_demo_checkpoint(options.dir, model, shards, options.seed);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out += fmt::format(
      "wrote {} bytes ({}), {} tensors, {} files to {} in {} ({:.2f} GB/s, seed {})\n",
      model.total_bytes, format_bytes(model.total_bytes), model.tensors.size(), written.size(),
      options.dir.string(), format_seconds(seconds),
      seconds > 0 ? static_cast<double>(model.total_bytes) / seconds / 1e9 : 0.0, options.seed);
  fmt::print("{}", out);
}

}  // namespace warpload::cli
