#include "demo_checkpoint.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>

#include "json_writer.hpp"
#include "units.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"

namespace warpload::cli {
namespace {

namespace fs = std::filesystem;

// Hidden sizes the planner considers: those of real models, plus small ones for tests.
constexpr std::uint64_t kHiddenSizes[] = {64,   128,  192,  256,  320,  384,  448,   512,  640,
                                          768,  896,  1024, 1280, 1536, 1792, 2048,  2560, 3072,
                                          3584, 4096, 5120, 6144, 7168, 8192, 12288, 16384};
constexpr std::uint64_t kMinVocab = 256;
constexpr std::uint64_t kVocabMultiple = 64;
constexpr std::uint64_t kScaleBlock = 128;

constexpr std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) { return (a + b - 1) / b; }

struct Dims {
  std::uint64_t hidden = 0;
  std::uint64_t intermediate = 0;
  std::uint64_t heads = 0;
  std::uint64_t kv_heads = 0;
  std::uint64_t head_dim = 0;
};

Dims dims_for_hidden(std::uint64_t hidden) {
  Dims d;
  d.hidden = hidden;
  d.head_dim = hidden >= 1024 ? 128 : hidden >= 256 ? 64 : hidden / 4;
  d.heads = hidden / d.head_dim;
  // Grouped-query attention, 4 query heads per KV head where the head count allows.
  d.kv_heads = std::max<std::uint64_t>(1, d.heads / 4);
  while (d.heads % d.kv_heads != 0) {
    --d.kv_heads;
  }
  // SwiGLU's 8/3 * hidden, rounded up to a multiple of 64 as real configs do.
  d.intermediate = ceil_div(ceil_div(hidden * 8, 3), 64) * 64;
  return d;
}

std::uint64_t layer_bytes(const Dims& d, bool fp8) {
  const std::uint64_t h = d.hidden;
  const std::uint64_t kv_dim = d.kv_heads * d.head_dim;
  const std::uint64_t attention = 2 * (2 * h * h) + 2 * (2 * kv_dim * h);
  const std::uint64_t norms = 2 * (2 * h);
  const std::uint64_t mlp_elements = 3 * d.intermediate * h;
  // FP8: one byte per weight plus three F32 block-scale tensors.
  const std::uint64_t scale_bytes = std::uint64_t{3} * sizeof(float) *
                                    ceil_div(d.intermediate, kScaleBlock) *
                                    ceil_div(h, kScaleBlock);
  const std::uint64_t mlp = fp8 ? mlp_elements + scale_bytes : 2 * mlp_elements;
  return attention + norms + mlp;
}

std::uint64_t nominal_layers(std::uint64_t hidden) {
  return std::max<std::uint64_t>(2, hidden / 128);
}
std::uint64_t nominal_vocab(std::uint64_t hidden) {
  return std::clamp<std::uint64_t>(32 * hidden, 1024, 131072);
}

std::uint64_t dtype_bytes(DType dtype, const std::vector<std::uint64_t>& shape) {
  std::uint64_t n = 1;
  for (const std::uint64_t dim : shape) {
    n *= dim;
  }
  return n * dtype_bits(dtype) / 8;
}

void add_tensor(DemoModel& model, std::string name, DType dtype, std::vector<std::uint64_t> shape,
                DemoValues values) {
  DemoTensor t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.nbytes = dtype_bytes(dtype, shape);
  t.shape = std::move(shape);
  t.values = values;
  model.total_bytes += t.nbytes;
  model.tensors.push_back(std::move(t));
}

void add_linear(DemoModel& model, const std::string& name, std::uint64_t rows, std::uint64_t cols,
                bool fp8) {
  if (!fp8) {
    add_tensor(model, name + ".weight", DType::kBF16, {rows, cols}, DemoValues::kWeightBF16);
    return;
  }
  add_tensor(model, name + ".weight", DType::kF8_E4M3, {rows, cols}, DemoValues::kWeightF8);
  add_tensor(model, name + ".weight_scale_inv", DType::kF32,
             {ceil_div(rows, kScaleBlock), ceil_div(cols, kScaleBlock)}, DemoValues::kScaleF32);
}

DemoModel build_model(const Dims& d, std::uint64_t layers, std::uint64_t vocab) {
  DemoModel model;
  model.hidden = d.hidden;
  model.intermediate = d.intermediate;
  model.layers = layers;
  model.vocab = vocab;
  model.heads = d.heads;
  model.kv_heads = d.kv_heads;
  model.head_dim = d.head_dim;
  const std::uint64_t h = d.hidden;
  const std::uint64_t kv_dim = d.kv_heads * d.head_dim;

  add_tensor(model, "model.embed_tokens.weight", DType::kBF16, {vocab, h}, DemoValues::kWeightBF16);
  for (std::uint64_t i = 0; i < layers; ++i) {
    const std::string prefix = fmt::format("model.layers.{}.", i);
    add_tensor(model, prefix + "input_layernorm.weight", DType::kBF16, {h}, DemoValues::kNormBF16);
    add_linear(model, prefix + "self_attn.q_proj", h, h, false);
    add_linear(model, prefix + "self_attn.k_proj", kv_dim, h, false);
    add_linear(model, prefix + "self_attn.v_proj", kv_dim, h, false);
    add_linear(model, prefix + "self_attn.o_proj", h, h, false);
    add_tensor(model, prefix + "post_attention_layernorm.weight", DType::kBF16, {h},
               DemoValues::kNormBF16);
    const bool fp8 = DemoModel::fp8_mlp(i);
    add_linear(model, prefix + "mlp.gate_proj", d.intermediate, h, fp8);
    add_linear(model, prefix + "mlp.up_proj", d.intermediate, h, fp8);
    add_linear(model, prefix + "mlp.down_proj", h, d.intermediate, fp8);
  }
  add_tensor(model, "model.norm.weight", DType::kBF16, {h}, DemoValues::kNormBF16);
  add_tensor(model, "lm_head.weight", DType::kBF16, {vocab, h}, DemoValues::kWeightBF16);
  return model;
}

// splitmix64's output function: a bijective 64-bit mixer.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
constexpr std::uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

std::uint64_t tensor_key(std::string_view name, std::uint64_t seed) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;  // FNV-1a
  for (const char c : name) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  }
  return mix64(mix64(seed) ^ hash);
}

