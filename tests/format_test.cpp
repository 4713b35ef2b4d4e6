// Tests for the safetensors format layer: dtypes, the header parser (one crafted file per
// validation rule, and the order in which the reference applies them) and the writer, checked
// against the independent reader in support/reference_reader.hpp.

#include "warpload/format.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/reference_reader.hpp"
#include "support/sanitizers.hpp"
#include "support/temp_dir.hpp"
#include "warpload/dtype.hpp"
#include "warpload/error.hpp"

namespace warpload {
namespace {

using testing::TempDir;

constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;

// ---- crafting files ---------------------------------------------------------------------------

std::string le64(std::uint64_t value) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  }
  return out;
}

// A file: the length prefix, `json` as the header, then `data_size` zero bytes.
std::string crafted(std::string_view json, std::uint64_t data_size = 0) {
  return le64(json.size()) + std::string(json) + std::string(data_size, '\0');
}

// One tensor entry: "name":{"dtype":...,"shape":...,"data_offsets":[begin,end]}.
std::string entry(std::string_view name, std::string_view dtype, std::string_view shape,
                  std::uint64_t begin, std::uint64_t end) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) +
         "\",\"shape\":" + std::string(shape) + ",\"data_offsets\":[" + std::to_string(begin) +
         "," + std::to_string(end) + "]}";
}

std::span<const std::byte> as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

class FormatTest : public ::testing::Test {
 protected:
  // Parses `bytes` from memory and from a file; both must be refused under `rule`, with a
  // message naming the file, the rule and, when given, the tensor. Returns the file's message.
  std::string expect_invalid(const std::string& bytes, FormatRule rule,
                             const char* tensor = nullptr) {
    const std::string rule_suffix = "(" + std::string(format_rule_name(rule)) + ")";
    try {
      (void)parse_header(as_bytes(bytes), bytes.size(), "memory.safetensors");
      ADD_FAILURE() << "parse_header accepted a file that breaks " << rule_suffix;
    } catch (const InvalidFileError& e) {
      EXPECT_EQ(format_rule_name(e.rule()), format_rule_name(rule)) << e.what();
      EXPECT_TRUE(std::string_view(e.what()).starts_with("memory.safetensors: ")) << e.what();
      EXPECT_TRUE(std::string_view(e.what()).ends_with(rule_suffix)) << e.what();
      if (tensor != nullptr) {
        EXPECT_TRUE(contains(e.what(), "tensor '" + std::string(tensor) + "'")) << e.what();
      }
    }

    const std::filesystem::path path = dir_ / "crafted.safetensors";
    write_file(path, bytes);
    try {
      (void)read_header(path);
      ADD_FAILURE() << "read_header accepted a file that breaks " << rule_suffix;
    } catch (const InvalidFileError& e) {
      EXPECT_EQ(format_rule_name(e.rule()), format_rule_name(rule)) << e.what();
      EXPECT_TRUE(std::string_view(e.what()).starts_with(path.string() + ": ")) << e.what();
      if (tensor != nullptr) {
        EXPECT_TRUE(contains(e.what(), "tensor '" + std::string(tensor) + "'")) << e.what();
      }
      return e.what();
    }
    return {};
  }

  // Parses a well-formed file both ways and returns the header read from the file.
  Header expect_valid(const std::string& bytes) {
    EXPECT_NO_THROW((void)parse_header(as_bytes(bytes), bytes.size(), "memory.safetensors"));
    const std::filesystem::path path = dir_ / "valid.safetensors";
    write_file(path, bytes);
    return read_header(path);
  }

  TempDir dir_;
};

// ---- dtypes and rule names ---------------------------------------------------------------------

TEST(DTypeTest, NamesBitsAndAlignmentOfAll22) {
  struct Expected {
    DType dtype;
    const char* name;
    std::uint32_t bits;
    std::size_t alignment;
  };
  const std::vector<Expected> all = {
      {DType::kBool, "BOOL", 8, 1},
      {DType::kU8, "U8", 8, 1},
      {DType::kI8, "I8", 8, 1},
      {DType::kI16, "I16", 16, 2},
      {DType::kU16, "U16", 16, 2},
      {DType::kF16, "F16", 16, 2},
      {DType::kBF16, "BF16", 16, 2},
      {DType::kI32, "I32", 32, 4},
      {DType::kU32, "U32", 32, 4},
      {DType::kF32, "F32", 32, 4},
      {DType::kF64, "F64", 64, 8},
      {DType::kI64, "I64", 64, 8},
      {DType::kU64, "U64", 64, 8},
      {DType::kC64, "C64", 64, 8},
      {DType::kF8_E4M3, "F8_E4M3", 8, 1},
      {DType::kF8_E5M2, "F8_E5M2", 8, 1},
      {DType::kF8_E8M0, "F8_E8M0", 8, 1},
      {DType::kF8_E4M3FNUZ, "F8_E4M3FNUZ", 8, 1},
      {DType::kF8_E5M2FNUZ, "F8_E5M2FNUZ", 8, 1},
      {DType::kF4, "F4", 4, 1},
      {DType::kF6_E2M3, "F6_E2M3", 6, 1},
      {DType::kF6_E3M2, "F6_E3M2", 6, 1},
  };
  ASSERT_EQ(all.size(), kDTypeCount);
  for (const Expected& e : all) {
    SCOPED_TRACE(e.name);
    EXPECT_EQ(dtype_name(e.dtype), e.name);
    EXPECT_EQ(dtype_bits(e.dtype), e.bits);
    EXPECT_EQ(dtype_alignment(e.dtype), e.alignment);
    EXPECT_EQ(parse_dtype(e.name), e.dtype);
  }
}

TEST(DTypeTest, ParseIsExact) {
  for (const char* name : {"", "f32", "Bf16", "F32 ", " F32", "F8", "F8_E4M3fnuz", "C128"}) {
    EXPECT_FALSE(parse_dtype(name).has_value()) << "'" << name << "'";
  }
  EXPECT_FALSE(parse_dtype(std::string_view("F32\0", 4)).has_value());
}

