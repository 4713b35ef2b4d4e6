// printable(): text that comes from a file (tensor names, dtype strings, metadata keys) made
// safe to put in an error message. A hostile header can name a tensor with NUL, newlines,
// terminal escape sequences or 64 KiB of text; in a message those would cut what() short at
// the NUL (losing the rule's name), break the CLI's one-line error contract, drive the
// user's terminal, or bury the message. So: bytes below 0x20 and 0x7f become \xNN, a
// backslash becomes \\, and text longer than kMaxPrintableBytes is cut (on a UTF-8 character
// boundary) and ends with "...(N bytes)". Other bytes are kept: header text is valid UTF-8.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace warpload::detail {

inline constexpr std::size_t kMaxPrintableBytes = 200;

[[nodiscard]] inline std::string printable(std::string_view text) {
  std::size_t keep = text.size();
  if (keep > kMaxPrintableBytes) {
    keep = kMaxPrintableBytes;
    // Back up over UTF-8 continuation bytes so no character is split.
    while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xc0) == 0x80) --keep;
  }
  std::string out;
  out.reserve(keep + 16);
  for (std::size_t i = 0; i < keep; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else if (byte == '\\') {
      out += "\\\\";
    } else {
      out += static_cast<char>(byte);
    }
  }
  if (keep < text.size()) {
    out += "...(" + std::to_string(text.size()) + " bytes)";
  }
  return out;
}

}  // namespace warpload::detail