// Turns 64 random bits into lanes of plausible finite values of the tensor's dtype.
template <DemoValues kValues>
constexpr std::uint64_t shape_word(std::uint64_t r) noexcept {
  if constexpr (kValues == DemoValues::kWeightBF16) {
    // Per 16-bit lane: random sign and mantissa, exponent 117..124 (2^-10..2^-3).
    return (r & 0x807F807F807F807FULL) |
           ((((r >> 7) & 0x0007000700070007ULL) + 0x0075007500750075ULL) << 7);
  } else if constexpr (kValues == DemoValues::kNormBF16) {
    // Positive, exponent 126..127: [0.5, 2).
    return (r & 0x007F007F007F007FULL) |
           ((((r >> 7) & 0x0001000100010001ULL) + 0x007E007E007E007EULL) << 7);
  } else if constexpr (kValues == DemoValues::kWeightF8) {
    // Per E4M3 byte: random sign and mantissa, exponent 4..7 (2^-3..2^0), never NaN.
    return (r & 0x8787878787878787ULL) |
           ((((r >> 3) & 0x0303030303030303ULL) + 0x0404040404040404ULL) << 3);
  } else {
    // Per F32 lane: positive, exponent 117..124.
    return (r & 0x007FFFFF007FFFFFULL) |
           ((((r >> 23) & 0x0000000700000007ULL) + 0x0000007500000075ULL) << 23);
  }
}

