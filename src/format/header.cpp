// Header parsing. The checks run in the reference parser's order (see FormatRule), so a file
// that breaks several rules is reported under the same rule the reference would report.

#include <fcntl.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "common/printable.hpp"
#include "common/unique_fd.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"

namespace warpload {
namespace {

namespace ondemand = simdjson::ondemand;

constexpr std::string_view kMetadataKey = "__metadata__";
// Headers up to this size are parsed with a parser kept per thread (see read_json).
constexpr std::size_t kReusedParserMaxBytes = std::size_t{4} << 20;
// Deepest JSON nesting accepted, counting the root object as level 1. The reference parses
// with serde_json, whose recursion limit refuses a 128th level even inside fields it ignores.
constexpr std::size_t kMaxJsonDepth = 127;

// ---- messages -------------------------------------------------------------------------------

template <typename Part>
void append_part(std::string& out, const Part& part) {
  if constexpr (std::is_integral_v<Part>) {
    out += std::to_string(part);
  } else {
    out += part;
  }
}

template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::string out;
  (append_part(out, parts), ...);
  return out;
}

std::string offsets_string(const TensorInfo& tensor) {
  return cat("data_offsets [", tensor.begin, ", ", tensor.end, ")");
}

[[noreturn]] void fail(FormatRule rule, std::string_view file, std::string_view what) {
  throw InvalidFileError(rule, cat(file, ": ", what, " (", format_rule_name(rule), ")"));
}

[[noreturn]] void fail_tensor(FormatRule rule, std::string_view file, std::string_view tensor,
                              std::string_view what) {
  fail(rule, file, cat("tensor '", detail::printable(tensor), "': ", what));
}

// ---- length prefix (reference steps 1-3) -----------------------------------------------------

std::uint64_t load_le64(const std::byte* bytes) noexcept {
  std::uint64_t value;
  std::memcpy(&value, bytes, sizeof(value));
  if constexpr (std::endian::native == std::endian::big) {
    value = __builtin_bswap64(value);
  }
  return value;
}

// Checks the 8-byte length prefix against the file size and returns N. `first` holds the
// file's first min(file_size, 8) bytes.
std::uint64_t check_header_length(std::span<const std::byte> first, std::uint64_t file_size,
                                  std::string_view file) {
  if (file_size < kHeaderLengthBytes) {
    fail(FormatRule::kHeaderTooSmall, file,
         cat("file is ", file_size, " bytes, too short for the 8-byte header length"));
  }
  if (first.size() < kHeaderLengthBytes) {
    throw std::invalid_argument(cat(file, ": parse_header needs the file's first 8 bytes"));
  }
  const std::uint64_t n = load_le64(first.data());
  if (n > kMaxHeaderLength) {
    fail(FormatRule::kHeaderTooLarge, file,
         cat("header length ", n, " exceeds the limit of ", kMaxHeaderLength, " bytes"));
  }
  // file_size >= 8 here, so the subtraction cannot wrap.
  if (n > file_size - kHeaderLengthBytes) {
    fail(FormatRule::kInvalidHeaderLength, file,
         cat("header length ", n, " runs past the end of the file (8 + ", n, " > ", file_size,
             " bytes)"));
  }
  return n;
}

// ---- JSON (reference steps 4-6) --------------------------------------------------------------

// Reports a JSON value that could not be read as `expected`. A type mismatch is the file's
// shape being wrong; any other simdjson error is broken JSON and says so.
class JsonReader {
 public:
  JsonReader(std::string_view file, const char* json) : file_(file), json_(json) {}

  void set_document(ondemand::document* document) { document_ = document; }

