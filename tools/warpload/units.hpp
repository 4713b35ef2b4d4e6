// Byte sizes on the command line and in human-readable output.
//
// parse_size() accepts a non-negative decimal number with an optional unit, case-insensitive:
//   (none) or B     bytes (the number must then be whole)
//   K, Ki, KiB      2^10     KB  10^3
//   M, Mi, MiB      2^20     MB  10^6
//   G, Gi, GiB      2^30     GB  10^9
//   T, Ti, TiB      2^40     TB  10^12
// A single letter is binary, as in dd(1) and fio. The number may have a fraction
// ("1.5GiB"); the result is rounded down to whole bytes.
#pragma once

#include <fmt/core.h>

#include <cctype>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

namespace warpload::cli {

[[nodiscard]] inline std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::size_t pos = 0;
  std::uint64_t whole = 0;
  bool any_digit = false;
  for (; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos) {
    any_digit = true;
    if (__builtin_mul_overflow(whole, std::uint64_t{10}, &whole) ||
        __builtin_add_overflow(whole, static_cast<std::uint64_t>(text[pos] - '0'), &whole)) {
      return std::nullopt;
    }
  }
  // Up to 12 fraction digits, as numerator / 10^k; further digits cannot change the result.
  std::uint64_t fraction = 0;
  std::uint64_t fraction_scale = 1;
  if (pos < text.size() && text[pos] == '.') {
    for (++pos; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos) {
      any_digit = true;
      if (fraction_scale < 1'000'000'000'000ULL) {
        fraction = fraction * 10 + static_cast<std::uint64_t>(text[pos] - '0');
        fraction_scale *= 10;
      }
    }
  }
  if (!any_digit) {
    return std::nullopt;
  }

  std::string unit;
  for (; pos < text.size(); ++pos) {
    unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(text[pos]))));
  }
  std::uint64_t multiplier = 1;
  if (!unit.empty() && unit != "b") {
    static constexpr std::string_view kPrefixes = "kmgt";
    const std::size_t power = kPrefixes.find(unit[0]);
    if (power == std::string_view::npos) {
      return std::nullopt;
    }
    const std::string_view rest = std::string_view(unit).substr(1);
    std::uint64_t base = 0;
    if (rest.empty() || rest == "i" || rest == "ib") {
      base = 1024;
    } else if (rest == "b") {
      base = 1000;
    } else {
      return std::nullopt;
    }
    for (std::size_t i = 0; i <= power; ++i) {
      multiplier *= base;
    }
  }
  if (multiplier == 1 && fraction != 0) return std::nullopt;  // no fractional bytes

  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(whole, multiplier, &bytes)) {
    return std::nullopt;
  }
  // Below one unit, so long double's 64-bit mantissa holds it exactly enough; rounds down.
  const auto fraction_bytes = static_cast<std::uint64_t>(static_cast<long double>(fraction) *
                                                         static_cast<long double>(multiplier) /
                                                         static_cast<long double>(fraction_scale));
  if (__builtin_add_overflow(bytes, fraction_bytes, &bytes)) {
    return std::nullopt;
  }
  return bytes;
}

// "512 B", "4.00 KiB", "1.50 MiB", "2.00 GiB".
[[nodiscard]] inline std::string format_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) {
    return fmt::format("{} B", bytes);
  }
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.2f} {}", value, kUnits[unit]);
}

// "1.234 s", "12.3 ms".
[[nodiscard]] inline std::string format_seconds(double seconds) {
  if (seconds < 1) {
    return fmt::format("{:.1f} ms", seconds * 1e3);
  }
  return fmt::format("{:.3f} s", seconds);
}

}  // namespace warpload::cli