template <DemoValues kValues>
void fill_words(std::uint64_t key, std::byte* dest, std::size_t size,
                std::uint64_t offset) noexcept {
  auto word_at = [key](std::uint64_t index) {
    return shape_word<kValues>(mix64(key + (index + 1) * kGoldenGamma));
  };
  std::uint64_t index = offset / 8;
  // A chunk that starts or ends inside a word takes the matching bytes of that word.
  if (const std::size_t skip = offset % 8; skip != 0 && size > 0) {
    const std::uint64_t word = word_at(index++);
    const std::size_t n = std::min(size, 8 - skip);
    std::memcpy(dest, reinterpret_cast<const std::byte*>(&word) + skip, n);
    dest += n;
    size -= n;
  }
  for (; size >= 8; size -= 8, dest += 8) {
    const std::uint64_t word = word_at(index++);
    std::memcpy(dest, &word, 8);
  }
  if (size > 0) {
    const std::uint64_t word = word_at(index);
    std::memcpy(dest, &word, size);
  }
}

void write_index(const fs::path& path, const DemoModel& model,
                 const std::vector<DemoShard>& shards) {
  std::string json;
  JsonWriter w(json);
  w.begin_object();
  w.key("metadata").begin_object().field("total_size", model.total_bytes).end_object();
  w.key("weight_map").begin_object();
  for (const DemoShard& shard : shards) {
    for (const std::size_t i : shard.tensors) {
      w.field(model.tensors[i].name, shard.file_name);
    }
  }
  w.end_object();
  w.end_object();
  json.push_back('\n');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  out.close();
  if (!out) {
    const int error_number = errno;
    throw IoError(path.string() + ": cannot write: " + std::strerror(error_number), error_number,
                  0);
  }
}

}  // namespace

std::uint64_t min_demo_model_bytes() {
  const Dims d = dims_for_hidden(kHiddenSizes[0]);
  return 4 * kMinVocab * d.hidden + 2 * d.hidden + layer_bytes(d, false);
}

DemoModel plan_demo_model(std::uint64_t target_bytes) {
  if (target_bytes < min_demo_model_bytes()) {
    throw std::invalid_argument(fmt::format("a demo checkpoint needs at least {} bytes ({})",
                                            min_demo_model_bytes(),
                                            format_bytes(min_demo_model_bytes())));
  }
  // For each hidden size, the layer count and vocabulary that hit the target, scored by how
  // far they stray from that hidden size's typical proportions (log distance).
  double best_score = INFINITY;
  Dims best_dims;
  std::uint64_t best_layers = 0;
  std::uint64_t best_vocab = 0;
  for (const std::uint64_t hidden : kHiddenSizes) {
    const Dims d = dims_for_hidden(hidden);
    const auto layers_nominal = static_cast<double>(nominal_layers(hidden));
    const auto vocab_nominal = static_cast<double>(nominal_vocab(hidden));
    std::uint64_t layers_total = 0;
    for (std::uint64_t layers = 1; layers <= 4 * nominal_layers(hidden); ++layers) {
      layers_total += layer_bytes(d, DemoModel::fp8_mlp(layers - 1));
      if (layers_total + 2 * hidden >= target_bytes) {
        break;
      }
      const std::uint64_t rest = target_bytes - layers_total - 2 * hidden;
      // Embedding and lm_head: 2 tensors x 2 bytes x hidden per vocabulary entry.
      const double exact_vocab = static_cast<double>(rest) / static_cast<double>(4 * hidden);
      const auto vocab = static_cast<std::uint64_t>(
                             std::llround(exact_vocab / static_cast<double>(kVocabMultiple))) *
                         kVocabMultiple;
      if (vocab < kMinVocab) {
        break;
      }
      const double score = std::abs(std::log(static_cast<double>(layers) / layers_nominal)) +
                           std::abs(std::log(static_cast<double>(vocab) / vocab_nominal));
      if (score < best_score) {
        best_score = score;
        best_dims = d;
        best_layers = layers;
        best_vocab = vocab;
      }
    }
  }
  if (best_layers == 0) {
    throw std::invalid_argument(
        fmt::format("cannot plan a demo checkpoint of {} bytes", target_bytes));
  }
  return build_model(best_dims, best_layers, best_vocab);
}