TEST(FormatRuleTest, NamesAreStableSnakeCase) {
  EXPECT_EQ(format_rule_name(FormatRule::kHeaderTooSmall), "header_too_small");
  EXPECT_EQ(format_rule_name(FormatRule::kHeaderTooLarge), "header_too_large");
  EXPECT_EQ(format_rule_name(FormatRule::kInvalidHeaderLength), "invalid_header_length");
  EXPECT_EQ(format_rule_name(FormatRule::kInvalidHeader), "invalid_header");
  EXPECT_EQ(format_rule_name(FormatRule::kInvalidHeaderDeserialization),
            "invalid_header_deserialization");
  EXPECT_EQ(format_rule_name(FormatRule::kDuplicateName), "duplicate_name");
  EXPECT_EQ(format_rule_name(FormatRule::kInvalidOffset), "invalid_offset");
  EXPECT_EQ(format_rule_name(FormatRule::kValidationOverflow), "validation_overflow");
  EXPECT_EQ(format_rule_name(FormatRule::kMisalignedSlice), "misaligned_slice");
  EXPECT_EQ(format_rule_name(FormatRule::kTensorInvalidInfo), "tensor_invalid_info");
  EXPECT_EQ(format_rule_name(FormatRule::kMetadataIncompleteBuffer), "metadata_incomplete_buffer");
  EXPECT_EQ(format_rule_name(FormatRule::kDuplicateTensor), "duplicate_tensor");
  EXPECT_EQ(format_rule_name(FormatRule::kInvalidIndex), "invalid_index");
}

TEST(TensorInfoTest, NumelOfScalarAndEmpty) {
  TensorInfo scalar;
  EXPECT_EQ(scalar.numel(), 1u);
  TensorInfo empty;
  empty.shape = {3, 0, 7};
  EXPECT_EQ(empty.numel(), 0u);
  TensorInfo matrix;
  matrix.shape = {4096, 11008};
  EXPECT_EQ(matrix.numel(), 4096u * 11008u);
}

// ---- steps 1-3: the length prefix --------------------------------------------------------------

TEST_F(FormatTest, FilesShorterThan8BytesAreTooSmall) {
  for (std::size_t size = 0; size < 8; ++size) {
    SCOPED_TRACE(size);
    const std::string message =
        expect_invalid(std::string(size, '\x01'), FormatRule::kHeaderTooSmall);
    EXPECT_TRUE(contains(message, std::to_string(size) + " bytes")) << message;
  }
}

TEST_F(FormatTest, HeaderLengthOverTheLimitIsTooLarge) {
  const std::string message =
      expect_invalid(le64(kMaxHeaderLength + 1) + "{}", FormatRule::kHeaderTooLarge);
  EXPECT_TRUE(contains(message, "100000001")) << message;
  expect_invalid(le64(std::numeric_limits<std::uint64_t>::max()), FormatRule::kHeaderTooLarge);
  // Exactly at the limit is allowed by this rule; the file is then too short for it.
  expect_invalid(le64(kMaxHeaderLength) + "{}", FormatRule::kInvalidHeaderLength);
}

TEST_F(FormatTest, HeaderLengthPastEndOfFile) {
  const std::string message =
      expect_invalid(le64(100) + std::string(50, ' '), FormatRule::kInvalidHeaderLength);
  EXPECT_TRUE(contains(message, "100")) << message;
  EXPECT_TRUE(contains(message, "58 bytes")) << message;
  expect_invalid(le64(1), FormatRule::kInvalidHeaderLength);
}

// ---- step 4: UTF-8 ----------------------------------------------------------------------------

TEST_F(FormatTest, HeaderThatIsNotUtf8IsInvalid) {
  expect_invalid(crafted("{\"\xff\":" + std::string("{}") + "}"), FormatRule::kInvalidHeader);
  // Truncated 3-byte sequence, overlong '/', and a UTF-16 surrogate encoded in UTF-8.
  expect_invalid(crafted("{\"\xe6\x9d\":1}"), FormatRule::kInvalidHeader);
  expect_invalid(crafted("{\"\xc0\xaf\":1}"), FormatRule::kInvalidHeader);
  expect_invalid(crafted("{\"\xed\xa0\x80\":1}"), FormatRule::kInvalidHeader);
  // Invalid bytes in the padding count too.
  expect_invalid(crafted("{}   \x80"), FormatRule::kInvalidHeader);
}

// ---- step 5: JSON shape ------------------------------------------------------------------------

TEST_F(FormatTest, BrokenJsonIsADeserializationError) {
  const std::string good = entry("a", "F32", "[1]", 0, 4);
  for (const std::string& json : std::vector<std::string>{
           "",
           "   ",
           "not json",
           "{",
           "}",
           "{\"a\":",
           "{\"a\"}",
           "{\"a\" " + good.substr(4) + "}",
           "{" + good,
           "{" + good + ",}",
           "{" + good + " " + entry("b", "F32", "[0]", 4, 4) + "}",
           "{" + good + "} x",
           "{" + good + "}{}",
           "{" + good + "}}",
           "{" + good + "},",
           "{" + good + "}]",
           "{'a':1}",
           "{a:1}",
           std::string("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}"),
           "{\"a\":{\"dtype\":\"F32\",,\"shape\":[1],\"data_offsets\":[0,4]}}",
           "{\"a\":{\"dtype\":\"F32\" \"shape\":[1],\"data_offsets\":[0,4]}}",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]]}",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4}}",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}",
           "{\"a\n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
           "{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
           "{\"\\x41\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
           "\xef\xbb\xbf{" + good + "}"}) {  // a byte-order mark is not JSON whitespace
    SCOPED_TRACE(json);
    expect_invalid(crafted(json, 4), FormatRule::kInvalidHeaderDeserialization);
  }
  // A NUL after the object (some writers pad with NULs; the reference refuses them too).
  expect_invalid(crafted(std::string("{}\0", 3)), FormatRule::kInvalidHeaderDeserialization);
}

TEST_F(FormatTest, RootMustBeAnObject) {
  for (const char* json : {"[]", "null", "42", "\"x\"", "true", "[{}]"}) {
    SCOPED_TRACE(json);
    expect_invalid(crafted(json), FormatRule::kInvalidHeaderDeserialization);
  }
}

TEST_F(FormatTest, WrongShapedTensorEntriesAreDeserializationErrors) {
  struct Case {
    std::string json;
    const char* what;  // a piece of the message
  };
  const std::vector<Case> cases = {
      {"\"t\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}", "F33"},
      {"\"t\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}", "f32"},
      {"\"t\":{\"dtype\":\"bf16\",\"shape\":[1],\"data_offsets\":[0,2]}", "bf16"},
      {"\"t\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}", "dtype"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[[1]],\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":null,\"data_offsets\":[0,4]}", "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,4]}",
       "shape"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}", "not 1"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[]}", "not 0"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}", "more than 2"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-1,4]}", "data_offsets"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}", "data_offsets"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}", "data_offsets"},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"0\":4}}", "data_offsets"},
      {"\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}", "missing field \"dtype\""},
      {"\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}", "missing field \"shape\""},
      {"\"t\":{\"dtype\":\"F32\",\"shape\":[1]}", "missing field \"data_offsets\""},
      {"\"t\":{}", "missing field"},
      {"\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", "twice"},
      {"\"t\":null", "object"},
      {"\"t\":4", "object"},
      {"\"t\":[\"F32\",[1],[0,4]]", "object"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    const std::string message = expect_invalid(crafted("{" + c.json + "}", 4),
                                               FormatRule::kInvalidHeaderDeserialization, "t");
    EXPECT_TRUE(contains(message, c.what)) << message;
  }
}

