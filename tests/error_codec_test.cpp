// The error codec (src/common/error_codec.*): every kind survives a round trip with its
// fields, the prefix lands in front of the message, and bad input never throws.
#include "common/error_codec.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>

#include "warpload/error.hpp"

namespace warpload {
namespace {

const std::string kMessage = "model-00003.safetensors: tensor 'w': offset 4096\nsecond line";
const std::string kPrefix = "rank 1 of 4: ";

// Encodes `error`, decodes it with kPrefix and returns what the decoded exception holds.
std::exception_ptr round_trip(const std::exception& error) {
  return detail::decode_error(detail::encode_error(error), kPrefix);
}

template <typename E>
E rethrown_as(const std::exception_ptr& decoded) {
  try {
    std::rethrow_exception(decoded);
  } catch (const E& e) {
    EXPECT_EQ(std::string(e.what()), kPrefix + kMessage);
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "decoded as another type: " << e.what();
  }
  throw std::logic_error("unreachable");
}

TEST(ErrorCodec, InvalidFileKeepsEveryRule) {
  for (int r = 0; r <= static_cast<int>(FormatRule::kChecksumMismatch); ++r) {
    const auto rule = static_cast<FormatRule>(r);
    SCOPED_TRACE(format_rule_name(rule));
    const auto e = rethrown_as<InvalidFileError>(round_trip(InvalidFileError(rule, kMessage)));
    EXPECT_EQ(e.rule(), rule);
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidFile);
  }
}

TEST(ErrorCodec, IoErrorKeepsErrnoAndOffset) {
  const std::uint64_t big = (std::uint64_t{1} << 63) + 12345;
  for (const auto& [error_number, offset] : {std::pair{EIO, std::uint64_t{4096}}, std::pair{0, big},
                                             std::pair{ENOSPC, std::uint64_t{0}}}) {
    const auto e = rethrown_as<IoError>(round_trip(IoError(kMessage, error_number, offset)));
    EXPECT_EQ(e.error_number(), error_number);
    EXPECT_EQ(e.offset(), offset);
  }
}

TEST(ErrorCodec, EveryOtherKindKeepsItsType) {
  EXPECT_EQ(rethrown_as<NotFoundError>(round_trip(NotFoundError(kMessage))).kind(),
            ErrorKind::kNotFound);
  EXPECT_EQ(rethrown_as<UnsupportedError>(round_trip(UnsupportedError(kMessage))).kind(),
            ErrorKind::kUnsupported);
  EXPECT_EQ(rethrown_as<OutOfMemoryError>(round_trip(OutOfMemoryError(kMessage))).kind(),
            ErrorKind::kOutOfMemory);
  EXPECT_EQ(rethrown_as<CancelledError>(round_trip(CancelledError(kMessage))).kind(),
            ErrorKind::kCancelled);
  static_cast<void>(
      rethrown_as<std::invalid_argument>(round_trip(std::invalid_argument(kMessage))));
  // Anything else comes back as a plain runtime_error with its message.
  const std::exception_ptr other = round_trip(std::out_of_range(kMessage));
  try {
    std::rethrow_exception(other);
  } catch (const Error& e) {
    ADD_FAILURE() << "a foreign exception became a warpload error: " << e.what();
  } catch (const std::invalid_argument& e) {
    ADD_FAILURE() << "a foreign exception became invalid_argument: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), kPrefix + kMessage);
  }
}

TEST(ErrorCodec, ExceptionPointersEncodeLikeReferences) {
  const IoError error(kMessage, EIO, 7);
  EXPECT_EQ(detail::encode_error(std::make_exception_ptr(error)), detail::encode_error(error));
  EXPECT_EQ(detail::encode_error(std::make_exception_ptr(42)), "other\nunknown error");
  EXPECT_EQ(detail::encode_error(std::exception_ptr{}), "other\nunknown error");
}

TEST(ErrorCodec, ThrowDecodedErrorThrowsTheDecodedType) {
  EXPECT_THROW(detail::throw_decoded_error(detail::encode_error(NotFoundError(kMessage))),
               NotFoundError);
}

TEST(ErrorCodec, MalformedInputBecomesARuntimeErrorQuotingIt) {
  for (const std::string& bad :
       {std::string("no newline"), std::string("io:5\nmessage"), std::string("io:x:1\nm"),
        std::string("io:5:-1\nm"), std::string("invalid:999\nm"), std::string("invalid:\nm"),
        std::string("invalid:-1\nm"), std::string("frobnicated\nm"), std::string("")}) {
    SCOPED_TRACE(bad);
    std::exception_ptr decoded;
    ASSERT_NO_THROW(decoded = detail::decode_error(bad, kPrefix));
    try {
      std::rethrow_exception(decoded);
    } catch (const Error& e) {
      ADD_FAILURE() << "malformed input decoded as a warpload error: " << e.what();
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind(kPrefix + "malformed error status", 0), 0U) << what;
    }
  }
}

}  // namespace
}  // namespace warpload
