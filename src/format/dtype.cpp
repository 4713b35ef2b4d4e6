#include "warpload/dtype.hpp"

#include <array>

namespace warpload {
namespace {

struct DTypeTraits {
  DType dtype;
  std::string_view name;
  std::uint32_t bits;
};

// Indexed by the enum's value; the static_asserts below keep the two in step.
constexpr std::array<DTypeTraits, kDTypeCount> kTraits = {{
    {DType::kBool, "BOOL", 8},
    {DType::kU8, "U8", 8},
    {DType::kI8, "I8", 8},
    {DType::kI16, "I16", 16},
    {DType::kU16, "U16", 16},
    {DType::kF16, "F16", 16},
    {DType::kBF16, "BF16", 16},
    {DType::kI32, "I32", 32},
    {DType::kU32, "U32", 32},
    {DType::kF32, "F32", 32},
    {DType::kF64, "F64", 64},
    {DType::kI64, "I64", 64},
    {DType::kU64, "U64", 64},
    {DType::kC64, "C64", 64},
    {DType::kF8_E4M3, "F8_E4M3", 8},
    {DType::kF8_E5M2, "F8_E5M2", 8},
    {DType::kF8_E8M0, "F8_E8M0", 8},
    {DType::kF8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {DType::kF8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {DType::kF4, "F4", 4},
    {DType::kF6_E2M3, "F6_E2M3", 6},
    {DType::kF6_E3M2, "F6_E3M2", 6},
}};

constexpr bool traits_match_enum() {
  for (std::size_t i = 0; i < kTraits.size(); ++i) {
    if (static_cast<std::size_t>(kTraits[i].dtype) != i) {
      return false;
    }
  }
  return true;
}
static_assert(traits_match_enum(), "kTraits must be in DType order");
static_assert(static_cast<std::size_t>(DType::kF6_E3M2) + 1 == kDTypeCount);

const DTypeTraits& traits(DType dtype) noexcept { return kTraits[static_cast<std::size_t>(dtype)]; }

}  // namespace

std::uint32_t dtype_bits(DType dtype) noexcept { return traits(dtype).bits; }

std::string_view dtype_name(DType dtype) noexcept { return traits(dtype).name; }

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (const DTypeTraits& t : kTraits) {
    if (t.name == name) {
      return t.dtype;
    }
  }
  return std::nullopt;
}

std::size_t dtype_alignment(DType dtype) noexcept {
  const std::uint32_t bits = traits(dtype).bits;
  return bits < 8 ? 1 : bits / 8;
}

}  // namespace warpload