TEST_F(FormatTest, MetadataMustMapStringsToStrings) {
  const std::string tensor = entry("t", "U8", "[1]", 0, 1);
  for (const char* metadata :
       {"{\"k\":1}", "{\"k\":null}", "{\"k\":[\"v\"]}", "{\"k\":{\"a\":\"b\"}}", "\"v\"", "[]", "1",
        "{\"a\":\"b\",\"k\":true}"}) {
    SCOPED_TRACE(metadata);
    const std::string message = expect_invalid(
        crafted("{\"__metadata__\":" + std::string(metadata) + "," + tensor + "}", 1),
        FormatRule::kInvalidHeaderDeserialization);
    EXPECT_TRUE(contains(message, "__metadata__")) << message;
  }
}

// ---- step 6: duplicate keys --------------------------------------------------------------------

TEST_F(FormatTest, DuplicateKeysAreRefused) {
  const std::string a = entry("a", "U8", "[1]", 0, 1);
  const std::string b = entry("b", "U8", "[1]", 1, 2);
  expect_invalid(crafted("{" + a + "," + b + "," + a + "}", 2), FormatRule::kDuplicateName, "a");
  // Escapes resolve before names compare: "\u0061" is "a".
  expect_invalid(crafted("{" + a + "," + entry("\\u0061", "U8", "[1]", 1, 2) + "}", 2),
                 FormatRule::kDuplicateName, "a");
  const std::string message =
      expect_invalid(crafted("{\"__metadata__\":{},\"__metadata__\":null," + a + "}", 1),
                     FormatRule::kDuplicateName);
  EXPECT_TRUE(contains(message, "__metadata__")) << message;
  const std::string key_message =
      expect_invalid(crafted("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," + a + "}", 1),
                     FormatRule::kDuplicateName);
  EXPECT_TRUE(contains(key_message, "'k'")) << key_message;
}

// ---- step 7: layout ----------------------------------------------------------------------------

TEST_F(FormatTest, GapBetweenTensorsIsAnInvalidOffset) {
  const std::string message = expect_invalid(
      crafted("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}",
              12),
      FormatRule::kInvalidOffset, "b");
  EXPECT_TRUE(contains(message, "[8, 12)")) << message;
  EXPECT_TRUE(contains(message, "ends at 4")) << message;
  // After an empty tensor at [0, 0), a tensor at 4 leaves a gap too.
  const std::string after_empty = expect_invalid(
      crafted("{" + entry("e", "F32", "[0]", 0, 0) + "," + entry("b", "F32", "[1]", 4, 8) + "}", 8),
      FormatRule::kInvalidOffset, "b");
  EXPECT_TRUE(contains(after_empty, "gap")) << after_empty;
}

TEST_F(FormatTest, OverlappingTensorsAreAnInvalidOffset) {
  const std::string message = expect_invalid(
      crafted("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}",
              12),
      FormatRule::kInvalidOffset, "b");
  EXPECT_TRUE(contains(message, "[4, 12)")) << message;
  EXPECT_TRUE(contains(message, "overlap")) << message;
}

TEST_F(FormatTest, FirstTensorMustStartAtZero) {
  const std::string message = expect_invalid(crafted("{" + entry("a", "F32", "[1]", 4, 8) + "}", 8),
                                             FormatRule::kInvalidOffset, "a");
  EXPECT_TRUE(contains(message, "[4, 8)")) << message;
}

TEST_F(FormatTest, EndBeforeBeginIsAnInvalidOffset) {
  const std::string message = expect_invalid(
      crafted("{" + entry("a", "U8", "[0]", 0, 0) + "," + entry("b", "F32", "[1]", 0, 4) + "," +
                  entry("c", "F32", "[1]", 4, 2) + "}",
              4),
      FormatRule::kInvalidOffset);
  // Sorted by (begin, end): a [0,0), b [0,4), c [4,2): c is the culprit.
  EXPECT_TRUE(contains(message, "tensor 'c'")) << message;
  EXPECT_TRUE(contains(message, "[4, 2)")) << message;
}

TEST_F(FormatTest, ShapeProductOverflowIsReported) {
  const std::string message =
      expect_invalid(crafted("{" + entry("a", "U8", "[4294967296,4294967296]", 0, 0) + "}"),
                     FormatRule::kValidationOverflow, "a");
  EXPECT_TRUE(contains(message, "[4294967296, 4294967296]")) << message;
}

TEST_F(FormatTest, BitCountOverflowIsReported) {
  // 2^62 elements fit in 64 bits; 2^62 x 32 bits do not.
  expect_invalid(crafted("{" + entry("a", "F32", "[4611686018427387904]", 0, 0) + "}"),
                 FormatRule::kValidationOverflow, "a");
  // 2^61 x 4 bits = 2^63 bits is fine arithmetic, and then simply the wrong size.
  expect_invalid(crafted("{" + entry("a", "F4", "[2305843009213693952]", 0, 0) + "}"),
                 FormatRule::kTensorInvalidInfo, "a");
}

TEST_F(FormatTest, SubByteTensorsMustFillWholeBytes) {
  const std::string message = expect_invalid(crafted("{" + entry("a", "F4", "[3]", 0, 2) + "}", 2),
                                             FormatRule::kMisalignedSlice, "a");
  EXPECT_TRUE(contains(message, "12 bits")) << message;
  expect_invalid(crafted("{" + entry("a", "F6_E2M3", "[2]", 0, 2) + "}", 2),
                 FormatRule::kMisalignedSlice, "a");
  // 4 x 6 bits = 3 bytes and 2 x 4 bits = 1 byte are fine.
  expect_valid(crafted(
      "{" + entry("a", "F6_E3M2", "[4]", 0, 3) + "," + entry("b", "F4", "[1,2]", 3, 4) + "}", 4));
}

