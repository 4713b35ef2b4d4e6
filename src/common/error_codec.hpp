// The error codec: an exception as text and back, so an error can cross a process boundary
// (the multi-rank error agreement all-gathers every rank's status as text) and be rethrown
// there as the same C++ type.
//
// Encoding: "<code>\n<message>", where <code> is
//   invalid:<FormatRule number>  InvalidFileError
//   notfound                     NotFoundError
//   io:<errno>:<file offset>     IoError
//   unsupported                  UnsupportedError
//   oom                          OutOfMemoryError
//   cancelled                    CancelledError
//   argument                     std::invalid_argument (a caller's mistake)
//   other                        anything else (rethrown as std::runtime_error)
// The message is kept byte for byte (it may contain newlines). Both sides must run the same
// warpload version; the codes are not a stable wire format.
//
// Thread safety: pure functions.
#pragma once

#include <exception>
#include <string>
#include <string_view>

namespace warpload::detail {

// Encodes `error` (see above).
[[nodiscard]] std::string encode_error(const std::exception& error);
// Encodes the exception `error` holds; a null pointer or a non-std exception is "other".
[[nodiscard]] std::string encode_error(const std::exception_ptr& error);

// The exception `encoded` describes, of the same type, its message `prefix` + the original
// message. Never throws for bad input: text that is not an encoding (unknown code, bad
// numbers, an out-of-range rule, no newline) becomes a std::runtime_error saying so and
// quoting it.
[[nodiscard]] std::exception_ptr decode_error(std::string_view encoded,
                                              std::string_view prefix = {});

// std::rethrow_exception(decode_error(encoded, prefix)).
[[noreturn]] void throw_decoded_error(std::string_view encoded, std::string_view prefix = {});

}  // namespace warpload::detail