  [[noreturn]] void fail(std::string_view what) const {
    warpload::fail(FormatRule::kInvalidHeaderDeserialization, file_, what);
  }
  [[noreturn]] void fail(const std::optional<std::string_view>& tensor,
                         std::string_view what) const {
    if (tensor) {
      fail_tensor(FormatRule::kInvalidHeaderDeserialization, file_, *tensor, what);
    }
    fail(what);
  }
  // `context` names the value being read, e.g. "\"shape\" entry".
  [[noreturn]] void fail(const std::optional<std::string_view>& tensor, simdjson::error_code error,
                         std::string_view context, std::string_view expected) const {
    if (error == simdjson::INCORRECT_TYPE || error == simdjson::NUMBER_OUT_OF_RANGE) {
      fail(tensor, cat(context, " must be ", expected, where()));
    }
    std::string_view reason = simdjson::error_message(error);
    if (!reason.empty() && reason.back() == '.') {
      reason.remove_suffix(1);
    }
    fail(tensor, cat("malformed JSON in ", context, where(), ": ", reason));
  }

 private:
  // " near header byte K", where the parser can say.
  std::string where() const {
    const char* location = nullptr;
    if (document_ == nullptr || document_->current_location().get(location) != simdjson::SUCCESS) {
      return {};
    }
    return cat(" near header byte ", static_cast<std::uint64_t>(location - json_));
  }