TEST_F(FormatTest, SizeThatDisagreesWithDtypeAndShape) {
  const std::string message = expect_invalid(crafted("{" + entry("a", "F32", "[2]", 0, 4) + "}", 4),
                                             FormatRule::kTensorInvalidInfo, "a");
  EXPECT_TRUE(contains(message, "[0, 4)")) << message;
  EXPECT_TRUE(contains(message, "8")) << message;
  expect_invalid(crafted("{" + entry("a", "BF16", "[]", 0, 4) + "}", 4),
                 FormatRule::kTensorInvalidInfo, "a");
}

// ---- step 8: file length -----------------------------------------------------------------------

TEST_F(FormatTest, FileLongerOrShorterThanTheHeaderSays) {
  const std::string json = "{" + entry("a", "F32", "[2]", 0, 8) + "}";
  const std::string longer =
      expect_invalid(crafted(json, 9), FormatRule::kMetadataIncompleteBuffer);
  EXPECT_TRUE(contains(longer, "9 bytes")) << longer;
  const std::string shorter =
      expect_invalid(crafted(json, 7), FormatRule::kMetadataIncompleteBuffer);
  EXPECT_TRUE(contains(shorter, "7 bytes")) << shorter;
  expect_invalid(crafted("{}", 1), FormatRule::kMetadataIncompleteBuffer);
  expect_valid(crafted(json, 8));
}

// ---- the reference's order when several rules apply ---------------------------------------------

TEST_F(FormatTest, EarlierRulesWin) {
  // Too large beats past-EOF; past-EOF is checked before the bytes are looked at.
  expect_invalid(le64(kMaxHeaderLength + 1), FormatRule::kHeaderTooLarge);
  expect_invalid(le64(10) + "\xff", FormatRule::kInvalidHeaderLength);
  // Invalid UTF-8 beats broken JSON.
  expect_invalid(crafted("{\xff"), FormatRule::kInvalidHeader);
  // A deserialization error anywhere beats an offset error in an earlier tensor.
  expect_invalid(
      crafted("{" + entry("a", "F32", "[1]", 4, 8) + "," + entry("b", "F32", "[-1]", 0, 4) + "}",
              8),
      FormatRule::kInvalidHeaderDeserialization, "b");
  // Duplicates are found while parsing, before any layout check.
  expect_invalid(
      crafted("{" + entry("a", "F32", "[1]", 4, 8) + "," + entry("a", "F32", "[1]", 0, 4) + "}", 8),
      FormatRule::kDuplicateName, "a");
  // For one tensor, offsets are checked before its size.
  expect_invalid(crafted("{" + entry("a", "F32", "[3]", 4, 8) + "}", 8), FormatRule::kInvalidOffset,
                 "a");
  // Tensors are checked one at a time in data order: a's size before b's offsets, wherever
  // they appear in the JSON.
  expect_invalid(
      crafted("{" + entry("b", "F32", "[1]", 8, 12) + "," + entry("a", "F32", "[2]", 0, 4) + "}",
              12),
      FormatRule::kTensorInvalidInfo, "a");
  // Overflow beats misalignment and size; misalignment beats size.
  expect_invalid(crafted("{" + entry("a", "F4", "[4611686018427387904,4]", 0, 1) + "}", 1),
                 FormatRule::kValidationOverflow, "a");
  expect_invalid(crafted("{" + entry("a", "F4", "[3]", 0, 7) + "}", 7),
                 FormatRule::kMisalignedSlice, "a");
  // Every tensor is checked before the file length.
  expect_invalid(crafted("{" + entry("a", "F32", "[2]", 0, 4) + "}", 99),
                 FormatRule::kTensorInvalidInfo, "a");
}

// ---- valid files -------------------------------------------------------------------------------

TEST_F(FormatTest, TensorsAreSortedByOffsetAndIndexedByName) {
  const std::string json = "{" + entry("c", "F32", "[1]", 6, 10) + "," +
                           entry("a", "U8", "[2]", 0, 2) + "," + entry("e2", "U8", "[0]", 2, 2) +
                           "," + entry("e1", "U8", "[0]", 2, 2) + "," +
                           entry("b", "I16", "[2]", 2, 6) + "}";
  const Header header = expect_valid(crafted(json, 10));
  std::vector<std::string> names;
  for (const TensorInfo& t : header.tensors) {
    names.push_back(t.name);
  }
  // Equal (begin, end) keep their order in the file.
  EXPECT_EQ(names, (std::vector<std::string>{"a", "e2", "e1", "b", "c"}));
  ASSERT_EQ(header.by_name.size(), 5u);
  for (std::size_t i = 0; i < header.tensors.size(); ++i) {
    EXPECT_EQ(header.by_name.at(header.tensors[i].name), i);
    EXPECT_EQ(header.find(header.tensors[i].name), &header.tensors[i]);
  }
  EXPECT_EQ(header.find("missing"), nullptr);
  EXPECT_EQ(header.find("c")->begin, 6u);
  EXPECT_EQ(header.data_offset(), 8 + json.size());
  EXPECT_EQ(header.data_size(), 10u);
}

TEST_F(FormatTest, ScalarsEmptyTensorsAndNoTensors) {
  const Header header = expect_valid(crafted("{" + entry("scalar", "F64", "[]", 0, 8) + "," +
                                                 entry("empty", "BF16", "[0,4096]", 8, 8) + "," +
                                                 entry("last_empty", "F4", "[3,0]", 8, 8) + "}",
                                             8));
  ASSERT_EQ(header.tensors.size(), 3u);
  const TensorInfo* scalar = header.find("scalar");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->numel(), 1u);
  EXPECT_EQ(scalar->nbytes(), 8u);
  EXPECT_EQ(header.find("empty")->numel(), 0u);
  EXPECT_EQ(header.find("empty")->shape, (std::vector<std::uint64_t>{0, 4096}));

  const Header none = expect_valid(crafted("{}"));
  EXPECT_TRUE(none.tensors.empty());
  EXPECT_EQ(none.data_size(), 0u);
  EXPECT_TRUE(expect_valid(crafted("{\"__metadata__\":{\"k\":\"v\"}}")).tensors.empty());
}

TEST_F(FormatTest, WhitespaceAroundTheObjectIsAccepted) {
  const std::string tensor = entry("a", "U8", "[1]", 0, 1);
  expect_valid(crafted(" \n\t\r{" + tensor + "}", 1));
  expect_valid(crafted("{ " + tensor + " }\n  \t  ", 1));
  expect_valid(
      crafted("{\n  \"a\" : { \"shape\" : [ 1 ] , \"data_offsets\" : [ 0 , 1 ] , "
              "\"dtype\" : \"U8\" }\n}",
              1));
}

