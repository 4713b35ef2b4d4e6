// libFuzzer target: parse_header() on arbitrary bytes taken as a whole file.
//
// The input is the file: 8-byte length, header, data. parse_header() must either return a
// header that describes exactly these bytes (fuzz_checks.hpp) or throw InvalidFileError naming
// the file; anything else (another exception, a sanitizer report, a hang) is a crash.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "fuzz_checks.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::string_view kFile = "fuzz.safetensors";
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const warpload::Header header = warpload::parse_header(bytes, size, kFile);
    warpload::fuzz::check_header(header, size);
  } catch (const warpload::InvalidFileError& e) {
    warpload::fuzz::check(std::string_view(e.what()).starts_with(std::string(kFile) + ": "),
                          "message does not start with the file: " + std::string(e.what()));
    warpload::fuzz::check(std::string_view(e.what()).ends_with(
                              "(" + std::string(warpload::format_rule_name(e.rule())) + ")"),
                          "message does not end with its rule: " + std::string(e.what()));
  }
  return 0;
}