  std::string_view file_;
  const char* json_;
  ondemand::document* document_ = nullptr;
};

std::uint64_t read_u64(ondemand::value& value, const JsonReader& reader, std::string_view tensor,
                       std::string_view context) {
  std::uint64_t number = 0;
  if (auto error = value.get_uint64().get(number)) {
    reader.fail(tensor, error, context, "a non-negative integer that fits in 64 bits");
  }
  return number;
}

// Reads (and so validates) the value of an unknown field of a tensor entry, at nesting level
// `level` (root = 1, entry = 2, the field's value = 3). On-demand parsing would skip it
// unread, accepting malformed JSON there (`[1,,2]`, `tru`) and any depth; the reference's
// parser (serde_json) refuses both, so it is walked here, refusing level kMaxJsonDepth + 1.
// Recursion is bounded by kMaxJsonDepth.
void read_unknown_value(ondemand::value value, std::size_t level, std::string_view tensor,
                        std::string_view context, const JsonReader& reader) {
  ondemand::json_type type;
  if (auto error = value.type().get(type)) {
    reader.fail(tensor, error, context, "JSON");
  }
  simdjson::error_code error = simdjson::SUCCESS;
  switch (type) {
    case ondemand::json_type::array:
    case ondemand::json_type::object:
      if (level > kMaxJsonDepth) {
        reader.fail(tensor, cat(context, " nests deeper than ", kMaxJsonDepth,
                                " levels, the reference parser's limit"));
      }
      if (type == ondemand::json_type::array) {
        ondemand::array array;
        if (auto failed = value.get_array().get(array)) {
          reader.fail(tensor, failed, context, "JSON");
        }
        for (auto element : array) {
          ondemand::value item;
          if (auto failed = element.get(item)) {
            reader.fail(tensor, failed, context, "JSON");
          }
          read_unknown_value(item, level + 1, tensor, context, reader);
        }
      } else {
        ondemand::object object;
        if (auto failed = value.get_object().get(object)) {
          reader.fail(tensor, failed, context, "JSON");
        }
        for (auto member : object) {
          ondemand::field field;
          std::string_view key;
          if (auto failed = std::move(member).get(field)) {
            reader.fail(tensor, failed, context, "JSON");
          }
          if (auto failed = field.unescaped_key().get(key)) {
            reader.fail(tensor, failed, context, "JSON");
          }
          read_unknown_value(field.value(), level + 1, tensor, context, reader);
        }
      }
      break;
    case ondemand::json_type::string: {
      std::string_view text;
      error = value.get_string().get(text);
      break;
    }
    case ondemand::json_type::number: {
      ondemand::number number;
      error = value.get_number().get(number);
      break;
    }
    case ondemand::json_type::boolean: {
      bool flag = false;
      error = value.get_bool().get(flag);
      break;
    }
    case ondemand::json_type::null: {
      bool is_null = false;
      error = value.is_null().get(is_null);
      if (!error && !is_null) error = simdjson::N_ATOM_ERROR;
      break;
    }
  }
  if (error) {
    reader.fail(tensor, error, context, "JSON");
  }
}

void read_tensor_entry(ondemand::value& value, TensorInfo& tensor, const JsonReader& reader) {
  const std::string_view name = tensor.name;
  ondemand::object entry;
  if (auto error = value.get_object().get(entry)) {
    reader.fail(name, error, "the entry", "a JSON object");
  }
  bool has_dtype = false;
  bool has_shape = false;
  bool has_offsets = false;
  for (auto field_result : entry) {
    ondemand::field field;
    if (auto error = std::move(field_result).get(field)) {
      reader.fail(name, error, "the entry", "a JSON object");
    }
    // Compare the raw key first: only an escaped spelling of a field name pays for unescaping.
    const ondemand::raw_json_string raw_key = field.key();
    std::string_view key;
    if (raw_key == "dtype") {
      key = "dtype";
    } else if (raw_key == "shape") {
      key = "shape";
    } else if (raw_key == "data_offsets") {
      key = "data_offsets";
    } else if (auto error = field.unescaped_key().get(key)) {
      reader.fail(name, error, "a field name", "a string");
    }
    if (key == "dtype") {
      if (has_dtype) {
        reader.fail(name, "field \"dtype\" appears twice");
      }
      has_dtype = true;
      std::string_view dtype_string;
      if (auto error = field.value().get_string().get(dtype_string)) {
        reader.fail(name, error, "\"dtype\"", "a string");
      }
      const std::optional<DType> dtype = parse_dtype(dtype_string);
      if (!dtype) {
        reader.fail(name, cat("unknown dtype \"", detail::printable(dtype_string), "\""));
      }
      tensor.dtype = *dtype;
    } else if (key == "shape") {
      if (has_shape) {
        reader.fail(name, "field \"shape\" appears twice");
      }
      has_shape = true;
      ondemand::array array;
      if (auto error = field.value().get_array().get(array)) {
        reader.fail(name, error, "\"shape\"", "an array");
      }
      // Counted first so the shape is allocated once at its size: a hostile header's shape of
      // 50 million dims then costs their 8 bytes each, not twice that in vector growth.
      std::size_t count = 0;
      if (auto error = array.count_elements().get(count)) {
        reader.fail(name, error, "\"shape\"", "an array");
      }
      tensor.shape.clear();
      tensor.shape.reserve(count);
      for (auto dim_result : array) {
        ondemand::value dim;
        if (auto error = dim_result.get(dim)) {
          reader.fail(name, error, "\"shape\"", "an array");
        }
        tensor.shape.push_back(read_u64(dim, reader, name, "each \"shape\" entry"));
      }
    } else if (key == "data_offsets") {
      if (has_offsets) {
        reader.fail(name, "field \"data_offsets\" appears twice");
      }
      has_offsets = true;
      ondemand::array offsets;
      if (auto error = field.value().get_array().get(offsets)) {
        reader.fail(name, error, "\"data_offsets\"", "an array [begin, end]");
      }
      std::size_t count = 0;
      for (auto offset_result : offsets) {
        ondemand::value offset;
        if (auto error = offset_result.get(offset)) {
          reader.fail(name, error, "\"data_offsets\"", "an array [begin, end]");
        }
        if (count == 2) {
          reader.fail(name, "\"data_offsets\" has more than 2 entries");
        }
        const std::uint64_t number = read_u64(offset, reader, name, "each \"data_offsets\" entry");
        (count == 0 ? tensor.begin : tensor.end) = number;
        ++count;
      }
      if (count != 2) {
        reader.fail(name, cat("\"data_offsets\" must have exactly 2 entries, not ", count));
      }
    } else {
      // Other fields are skipped, as the reference does (its TensorInfo ignores unknown keys):
      // a file it loads must load here too; one it refuses for nesting must be refused too.
      read_unknown_value(field.value(), 3, name, cat("field \"", detail::printable(key), "\""),
                         reader);
    }
  }
  if (!has_dtype) {
    reader.fail(name, "missing field \"dtype\"");
  }
  if (!has_shape) {
    reader.fail(name, "missing field \"shape\"");
  }
  if (!has_offsets) {
    reader.fail(name, "missing field \"data_offsets\"");
  }
}

// "__metadata__": an object of string -> string, or null for none.
void read_metadata(ondemand::value& value, Header& header, const JsonReader& reader,
                   std::string_view file) {
  bool is_null = false;
  if (auto error = value.is_null().get(is_null)) {
    reader.fail(std::nullopt, error, "\"__metadata__\"", "an object or null");
  }
  if (is_null) {
    return;
  }
  ondemand::object object;
  if (auto error = value.get_object().get(object)) {
    reader.fail(std::nullopt, error, "\"__metadata__\"", "an object or null");
  }
  for (auto field_result : object) {
    ondemand::field field;
    if (auto error = std::move(field_result).get(field)) {
      reader.fail(std::nullopt, error, "\"__metadata__\"", "an object or null");
    }
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) {
      reader.fail(std::nullopt, error, "a \"__metadata__\" key", "a string");
    }
    std::string_view text;
    if (auto error = field.value().get_string().get(text)) {
      reader.fail(std::nullopt, error,
                  cat("\"__metadata__\" value of \"", detail::printable(key), "\""), "a string");
    }
    if (!header.metadata.try_emplace(std::string(key), text).second) {
      fail(FormatRule::kDuplicateName, file,
           cat("\"__metadata__\" key '", detail::printable(key), "' appears twice in the header"));
    }
  }
}