TEST_F(FormatTest, UnknownFieldsInATensorEntryAreIgnoredLikeTheReference) {
  const Header header =
      expect_valid(crafted("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2],"
                           "\"extra\":{\"nested\":[1,2,{\"x\":null}]},\"note\":\"kept out\"}}",
                           2));
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_EQ(header.tensors[0].shape, std::vector<std::uint64_t>{2});
}

TEST_F(FormatTest, MetadataPresentAbsentOrNull) {
  const std::string tensor = entry("a", "U8", "[1]", 0, 1);
  const Header present = expect_valid(crafted(
      "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"a \\\"quoted\\\" \\u00e9\"}," + tensor + "}",
      1));
  EXPECT_EQ(present.metadata, (std::map<std::string, std::string>{
                                  {"format", "pt"}, {"note", "a \"quoted\" \xc3\xa9"}}));
  EXPECT_EQ(present.tensors.size(), 1u);
  EXPECT_TRUE(expect_valid(crafted("{" + tensor + "}", 1)).metadata.empty());
  EXPECT_TRUE(expect_valid(crafted("{\"__metadata__\":null," + tensor + "}", 1)).metadata.empty());
  EXPECT_TRUE(expect_valid(crafted("{" + tensor + ",\"__metadata__\":{}}", 1)).metadata.empty());
}

TEST_F(FormatTest, UnicodeNamesAndEscapes) {
  // "\u6743\u91cd" is 权重 and "\ud83d\ude42" is 🙂, written as escapes in the JSON.
  const std::string json = "{" + entry("\\u6743\\u91cd.0", "U8", "[1]", 0, 1) + "," +
                           entry("emoji.\\ud83d\\ude42", "U8", "[1]", 1, 2) + "," +
                           entry("raw.权重.🙂", "U8", "[1]", 2, 3) + "," +
                           entry("q\\\"b\\\\s\\/\\n", "U8", "[1]", 3, 4) + "}";
  const Header header = expect_valid(crafted(json, 4));
  EXPECT_NE(header.find("权重.0"), nullptr);
  EXPECT_NE(header.find("emoji.🙂"), nullptr);
  EXPECT_NE(header.find("raw.权重.🙂"), nullptr);
  EXPECT_NE(header.find("q\"b\\s/\n"), nullptr);
  // Messages carry such names as they are.
  expect_invalid(crafted("{" + entry("\\u6743", "U8", "[2]", 0, 1) + "}", 1),
                 FormatRule::kTensorInvalidInfo, "权");
}

TEST_F(FormatTest, HeaderLengthsOfEveryResidueModulo8) {
  std::set<std::uint64_t> residues;
  for (std::size_t name_length = 1; name_length <= 8; ++name_length) {
    SafetensorsWriter writer;
    writer.set_header_alignment(1);
    const std::vector<std::byte> data(6, std::byte{7});
    writer.add(std::string(name_length, 'n'), DType::kF16, {3}, data);
    const std::filesystem::path path = dir_ / ("unaligned" + std::to_string(name_length));
    writer.write(path);

    const Header header = read_header(path);
    const testing::ReferenceFile reference = testing::read_reference_header(path);
    EXPECT_EQ(header.header_length, reference.header_length);
    EXPECT_EQ(header.data_offset(), reference.data_offset);
    EXPECT_EQ(reference.json.back(), '}');  // no padding
    residues.insert(header.header_length % 8);
    ASSERT_EQ(header.tensors.size(), 1u);
    EXPECT_EQ(header.tensors[0].nbytes(), 6u);
  }
  EXPECT_EQ(residues.size(), 8u);
}

TEST_F(FormatTest, PageAlignedHeaders) {
  SafetensorsWriter writer;
  writer.set_header_alignment(4096);
  const std::vector<std::byte> data(4, std::byte{1});
  writer.add("a", DType::kF32, {1}, data);
  const std::filesystem::path path = dir_ / "page.safetensors";
  writer.write(path);
  const Header header = read_header(path);
  EXPECT_EQ(header.data_offset() % 4096, 0u);
  EXPECT_EQ(header.file_size, 4096u + 4u);

  // N itself a multiple of 4096: the JSON padded with spaces to exactly 4096 bytes.
  std::string json = "{" + entry("a", "F32", "[1]", 0, 4) + "}";
  json.resize(4096, ' ');
  const Header padded = expect_valid(crafted(json, 4));
  EXPECT_EQ(padded.header_length, 4096u);
  EXPECT_EQ(padded.data_offset(), 4104u);
}

TEST_F(FormatTest, ParseHeaderUsesOnlyTheHeaderBytesOfALongerPrefix) {
  const std::string file = crafted("{" + entry("a", "F32", "[2]", 0, 8) + "}", 8);
  const Header header = parse_header(as_bytes(file), file.size(), "whole.safetensors");
  EXPECT_EQ(header.tensors.size(), 1u);
  const std::string_view header_only(file.data(), file.size() - 8);
  EXPECT_EQ(parse_header(as_bytes(header_only), file.size(), "h").tensors.size(), 1u);
  // Fewer bytes than the header is a caller bug, not a bad file.
  EXPECT_THROW((void)parse_header(as_bytes(header_only.substr(0, 20)), file.size(), "h"),
               std::invalid_argument);
}

TEST_F(FormatTest, TwentyThousandTensors) {
  constexpr std::size_t kTensors = 20'000;
  const auto name = [](std::size_t i) {
    return "model.layers." + std::to_string(i / 10) + ".block." + std::to_string(i % 10) +
           ".weight";
  };
  // Crafted directly: quicker than the writer, and independent of it.
  std::string json = "{";
  for (std::size_t i = 0; i < kTensors; ++i) {
    if (i != 0) {
      json += ',';
    }
    json += entry(name(i), "BF16", "[4,4]", 32 * i, 32 * (i + 1));
  }
  json += '}';
  const std::filesystem::path path = dir_ / "many.safetensors";
  write_file(path, crafted(json, 32 * kTensors));

  const Header header = read_header(path);
  ASSERT_EQ(header.tensors.size(), kTensors);
  EXPECT_EQ(header.by_name.size(), kTensors);
  for (std::size_t i = 0; i < kTensors; i += 997) {
    const TensorInfo& t = header.tensors[i];
    EXPECT_EQ(t.begin, 32 * i);
    EXPECT_EQ(t.name, name(i));
  }
  EXPECT_EQ(header.data_size(), 32 * kTensors);

  auto best = std::chrono::nanoseconds::max();
  for (int run = 0; run < 10; ++run) {  // best of 10: the machine may be busy
    const auto start = std::chrono::steady_clock::now();
    const Header again = read_header(path);
    best = std::min(best, std::chrono::steady_clock::now() - start);
    ASSERT_EQ(again.tensors.size(), kTensors);
  }
  const double ms = std::chrono::duration<double, std::milli>(best).count();
  std::printf("read_header of %zu tensors (%llu header bytes): %.2f ms\n", kTensors,
              static_cast<unsigned long long>(header.header_length), ms);
#if !defined(WARPLOAD_TEST_SANITIZED) && defined(NDEBUG)
  EXPECT_LT(ms, 20.0) << "parsing 20,000 tensors should take well under 20 ms in Release";
#endif
}

