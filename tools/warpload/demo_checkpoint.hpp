// The demo checkpoint `warpload gen` writes: a deterministic, Llama-shaped model of a chosen
// size, sharded the way Hugging Face shards checkpoints.
//
// Layout (PyTorch Linear weights are [out, in]):
//   model.embed_tokens.weight                       BF16 [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight          BF16 [hidden]
//   model.layers.{i}.self_attn.{q,o}_proj.weight     BF16 [hidden, hidden]
//   model.layers.{i}.self_attn.{k,v}_proj.weight     BF16 [kv_heads * head_dim, hidden]  (GQA)
//   model.layers.{i}.post_attention_layernorm.weight BF16 [hidden]
//   model.layers.{i}.mlp.{gate,up}_proj.weight       [intermediate, hidden]
//   model.layers.{i}.mlp.down_proj.weight            [hidden, intermediate]
//       BF16 in even layers; F8_E4M3 in odd layers, each with an F32
//       `<name>.weight_scale_inv` of DeepSeek-style 128x128 block scales
//       [ceil(rows / 128), ceil(cols / 128)]
//   model.norm.weight                                BF16 [hidden]
//   lm_head.weight                                   BF16 [vocab, hidden]
//
// Bytes are a pure function of (seed, tensor name, byte offset): a counter-based splitmix64
// stream per tensor, shaped into plausible finite values (weights of magnitude 2^-10..2^-3,
// norms in [0.5, 2), FP8 weights in 2^-3..2^0, scales 2^-10..2^-3). They do not depend on how
// the writer chunks a tensor, nor on the shard count. Little-endian hosts only, as the format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "warpload/dtype.hpp"

namespace warpload::cli {

enum class DemoValues : std::uint8_t { kWeightBF16, kNormBF16, kWeightF8, kScaleF32 };

struct DemoTensor {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<std::uint64_t> shape;
  std::uint64_t nbytes = 0;
  DemoValues values = DemoValues::kWeightBF16;
};

struct DemoModel {
  std::uint64_t hidden = 0;
  std::uint64_t intermediate = 0;
  std::uint64_t layers = 0;
  std::uint64_t vocab = 0;
  std::uint64_t heads = 0;
  std::uint64_t kv_heads = 0;
  std::uint64_t head_dim = 0;
  std::vector<DemoTensor> tensors;  // model order
  std::uint64_t total_bytes = 0;    // sum of tensor bytes

  // Whether layer `layer`'s MLP is stored in F8_E4M3 with block scales.
  [[nodiscard]] static bool fp8_mlp(std::uint64_t layer) noexcept { return layer % 2 == 1; }
};

// The smallest checkpoint plan_demo_model() can produce.
[[nodiscard]] std::uint64_t min_demo_model_bytes();

// Chooses hidden size, layer count and vocabulary so that the total is within ~1% of
// `target_bytes` and the proportions stay close to a real model of that size.
// Throws std::invalid_argument when target_bytes < min_demo_model_bytes().
[[nodiscard]] DemoModel plan_demo_model(std::uint64_t target_bytes);

struct DemoShard {
  std::string file_name;             // model-00001-of-00004.safetensors
  std::vector<std::size_t> tensors;  // indices into DemoModel::tensors, in order
  std::uint64_t bytes = 0;           // tensor bytes in this shard
};

// Splits the tensors, in order, into `count` non-empty shards of about equal bytes.
// Throws std::invalid_argument when count is 0 or exceeds the tensor count.
[[nodiscard]] std::vector<DemoShard> split_demo_shards(const DemoModel& model, unsigned count);

// Writes `size` bytes of `tensor`, starting at byte `offset` of the tensor, into `dest`.
void fill_demo_tensor(const DemoTensor& tensor, std::uint64_t seed, std::byte* dest,
                      std::size_t size, std::uint64_t offset) noexcept;

// Writes the shards (in parallel, up to one thread per core) and then
// model.safetensors.index.json into `dir`, creating it if missing. Returns the paths written.
// Throws warpload::IoError naming the file on failure.
std::vector<std::filesystem::path> write_demo_checkpoint(const std::filesystem::path& dir,
                                                         const DemoModel& model,
                                                         const std::vector<DemoShard>& shards,
                                                         std::uint64_t seed);

}  // namespace warpload::cli