// Reads the root object into `header`: tensors in file order, by_name indexing them.
void read_json(const char* json, std::size_t length, std::size_t capacity, Header& header,
               std::string_view file) {
  JsonReader reader(file, json);
  // A parser allocates several bytes per header byte; reusing one per thread saves the page
  // faults of fresh buffers on every file. Headers too large to keep that memory for get their
  // own parser.
  thread_local ondemand::parser reused_parser;
  std::optional<ondemand::parser> own_parser;
  ondemand::parser& parser = length <= kReusedParserMaxBytes ? reused_parser : own_parser.emplace();
  ondemand::document document;
  if (auto error = parser.iterate(json, length, capacity).get(document)) {
    reader.fail(std::nullopt, error, "the header", "a JSON object");
  }
  reader.set_document(&document);
  ondemand::object root;
  if (auto error = document.get_object().get(root)) {
    reader.fail(std::nullopt, error, "the header", "a JSON object");
  }
  // A guess that errs high (entries are rarely under 64 bytes) but spares rehashing.
  header.by_name.reserve(length / 64);
  bool has_metadata = false;
  for (auto field_result : root) {
    ondemand::field field;
    if (auto error = std::move(field_result).get(field)) {
      reader.fail(std::nullopt, error, "the header", "a JSON object");
    }
    std::string_view key;
    if (auto error = field.unescaped_key().get(key)) {
      reader.fail(std::nullopt, error, "a tensor name", "a string");
    }
    if (key == kMetadataKey) {
      if (has_metadata) {
        fail(FormatRule::kDuplicateName, file, "\"__metadata__\" appears twice in the header");
      }
      has_metadata = true;
      read_metadata(field.value(), header, reader, file);
      continue;
    }
    const auto [it, inserted] = header.by_name.try_emplace(std::string(key), header.tensors.size());
    if (!inserted) {
      fail_tensor(FormatRule::kDuplicateName, file, key, "name appears twice in the header");
    }
    TensorInfo& tensor = header.tensors.emplace_back();
    tensor.name = it->first;
    read_tensor_entry(field.value(), tensor, reader);
  }
  // The root object is closed; anything but whitespace after it is not JSON.
  const char* rest = nullptr;
  if (document.current_location().get(rest) == simdjson::SUCCESS) {
    reader.fail(cat("unexpected content after the header's JSON object at header byte ",
                    static_cast<std::uint64_t>(rest - json)));
  }
}