TEST_F(FormatTest, SparseFileWithOffsetsPast4GiB) {
  SafetensorsWriter writer;
  const auto unused = [](std::byte*, std::size_t, std::uint64_t) {
    FAIL() << "header only: the data is never generated";
  };
  writer.add("big", DType::kF32, {kGiB + 5}, unused);  // 4 GiB + 20 bytes
  writer.add("tail", DType::kBF16, {3, 7}, unused);
  const std::string header_bytes = writer.serialize_header();
  const std::uint64_t file_size = header_bytes.size() + 4 * (kGiB + 5) + 42;

  const std::filesystem::path path = dir_ / "sparse.safetensors";
  write_file(path, header_bytes);
  std::filesystem::resize_file(path, file_size);

  const Header header = read_header(path);
  EXPECT_EQ(header.file_size, file_size);
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.tensors[1].name, "tail");
  EXPECT_EQ(header.tensors[1].begin, 4 * (kGiB + 5));
  EXPECT_EQ(header.tensors[1].end, 4 * (kGiB + 5) + 42);
  EXPECT_EQ(header.data_size(), 4 * (kGiB + 5) + 42);

  std::filesystem::resize_file(path, file_size - 1);
  try {
    (void)read_header(path);
    FAIL() << "a file one byte short was accepted";
  } catch (const InvalidFileError& e) {
    EXPECT_EQ(e.rule(), FormatRule::kMetadataIncompleteBuffer) << e.what();
  }
}

// ---- read_header failures ----------------------------------------------------------------------

TEST_F(FormatTest, ReadHeaderOfMissingFileIsNotFound) {
  const std::filesystem::path path = dir_ / "absent.safetensors";
  try {
    (void)read_header(path);
    FAIL() << "expected NotFoundError";
  } catch (const NotFoundError& e) {
    EXPECT_TRUE(contains(e.what(), path.string())) << e.what();
  }
  EXPECT_THROW((void)read_header(dir_ / "no_dir" / "x.safetensors"), NotFoundError);
}

TEST_F(FormatTest, ReadHeaderOfADirectoryIsAnIoError) {
  try {
    (void)read_header(dir_.path());
    FAIL() << "expected an error";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), dir_.path().string())) << e.what();
    EXPECT_EQ(e.error_number(), EISDIR);
  } catch (const InvalidFileError& e) {
    // A file system that reports directories as 0 bytes long.
    EXPECT_EQ(e.rule(), FormatRule::kHeaderTooSmall) << e.what();
  }
}

// ---- writer ------------------------------------------------------------------------------------

std::vector<std::byte> pattern_bytes(std::size_t size, std::uint32_t seed) {
  std::vector<std::byte> out(size);
  std::uint32_t state = seed * 2654435761u + 1;
  for (std::byte& b : out) {
    state = state * 1664525u + 1013904223u;
    b = static_cast<std::byte>(state >> 24);
  }
  return out;
}

// Byte `offset` of a FillFn-generated tensor: cheap, position dependent, not periodic in 4 KiB.
std::byte generated_byte(std::uint64_t offset) {
  return static_cast<std::byte>((offset * 131 + (offset >> 12) * 7 + 3) & 0xff);
}

void fill_generated(std::byte* dest, std::size_t size, std::uint64_t offset) {
  for (std::size_t i = 0; i < size; ++i) {
    dest[i] = generated_byte(offset + i);
  }
}

TEST_F(FormatTest, EveryDtypeRoundTrips) {
  SafetensorsWriter writer;
  std::vector<std::vector<std::byte>> buffers;
  buffers.reserve(kDTypeCount);
  for (std::size_t i = 0; i < kDTypeCount; ++i) {
    const auto dtype = static_cast<DType>(i);
    const std::size_t bytes = 8 * dtype_bits(dtype) / 8;  // shape [2, 4]
    buffers.push_back(pattern_bytes(bytes, static_cast<std::uint32_t>(i)));
    writer.add("t." + std::string(dtype_name(dtype)), dtype, {2, 4}, buffers.back());
  }
  const std::filesystem::path path = dir_ / "dtypes.safetensors";
  writer.write(path);

  const Header header = read_header(path);
  const testing::ReferenceFile reference = testing::read_reference_header(path);
  ASSERT_EQ(header.tensors.size(), kDTypeCount);
  for (std::size_t i = 0; i < kDTypeCount; ++i) {
    const auto dtype = static_cast<DType>(i);
    const std::string name = "t." + std::string(dtype_name(dtype));
    SCOPED_TRACE(name);
    const TensorInfo* t = header.find(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, dtype);
    EXPECT_EQ(t->shape, (std::vector<std::uint64_t>{2, 4}));
    EXPECT_EQ(t->nbytes() * 8, t->numel() * dtype_bits(dtype));
    EXPECT_EQ(reference.tensors.at(name).dtype, dtype_name(dtype));
    const std::string bytes = testing::read_reference_tensor(path, reference, name);
    EXPECT_EQ(0, std::memcmp(bytes.data(), buffers[i].data(), buffers[i].size()));
  }
}

