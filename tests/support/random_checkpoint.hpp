// Writing safetensors files of random contents whose expected bytes the test keeps: the
// bytes come from the test's own generator, never from a warpload reader.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "warpload/format.hpp"

namespace warpload::testing {

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> shape;
};

inline std::uint64_t spec_bytes(const TensorSpec& t) {
  std::uint64_t n = dtype_bits(t.dtype);
  for (auto d : t.shape) n *= d;
  return n / 8;
}

// Tensor name -> the bytes written for it.
using TensorBytes = std::map<std::string, std::vector<std::byte>>;

// Writes `specs` in order with random contents drawn from `seed` and records each tensor's
// bytes in `bytes`. `header_alignment` 1 leaves the JSON unpadded (odd data offsets).
inline void write_random_file(const std::filesystem::path& path,
                              const std::vector<TensorSpec>& specs, std::uint32_t seed,
                              TensorBytes& bytes, std::size_t header_alignment = 8,
                              std::map<std::string, std::string> metadata = {}) {
  std::mt19937 rng(seed);
  SafetensorsWriter writer;
  writer.set_header_alignment(header_alignment);
  writer.set_metadata(std::move(metadata));
  for (const auto& t : specs) {
    auto& data = bytes[t.name];
    data.resize(spec_bytes(t));
    for (auto& b : data) b = static_cast<std::byte>(rng());
    writer.add(t.name, t.dtype, t.shape, std::span<const std::byte>(data));
  }
  writer.write(path);
}

}  // namespace warpload::testing