// ---- layout (reference steps 7-8) ------------------------------------------------------------

// Sorts tensors by (begin, end), keeping file order among equals, and re-points by_name.
void sort_by_offset(Header& header) {
  auto less = [](const TensorInfo& a, const TensorInfo& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  };
  std::vector<TensorInfo>& tensors = header.tensors;
  if (std::is_sorted(tensors.begin(), tensors.end(), less)) {
    return;
  }

  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return less(tensors[a], tensors[b]); });
  std::vector<TensorInfo> sorted;
  sorted.reserve(tensors.size());
  std::vector<std::size_t> position(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    position[order[i]] = i;
    sorted.push_back(std::move(tensors[order[i]]));
  }
  tensors = std::move(sorted);
  for (auto& [name, index] : header.by_name) {
    index = position[index];
  }
}

void validate_layout(const Header& header, std::string_view file) {
  std::uint64_t expected_begin = 0;
  for (const TensorInfo& tensor : header.tensors) {
    if (tensor.begin != expected_begin || tensor.end < tensor.begin) {
      std::string what;
      if (tensor.end < tensor.begin) {
        what = cat(offsets_string(tensor), " end before they begin");
      } else if (&tensor == &header.tensors.front()) {
        what = cat(offsets_string(tensor), ": the first tensor must begin at 0");
      } else if (tensor.begin > expected_begin) {
        what = cat(offsets_string(tensor), " leave a gap: the previous tensor ends at ",
                   expected_begin);
      } else {
        what = cat(offsets_string(tensor), " overlap the previous tensor, which ends at ",
                   expected_begin);
      }
      fail_tensor(FormatRule::kInvalidOffset, file, tensor.name, what);
    }
    expected_begin = tensor.end;

    std::uint64_t numel = 1;
    for (const std::uint64_t dim : tensor.shape) {
      if (__builtin_mul_overflow(numel, dim, &numel)) {
        fail_tensor(
            FormatRule::kValidationOverflow, file, tensor.name,
            cat("element count of shape ", format_shape(tensor.shape), " overflows 64 bits"));
      }
    }
    const std::uint32_t element_bits = dtype_bits(tensor.dtype);
    std::uint64_t bits = 0;
    if (__builtin_mul_overflow(numel, std::uint64_t{element_bits}, &bits)) {
      fail_tensor(FormatRule::kValidationOverflow, file, tensor.name,
                  cat(numel, " elements x ", element_bits, " bits (", dtype_name(tensor.dtype),
                      ") overflows 64 bits"));
    }
    if (bits % 8 != 0) {
      fail_tensor(FormatRule::kMisalignedSlice, file, tensor.name,
                  cat(numel, " elements x ", element_bits, " bits (", dtype_name(tensor.dtype),
                      ") = ", bits, " bits is not a whole number of bytes"));
    }
    if (tensor.nbytes() != bits / 8) {
      fail_tensor(
          FormatRule::kTensorInvalidInfo, file, tensor.name,
          cat(offsets_string(tensor), " hold ", tensor.nbytes(), " bytes but ",
              dtype_name(tensor.dtype), " ", format_shape(tensor.shape), " needs ", bits / 8));
    }
  }
  // check_header_length() guarantees 8 + N <= file_size.
  const std::uint64_t data_size = header.file_size - header.data_offset();
  if (expected_begin != data_size) {
    fail(FormatRule::kMetadataIncompleteBuffer, file,
         cat("the data section holds ", data_size, " bytes (file ", header.file_size,
             " bytes - header 8 + ", header.header_length, ") but the tensors cover ",
             expected_begin));
  }
}