TEST_F(FormatTest, WriterBytesMatchTheIndependentReader) {
  SafetensorsWriter writer;
  writer.set_metadata({{"format", "pt"}, {"quote\"back\\slash", "tab\there\x01"}});
  const std::vector<std::byte> a = pattern_bytes(60, 1);  // F32 [3, 5]
  const std::vector<std::byte> b = pattern_bytes(14, 2);  // BF16 [7]
  const std::vector<std::byte> scalar = pattern_bytes(8, 3);
  const std::uint64_t generated_size = 10 * (std::uint64_t{1} << 20) + 3;  // several chunks
  writer.add("layer.0.weight", DType::kF32, {3, 5}, a);
  writer.add("名前.🙂 \"q\"\n", DType::kBF16, {7}, b);
  writer.add("empty", DType::kF16, {0, 3}, std::span<const std::byte>{});
  writer.add("generated", DType::kU8, {generated_size}, fill_generated);
  writer.add("scalar", DType::kI64, {}, scalar);
  const std::filesystem::path path = dir_ / "written.safetensors";
  writer.write(path);

  const testing::ReferenceFile reference = testing::read_reference_header(path);
  EXPECT_EQ((8 + reference.header_length) % 8, 0u);
  EXPECT_EQ(reference.metadata, (std::map<std::string, std::string>{
                                    {"format", "pt"}, {"quote\"back\\slash", "tab\there\x01"}}));
  ASSERT_EQ(reference.tensors.size(), 5u);
  EXPECT_EQ(reference.tensors.at("layer.0.weight").begin, 0u);
  EXPECT_EQ(reference.tensors.at("layer.0.weight").end, 60u);
  EXPECT_EQ(reference.tensors.at("名前.🙂 \"q\"\n").dtype, "BF16");
  EXPECT_EQ(reference.tensors.at("名前.🙂 \"q\"\n").begin, 60u);
  EXPECT_EQ(reference.tensors.at("empty").begin, 74u);
  EXPECT_EQ(reference.tensors.at("empty").end, 74u);
  EXPECT_EQ(reference.tensors.at("empty").shape, (std::vector<std::uint64_t>{0, 3}));
  EXPECT_EQ(reference.tensors.at("generated").end, 74 + generated_size);
  EXPECT_TRUE(reference.tensors.at("scalar").shape.empty());
  EXPECT_EQ(std::filesystem::file_size(path), reference.data_offset + 74 + generated_size + 8);

  auto as_string = [](const std::vector<std::byte>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size());
  };
  EXPECT_EQ(testing::read_reference_tensor(path, reference, "layer.0.weight"), as_string(a));
  EXPECT_EQ(testing::read_reference_tensor(path, reference, "名前.🙂 \"q\"\n"), as_string(b));
  EXPECT_EQ(testing::read_reference_tensor(path, reference, "scalar"), as_string(scalar));
  const std::string generated = testing::read_reference_tensor(path, reference, "generated");
  ASSERT_EQ(generated.size(), generated_size);
  for (std::uint64_t i = 0; i < generated_size; ++i) {
    if (generated[i] != static_cast<char>(generated_byte(i))) {
      FAIL() << "generated byte " << i << " differs";
    }
  }

  // And warpload's own parser agrees with the reference reader.
  const Header header = read_header(path);
  EXPECT_EQ(header.metadata, reference.metadata);
  EXPECT_EQ(header.header_length, reference.header_length);
  for (const auto& [name, ref] : reference.tensors) {
    const TensorInfo* t = header.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(dtype_name(t->dtype), ref.dtype);
    EXPECT_EQ(t->shape, ref.shape);
    EXPECT_EQ(t->begin, ref.begin);
    EXPECT_EQ(t->end, ref.end);
  }
  // The header on disk is what serialize_header() promised.
  EXPECT_EQ(read_file(path).substr(0, reference.data_offset), writer.serialize_header());
}

TEST_F(FormatTest, FillFnStreamsTheSameBytesAsSpanData) {
  const std::uint64_t size = 9 * (std::uint64_t{1} << 20) + 17;
  std::vector<std::byte> data(size);
  fill_generated(data.data(), data.size(), 0);

  struct Call {
    std::size_t size;
    std::uint64_t offset;
  };
  std::vector<Call> calls;
  SafetensorsWriter streamed;
  SafetensorsWriter spans;
  const std::vector<std::byte> small = pattern_bytes(6, 9);
  streamed.add("small", DType::kU16, {3}, small);
  streamed.add("big", DType::kU8, {size}, [&](std::byte* dest, std::size_t n, std::uint64_t at) {
    calls.push_back({n, at});
    fill_generated(dest, n, at);
  });
  spans.add("small", DType::kU16, {3}, small);
  spans.add("big", DType::kU8, {size}, data);

  streamed.write(dir_ / "streamed.safetensors");
  spans.write(dir_ / "spans.safetensors");
  EXPECT_EQ(read_file(dir_ / "streamed.safetensors"), read_file(dir_ / "spans.safetensors"));

  // Consecutive chunks of a few MiB at most, covering the tensor exactly once.
  ASSERT_GE(calls.size(), 2u);
  std::uint64_t expected_offset = 0;
  for (const Call& call : calls) {
    EXPECT_EQ(call.offset, expected_offset);
    EXPECT_GT(call.size, 0u);
    EXPECT_LE(call.size, std::size_t{16} << 20);
    expected_offset += call.size;
  }
  EXPECT_EQ(expected_offset, size);
}

TEST_F(FormatTest, SerializedHeaderIsCompactPaddedJson) {
  SafetensorsWriter writer;
  const std::vector<std::byte> data(4);
  writer.set_metadata({{"k", "v"}});
  writer.add("a", DType::kF32, {1}, data);
  const std::string header = writer.serialize_header();
  const std::string json =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  ASSERT_EQ(header.size() % 8, 0u);
  EXPECT_EQ(header.substr(0, 8), le64(header.size() - 8));
  EXPECT_EQ(header.substr(8, json.size()), json);
  EXPECT_EQ(header.substr(8 + json.size()), std::string(header.size() - 8 - json.size(), ' '));

  SafetensorsWriter control;
  control.set_header_alignment(1);
  control.add("\x01\x1f\x7f", DType::kU8, {0}, std::span<const std::byte>{});
  EXPECT_EQ(control.serialize_header().substr(8),
            R"({"\u0001\u001f)"
            "\x7f"
            R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})");

  SafetensorsWriter empty;
  const std::string empty_header = empty.serialize_header();
  EXPECT_EQ(empty_header.size(), 16u);
  EXPECT_EQ(empty_header.substr(8), "{}      ");
  const std::filesystem::path path = dir_ / "empty.safetensors";
  empty.write(path);
  EXPECT_TRUE(read_header(path).tensors.empty());
}