std::vector<DemoShard> split_demo_shards(const DemoModel& model, unsigned count) {
  const std::size_t n = model.tensors.size();
  if (count == 0 || count > n) {
    throw std::invalid_argument(
        fmt::format("cannot split {} tensors into {} shards (each needs at least one)", n, count));
  }
  std::vector<DemoShard> shards(count);
  for (unsigned s = 0; s < count; ++s) {
    shards[s].file_name = fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, count);
  }
  // A tensor goes to the shard its middle byte falls in, in the whole checkpoint's byte
  // range split into equal parts; clamped so that no shard is skipped or left empty.
  const auto total = static_cast<double>(std::max<std::uint64_t>(1, model.total_bytes));
  std::uint64_t start = 0;
  std::size_t shard = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const DemoTensor& t = model.tensors[i];
    const double middle = static_cast<double>(start) + static_cast<double>(t.nbytes) / 2;
    auto wanted = static_cast<std::size_t>(middle / total * count);
    const std::size_t tensors_left = n - i;
    const std::size_t must_reach = count - std::min<std::size_t>(count, tensors_left);
    wanted = std::clamp(wanted, std::max(shard, must_reach),
                        shards[shard].tensors.empty() ? shard : shard + 1);
    shard = std::min<std::size_t>(wanted, count - 1);
    shards[shard].tensors.push_back(i);
    shards[shard].bytes += t.nbytes;
    start += t.nbytes;
  }
  return shards;
}

void fill_demo_tensor(const DemoTensor& tensor, std::uint64_t seed, std::byte* dest,
                      std::size_t size, std::uint64_t offset) noexcept {
  const std::uint64_t key = tensor_key(tensor.name, seed);
  switch (tensor.values) {
    case DemoValues::kWeightBF16:
      return fill_words<DemoValues::kWeightBF16>(key, dest, size, offset);
    case DemoValues::kNormBF16:
      return fill_words<DemoValues::kNormBF16>(key, dest, size, offset);
    case DemoValues::kWeightF8:
      return fill_words<DemoValues::kWeightF8>(key, dest, size, offset);
    case DemoValues::kScaleF32:
      return fill_words<DemoValues::kScaleF32>(key, dest, size, offset);
  }
}

std::vector<fs::path> write_demo_checkpoint(const fs::path& dir, const DemoModel& model,
                                            const std::vector<DemoShard>& shards,
                                            std::uint64_t seed) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw IoError(dir.string() + ": cannot create directory: " + ec.message(), ec.value(), 0);
  }

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  auto write_shard = [&](const DemoShard& shard) {
    SafetensorsWriter writer;
    writer.set_metadata(metadata);
    for (const std::size_t i : shard.tensors) {
      const DemoTensor& t = model.tensors[i];
      writer.add(t.name, t.dtype, t.shape,
                 [&t, seed](std::byte* dest, std::size_t size, std::uint64_t offset) {
                   fill_demo_tensor(t, seed, dest, size, offset);
                 });
    }
    writer.write(dir / shard.file_name);
  };

  // Generating bytes costs about as much CPU as writing them: one shard per core.
  const unsigned workers = std::clamp<unsigned>(std::thread::hardware_concurrency(), 1,
                                                static_cast<unsigned>(shards.size()));
  std::mutex error_mutex;
  std::exception_ptr error;
  {
    std::vector<std::jthread> threads;
    for (unsigned w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        for (std::size_t s = w; s < shards.size(); s += workers) {
          try {
            write_shard(shards[s]);
          } catch (...) {
            const std::lock_guard lock(error_mutex);
            if (!error) {
              error = std::current_exception();
            }
            return;
          }
        }
      });
    }
  }
  if (error) {
    std::rethrow_exception(error);
  }

  std::vector<fs::path> written;
  written.reserve(shards.size() + 1);
  for (const DemoShard& shard : shards) {
    written.push_back(dir / shard.file_name);
  }
  const fs::path index = dir / "model.safetensors.index.json";
  write_index(index, model, shards);
  written.push_back(index);
  return written;
}

}  // namespace warpload::cli
