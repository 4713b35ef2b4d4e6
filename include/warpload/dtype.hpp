// Element types of the safetensors format.
//
// Names are the exact strings of the format ("BF16", "F8_E4M3", ...). F4 and F6_* are
// sub-byte types: a tensor of them is valid only when its total bit count is a multiple of 8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace warpload {

enum class DType : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
  kC64,
  kF8_E4M3,
  kF8_E5M2,
  kF8_E8M0,
  kF8_E4M3FNUZ,
  kF8_E5M2FNUZ,
  kF4,
  kF6_E2M3,
  kF6_E3M2,
};

inline constexpr std::size_t kDTypeCount = 22;

// Bits of one element: 4 for F4, 6 for F6_*, 8 * byte size otherwise.
[[nodiscard]] std::uint32_t dtype_bits(DType dtype) noexcept;

// The format's name for the type, e.g. "BF16".
[[nodiscard]] std::string_view dtype_name(DType dtype) noexcept;

// Parses a format name; nullopt for anything that is not one of the 22 names (case-sensitive).
[[nodiscard]] std::optional<DType> parse_dtype(std::string_view name) noexcept;

// Alignment in bytes a view of this type gets: the element size (8 for C64), 1 for sub-byte
// types.
[[nodiscard]] std::size_t dtype_alignment(DType dtype) noexcept;

}  // namespace warpload
