#include "common/error_codec.hpp"

#include <charconv>
#include <cstdint>
#include <optional>
#include <stdexcept>

#include "common/printable.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

// The last FormatRule: decoding refuses numbers past it.
constexpr auto kLastRule = FormatRule::kChecksumMismatch;

template <typename T>
std::optional<T> parse_number(std::string_view text) {
  T value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return std::nullopt;
  }
  return value;
}

std::string code_of(const std::exception& error) {
  if (const auto* e = dynamic_cast<const InvalidFileError*>(&error)) {
    return "invalid:" + std::to_string(static_cast<int>(e->rule()));
  }
  if (const auto* e = dynamic_cast<const IoError*>(&error)) {
    return "io:" + std::to_string(e->error_number()) + ":" + std::to_string(e->offset());
  }
  if (const auto* e = dynamic_cast<const Error*>(&error)) {
    switch (e->kind()) {
      case ErrorKind::kNotFound:
        return "notfound";
      case ErrorKind::kUnsupported:
        return "unsupported";
      case ErrorKind::kOutOfMemory:
        return "oom";
      case ErrorKind::kCancelled:
        return "cancelled";
      case ErrorKind::kInvalidFile:
      case ErrorKind::kIo:
        break;  // an Error of these kinds that is not their class: keep the message only
    }
    return "other";
  }
  if (dynamic_cast<const std::invalid_argument*>(&error) != nullptr) return "argument";
  return "other";
}

std::exception_ptr malformed(std::string_view encoded, std::string_view prefix) {
  return std::make_exception_ptr(std::runtime_error(
      std::string(prefix) + "malformed error status '" + printable(encoded) + "'"));
}

}  // namespace

std::string encode_error(const std::exception& error) {
  return code_of(error) + "\n" + error.what();
}

std::string encode_error(const std::exception_ptr& error) {
  if (!error) return "other\nunknown error";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return encode_error(e);
  } catch (...) {
    return "other\nunknown error";
  }
}

std::exception_ptr decode_error(std::string_view encoded, std::string_view prefix) {
  const std::size_t newline = encoded.find('\n');
  if (newline == std::string_view::npos) return malformed(encoded, prefix);
  const std::string_view code = encoded.substr(0, newline);
  const std::string message = std::string(prefix) + std::string(encoded.substr(newline + 1));

  if (code.starts_with("invalid:")) {
    const auto rule = parse_number<int>(code.substr(8));
    if (!rule || *rule < 0 || *rule > static_cast<int>(kLastRule)) {
      return malformed(encoded, prefix);
    }
    return std::make_exception_ptr(InvalidFileError(static_cast<FormatRule>(*rule), message));
  }
  if (code.starts_with("io:")) {
    const std::string_view numbers = code.substr(3);
    const std::size_t colon = numbers.find(':');
    if (colon == std::string_view::npos) return malformed(encoded, prefix);
    const auto error_number = parse_number<int>(numbers.substr(0, colon));
    const auto offset = parse_number<std::uint64_t>(numbers.substr(colon + 1));
    if (!error_number || !offset) return malformed(encoded, prefix);
    return std::make_exception_ptr(IoError(message, *error_number, *offset));
  }
  if (code == "notfound") return std::make_exception_ptr(NotFoundError(message));
  if (code == "unsupported") return std::make_exception_ptr(UnsupportedError(message));
  if (code == "oom") return std::make_exception_ptr(OutOfMemoryError(message));
  if (code == "cancelled") return std::make_exception_ptr(CancelledError(message));
  if (code == "argument") return std::make_exception_ptr(std::invalid_argument(message));
  if (code == "other") return std::make_exception_ptr(std::runtime_error(message));
  return malformed(encoded, prefix);
}

void throw_decoded_error(std::string_view encoded, std::string_view prefix) {
  std::rethrow_exception(decode_error(encoded, prefix));
}

}  // namespace warpload::detail
