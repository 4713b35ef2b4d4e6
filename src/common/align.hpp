// Alignment arithmetic for read planning: the only copies in the tree. Offsets and sizes are
// bytes; `a` is any non-zero alignment (powers of two in practice, but nothing here needs it).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace warpload::detail {

// The largest multiple of `a` that is <= v.
[[nodiscard]] constexpr std::uint64_t align_down(std::uint64_t v, std::uint64_t a) noexcept {
  return v / a * a;
}

// The smallest multiple of `a` that is >= v. Throws std::overflow_error when that does not fit
// in 64 bits (v within a - 1 of 2^64), instead of wrapping to a small number.
[[nodiscard]] constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) {
  const std::uint64_t down = align_down(v, a);
  if (down == v) return v;
  std::uint64_t up = 0;
  if (__builtin_add_overflow(down, a, &up)) {
    throw std::overflow_error("align_up: " + std::to_string(v) + " rounded up to a multiple of " +
                              std::to_string(a) + " does not fit in 64 bits");
  }
  return up;
}

}  // namespace warpload::detail
