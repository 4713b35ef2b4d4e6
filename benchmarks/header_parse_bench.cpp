// Header parsing speed: a 20,000-tensor header (about 2 MB of JSON, the size of a large
// sharded checkpoint's biggest shard) parsed from memory and read from a file.
//
//   build/benchmarks/header_parse_bench [--benchmark_filter=...]

#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include "warpload/format.hpp"

namespace {

// A header shaped like a transformer checkpoint: seven weights per layer, realistic names,
// BF16 shapes, tensors back to back. Returns the length prefix and the JSON; `data_size`
// receives the size of the data section it describes.
std::string make_header(std::size_t tensors, std::uint64_t& data_size) {
  static constexpr const char* kWeights[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                             "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                             "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                             "mlp.down_proj.weight"};
  static constexpr std::uint64_t kShapes[][2] = {{4096, 4096}, {1024, 4096},  {1024, 4096},
                                                 {4096, 4096}, {14336, 4096}, {14336, 4096},
                                                 {4096, 14336}};
  std::string json = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < tensors; ++i) {
    const std::size_t kind = i % 7;
    const std::uint64_t bytes = kShapes[kind][0] * kShapes[kind][1] * 2;
    json += ",\"model.layers." + std::to_string(i / 7) + "." + kWeights[kind] +
            "\":{\"dtype\":\"BF16\",\"shape\":[" + std::to_string(kShapes[kind][0]) + "," +
            std::to_string(kShapes[kind][1]) + "],\"data_offsets\":[" + std::to_string(offset) +
            "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  json += '}';
  json.append((8 - (8 + json.size()) % 8) % 8, ' ');
  data_size = offset;
  std::string file(8, '\0');
  const std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) {
    file[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  }
  return file + json;
}

// Frees a header outside the timed region: the figures are for parsing, not for the caller's
// eventual destruction of 20,000 strings and vectors.
void release_untimed(benchmark::State& state, warpload::Header&& header) {
  state.PauseTiming();
  { const warpload::Header released = std::move(header); }
  state.ResumeTiming();
}

void BM_ParseHeaderFromMemory(benchmark::State& state) {
  std::uint64_t data_size = 0;
  const std::string header = make_header(static_cast<std::size_t>(state.range(0)), data_size);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(header.data()),
                                         header.size());
  for (auto _ : state) {
    warpload::Header parsed = warpload::parse_header(bytes, header.size() + data_size, "bench");
    benchmark::DoNotOptimize(parsed);
    release_untimed(state, std::move(parsed));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * header.size()));
  state.counters["tensors/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * state.range(0)), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ParseHeaderFromMemory)->Arg(1'000)->Arg(20'000)->Unit(benchmark::kMillisecond);

// Includes open, fstat, the two preads (page cache) and close. The file is sparse: only the
// header is on disk.
void BM_ReadHeaderFromFile(benchmark::State& state) {
  std::uint64_t data_size = 0;
  const std::string header = make_header(static_cast<std::size_t>(state.range(0)), data_size);
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/warpload-bench-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  const std::filesystem::path path = std::filesystem::path(dir) / "model.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
  }
  std::filesystem::resize_file(path, header.size() + data_size);

  for (auto _ : state) {
    warpload::Header parsed = warpload::read_header(path);
    benchmark::DoNotOptimize(parsed);
    release_untimed(state, std::move(parsed));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * header.size()));
  state.counters["tensors/s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * state.range(0)), benchmark::Counter::kIsRate);
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_ReadHeaderFromFile)->Arg(1'000)->Arg(20'000)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