TEST_F(FormatTest, InvalidAddsThrow) {
  SafetensorsWriter writer;
  const std::vector<std::byte> four(4);
  const auto fill = [](std::byte*, std::size_t, std::uint64_t) {};
  EXPECT_THROW(writer.add("short", DType::kF32, {2}, four), std::invalid_argument);
  EXPECT_THROW(writer.add("long", DType::kF16, {1}, four), std::invalid_argument);
  EXPECT_THROW(writer.add("f4", DType::kF4, {3}, four), std::invalid_argument);
  EXPECT_THROW(writer.add("f4", DType::kF4, {3}, fill), std::invalid_argument);
  EXPECT_THROW(writer.add("f6", DType::kF6_E2M3, {1}, fill), std::invalid_argument);
  EXPECT_THROW(writer.add("huge", DType::kU8, {1ull << 32, 1ull << 32}, fill),
               std::invalid_argument);
  EXPECT_THROW(writer.add("bits", DType::kF64, {1ull << 62}, fill), std::invalid_argument);
  EXPECT_THROW(writer.add("__metadata__", DType::kF32, {1}, four), std::invalid_argument);
  EXPECT_THROW(writer.add("bad\xff", DType::kF32, {1}, four), std::invalid_argument);
  EXPECT_THROW(writer.add("null_fill", DType::kF32, {1}, SafetensorsWriter::FillFn{}),
               std::invalid_argument);

  writer.add("ok", DType::kF32, {1}, four);
  EXPECT_THROW(writer.add("ok", DType::kF32, {1}, four), std::invalid_argument);
  EXPECT_THROW(writer.add("ok", DType::kF32, {1}, fill), std::invalid_argument);
  // Refused adds leave no trace.
  const std::filesystem::path path = dir_ / "after_errors.safetensors";
  writer.write(path);
  const Header header = read_header(path);
  ASSERT_EQ(header.tensors.size(), 1u);
  EXPECT_EQ(header.tensors[0].name, "ok");

  SafetensorsWriter bad_metadata;
  bad_metadata.set_metadata({{"k", "\xc3"}});
  EXPECT_THROW((void)bad_metadata.serialize_header(), std::invalid_argument);
}

TEST_F(FormatTest, WriteFailureIsAnIoErrorNamingThePath) {
  SafetensorsWriter writer;
  const std::filesystem::path path = dir_ / "missing_dir" / "out.safetensors";
  try {
    writer.write(path);
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), path.string())) << e.what();
    EXPECT_EQ(e.error_number(), ENOENT);
  }
}

// ---- robustness --------------------------------------------------------------------------------

// Mutated headers must be refused with InvalidFileError or parse into a consistent header; never
// anything else (the sanitizer build checks memory safety on the way).
TEST_F(FormatTest, MutatedHeadersNeverMisbehave) {
  const std::string json = "{\"__metadata__\":{\"k\":\"v\"}," + entry("a", "F32", "[2,1]", 0, 8) +
                           "," + entry("b\\u00e9", "F4", "[4]", 8, 10) + "}";
  const std::string original = crafted(json, 10);
  std::mt19937 random(12345);
  const std::string alphabet = "{}[]\",:0123456789-.e \\u\xff\xc3";
  int accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string bytes = original;
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = 8 + random() % (bytes.size() - 8);
      switch (random() % 3) {
        case 0:
          bytes[at] = alphabet[random() % alphabet.size()];
          break;
        case 1:
          bytes.erase(at, 1);
          break;
        default:
          bytes.insert(at, 1, alphabet[random() % alphabet.size()]);
      }
    }
    try {
      const Header header = parse_header(as_bytes(bytes), bytes.size(), "fuzz");
      ++accepted;
      std::uint64_t end = 0;
      for (const TensorInfo& t : header.tensors) {
        EXPECT_EQ(t.begin, end);
        end = t.end;
      }
      EXPECT_EQ(header.data_offset() + end, bytes.size());
    } catch (const InvalidFileError& e) {
      EXPECT_TRUE(std::string_view(e.what()).starts_with("fuzz: ")) << e.what();
    }
  }
  EXPECT_GT(accepted, 0);  // e.g. edits inside the metadata value
}

// ---- regressions found by the fuzzers and the hostile-file suite (docs/reliability.md) ----------

// header_fuzzer, crash a82453d7: a dtype string holding \u0000 went into the message raw, so
// what() (a C string) ended at the NUL and lost the rule's name.
TEST_F(FormatTest, UntrustedTextInMessagesIsEscapedAndCut) {
  const std::string message =
      expect_invalid(crafted("{" + entry("t\\u001b[2J", "F3\\u0000\\n", "[1]", 0, 1) + "}", 1),
                     FormatRule::kInvalidHeaderDeserialization, "t\\x1b[2J");
  EXPECT_TRUE(contains(message, "unknown dtype \"F3\\x00\\x0a\"")) << message;
  EXPECT_EQ(std::strlen(message.c_str()), message.size());
  const std::string long_name(100'000, 'x');
  const std::string cut = expect_invalid(
      crafted("{" + entry(long_name, "U8", "[1]", 1, 2) + "}", 2), FormatRule::kInvalidOffset);
  EXPECT_TRUE(contains(cut, "...(100000 bytes)")) << cut.substr(0, 300);
  EXPECT_LT(cut.size(), 600u);
}

// Unknown fields are skipped like the reference skips them, but the reference's JSON parser
// (serde_json) still reads them: malformed JSON there, or nesting past 127 levels, is refused.
// On-demand parsing had accepted both.
TEST_F(FormatTest, UnknownFieldsMustStillBeJsonWithinTheDepthLimit) {
  const auto with_extra = [](const std::string& extra) {
    return crafted(
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":" + extra + "}}", 1);
  };
  for (const char* bad :
       {"[1,,2]", "[tru]", "{\"a\" 1}", "[1 2]", "{\"a\":}", "nul", "[\"\\q\"]"}) {
    SCOPED_TRACE(bad);
    expect_invalid(with_extra(bad), FormatRule::kInvalidHeaderDeserialization, "t");
  }
  // Root (1) and entry (2), so the field's value may nest 125 levels.
  const auto nested = [](std::size_t levels) {
    return std::string(levels, '[') + std::string(levels, ']');
  };
  const std::string deepest = with_extra(nested(125));
  EXPECT_EQ(parse_header(as_bytes(deepest), deepest.size(), "m").tensors.size(), 1u);
  const std::string message =
      expect_invalid(with_extra(nested(126)), FormatRule::kInvalidHeaderDeserialization, "t");
  EXPECT_TRUE(contains(message, "nests deeper than 127 levels")) << message;
  for (const char* good :
       {"[1,-2.5e3,\"s\",true,false,null,{\"k\":[{}]}]", "{}", "\"\\u00e9\"", "7"}) {
    SCOPED_TRACE(good);
    const std::string bytes = with_extra(good);
    EXPECT_EQ(parse_header(as_bytes(bytes), bytes.size(), "m").tensors.size(), 1u);
  }
}

}  // namespace
}  // namespace warpload