// Steps 4-8 on the N header bytes at `json`, readable up to `capacity` >= N +
// SIMDJSON_PADDING bytes.
Header parse_json_header(const char* json, std::uint64_t header_length, std::size_t capacity,
                         std::uint64_t file_size, std::string_view file) {
  if (!simdjson::validate_utf8(json, header_length)) {
    fail(FormatRule::kInvalidHeader, file, "header is not valid UTF-8");
  }
  Header header;
  header.header_length = header_length;
  header.file_size = file_size;
  read_json(json, header_length, capacity, header, file);
  sort_by_offset(header);
  validate_layout(header, file);
  return header;
}

// ---- file reading ----------------------------------------------------------------------------

std::string errno_text(int error_number) {
  return cat(std::strerror(error_number), " (errno ", error_number, ")");
}

// Reads exactly `size` bytes at `offset`, retrying short reads and EINTR.
void read_exact(const detail::UniqueFd& fd, void* destination, std::size_t size,
                std::uint64_t offset, const std::string& path) {
  auto* out = static_cast<char*>(destination);
  std::size_t done = 0;
  while (done < size) {
    const std::uint64_t at = offset + done;
    const ssize_t got = ::pread(fd.get(), out + done, size - done, static_cast<off_t>(at));
    if (got < 0) {
      if (errno == EINTR) {
        continue;
      }
      const int error_number = errno;
      throw IoError(
          cat(path, ": read of the header failed at offset ", at, ": ", errno_text(error_number)),
          error_number, at);
    }
    if (got == 0) {
      throw IoError(cat(path, ": unexpected end of file at offset ", at, " reading the header"), 0,
                    at);
    }
    done += static_cast<std::size_t>(got);
  }
}

}  // namespace

std::uint64_t TensorInfo::numel() const noexcept {
  std::uint64_t count = 1;
  for (const std::uint64_t dim : shape) {
    count *= dim;
  }
  return count;
}

std::string format_shape(std::span<const std::uint64_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) {
      out += ", ";
    }
    out += std::to_string(shape[i]);
  }
  out += ']';
  return out;
}

const TensorInfo* Header::find(std::string_view name) const noexcept {
  const auto it = by_name.find(name);
  return it == by_name.end() ? nullptr : &tensors[it->second];
}

Header parse_header(std::span<const std::byte> prefix, std::uint64_t file_size,
                    std::string_view file) {
  const std::uint64_t n = check_header_length(prefix, file_size, file);
  if (prefix.size() - kHeaderLengthBytes < n) {
    throw std::invalid_argument(
        cat(file, ": parse_header needs the first 8 + ", n, " bytes of the file"));
  }
  const simdjson::padded_string json(reinterpret_cast<const char*>(prefix.data()) + 8, n);
  return parse_json_header(json.data(), n, n + simdjson::SIMDJSON_PADDING, file_size, file);
}

Header read_header(const std::filesystem::path& path) {
  const std::string name = path.string();
  const detail::UniqueFd fd(::open(name.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int error_number = errno;
    if (error_number == ENOENT || error_number == ENOTDIR) {
      throw NotFoundError(cat(name, ": no such file"));
    }
    throw IoError(cat(name, ": cannot open: ", errno_text(error_number)), error_number, 0);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    const int error_number = errno;
    throw IoError(cat(name, ": cannot stat: ", errno_text(error_number)), error_number, 0);
  }
  const auto file_size = static_cast<std::uint64_t>(st.st_size);

  std::array<std::byte, kHeaderLengthBytes> first{};
  const std::size_t first_size = std::min<std::uint64_t>(file_size, first.size());
  read_exact(fd, first.data(), first_size, 0, name);
  const std::uint64_t n = check_header_length({first.data(), first_size}, file_size, name);

  // N <= kMaxHeaderLength, so the buffer size fits size_t.
  const std::size_t capacity = n + simdjson::SIMDJSON_PADDING;
  const auto json = std::make_unique_for_overwrite<char[]>(capacity);
  read_exact(fd, json.get(), n, kHeaderLengthBytes, name);
  std::memset(json.get() + n, 0, simdjson::SIMDJSON_PADDING);
  return parse_json_header(json.get(), n, capacity, file_size, name);
}

}  // namespace warpload
