// Writes the fuzzers' seed corpus: small valid files from SafetensorsWriter (every dtype,
// scalars, empty tensors, metadata, unpadded headers that force realignment, escaped names)
// and one crafted file per validation rule, as the format tests build them.
//
//   warpload_fuzz_seeds DIR     (DIR is created; existing seeds are overwritten)

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "warpload/dtype.hpp"
#include "warpload/format.hpp"

namespace {

namespace fs = std::filesystem;
using warpload::DType;

std::string le64(std::uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// The length prefix, `json`, then `data_size` bytes of a counting pattern.
std::string crafted(const std::string& json, std::uint64_t data_size) {
  std::string out = le64(json.size()) + json;
  for (std::uint64_t i = 0; i < data_size; ++i) out += static_cast<char>(i * 7 + 1);
  return out;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  std::uint64_t begin, std::uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

struct WrittenTensor {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> shape;
};

void write_valid(const fs::path& path, const std::vector<WrittenTensor>& tensors,
                 std::size_t header_alignment,
                 const std::map<std::string, std::string>& metadata = {}) {
  warpload::SafetensorsWriter writer;
  writer.set_header_alignment(header_alignment);
  writer.set_metadata(metadata);
  std::uint64_t seed = 0;
  for (const WrittenTensor& t : tensors) {
    writer.add(t.name, t.dtype, t.shape,
               [seed = ++seed](std::byte* dest, std::size_t size, std::uint64_t offset) {
                 for (std::size_t i = 0; i < size; ++i) {
                   dest[i] = static_cast<std::byte>((offset + i) * 31 + seed);
                 }
               });
  }
  writer.write(path);
}

void write_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  // Valid files.
  write_valid(dir / "empty.safetensors", {}, 8);
  write_valid(dir / "scalar.safetensors", {{"s", DType::kF32, {}}}, 8);
  write_valid(dir / "metadata.safetensors", {{"w", DType::kBF16, {3, 5}}}, 8,
              {{"format", "pt"}, {"note", "seed"}});
  std::vector<WrittenTensor> every_dtype;
  for (std::size_t d = 0; d < warpload::kDTypeCount; ++d) {
    const auto dtype = static_cast<DType>(d);
    every_dtype.push_back({std::string(warpload::dtype_name(dtype)), dtype, {2, 4}});
  }
  write_valid(dir / "every_dtype.safetensors", every_dtype, 8);
  // Unpadded header: odd data offset, so multi-byte tensors are realigned after the read.
  write_valid(dir / "unpadded.safetensors",
              {{"a", DType::kU8, {3}}, {"b", DType::kF64, {2}}, {"c", DType::kI16, {0, 4}}}, 1);
  write_valid(dir / "layers.safetensors",
              {{"model.embed.weight", DType::kBF16, {16, 8}},
               {"model.layers.0.norm", DType::kF32, {8}},
               {"model.layers.0.mlp.weight", DType::kF8_E4M3, {8, 8}},
               {"model.layers.0.mlp.scale", DType::kF32, {1, 1}},
               {"lm_head.weight", DType::kBF16, {16, 8}}},
              8);
  // Crafted: whitespace, escapes, unknown fields, and one file per rule the parser enforces.
  write_bytes(dir / "whitespace.safetensors",
              crafted("  \n{ " + entry("x", "I32", "[ 2 ]", 0, 8) + " }   ", 8));
  write_bytes(dir / "escaped_name.safetensors",
              crafted("{" + entry("caf\\u00e9\\n", "U8", "[4]", 0, 4) + "}", 4));
  write_bytes(dir / "unknown_field.safetensors",
              crafted("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],"
                      "\"extra\":[1,{\"a\":null}]}}",
                      1));
  write_bytes(dir / "sub_byte.safetensors", crafted("{" + entry("f4", "F4", "[6]", 0, 3) + "," +
                                                        entry("f6", "F6_E2M3", "[4]", 3, 6) + "}",
                                                    6));
  // Empty tensors whose other dims do not fit int64 (views refuse them; shards must not overflow).
  write_bytes(dir / "empty_huge_dims.safetensors",
              crafted("{" + entry("a", "U8", "[0,1099511627776,1099511627776]", 0, 0) + "," +
                          entry("b", "BF16", "[4611686018427387904,3,0]", 0, 0) + "," +
                          entry("c", "F4", "[9223372036854775807,0]", 0, 0) + "}",
                      0));
  write_bytes(dir / "rule_too_small.safetensors", "\x05\x00\x00");
  write_bytes(dir / "rule_too_large.safetensors", le64(100'000'001) + "{}");
  write_bytes(dir / "rule_header_length.safetensors", le64(64) + "{}");
  write_bytes(dir / "rule_not_utf8.safetensors", crafted("{\"\xff\xfe\":1}", 0));
  write_bytes(dir / "rule_not_json.safetensors", crafted("{\"a\":{\"dtype\":", 0));
  write_bytes(
      dir / "rule_duplicate.safetensors",
      crafted("{" + entry("a", "U8", "[1]", 0, 1) + "," + entry("a", "U8", "[1]", 1, 2) + "}", 2));
  write_bytes(
      dir / "rule_gap.safetensors",
      crafted("{" + entry("a", "U8", "[1]", 0, 1) + "," + entry("b", "U8", "[1]", 2, 3) + "}", 3));
  write_bytes(dir / "rule_overflow.safetensors",
              crafted("{" + entry("a", "F64", "[4294967296,4294967296]", 0, 8) + "}", 8));
  write_bytes(dir / "rule_misaligned.safetensors",
              crafted("{" + entry("a", "F4", "[3]", 0, 1) + "}", 1));
  write_bytes(dir / "rule_size.safetensors",
              crafted("{" + entry("a", "F32", "[3]", 0, 8) + "}", 8));
  write_bytes(dir / "rule_incomplete.safetensors",
              crafted("{" + entry("a", "U8", "[4]", 0, 4) + "}", 3));
  write_bytes(dir / "rule_metadata_type.safetensors",
              crafted("{\"__metadata__\":{\"k\":7}," + entry("a", "U8", "[1]", 0, 1) + "}", 1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  try {
    write_seeds(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warpload_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
