#include <fcntl.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "warpload/error.hpp"
#include "warpload/format.hpp"

namespace warpload {
namespace {

// FillFn chunks: large enough that write() calls are cheap, small enough to stay in cache.
constexpr std::size_t kFillChunkBytes = std::size_t{4} << 20;
// Linux moves at most ~2 GiB per write(); ask for 1 GiB at a time.
constexpr std::size_t kMaxWriteBytes = std::size_t{1} << 30;

std::string single_quoted(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  out.append(1, '\'').append(name).append(1, '\'');
  return out;
}

std::uint64_t checked_nbytes(const std::string& name, DType dtype,
                             const std::vector<std::uint64_t>& shape) {
  std::uint64_t numel = 1;
  for (const std::uint64_t dim : shape) {
    if (__builtin_mul_overflow(numel, dim, &numel)) {
      throw std::invalid_argument("tensor " + single_quoted(name) +
                                  ": element count overflows 64 bits");
    }
  }
  std::uint64_t bits = 0;
  if (__builtin_mul_overflow(numel, std::uint64_t{dtype_bits(dtype)}, &bits)) {
    throw std::invalid_argument("tensor " + single_quoted(name) + ": bit count overflows 64 bits");
  }
  if (bits % 8 != 0) {
    throw std::invalid_argument("tensor " + single_quoted(name) + ": " + std::to_string(numel) +
                                " elements of " + std::string(dtype_name(dtype)) +
                                " are not a whole number of bytes");
  }
  return bits / 8;
}

void check_utf8(std::string_view text, std::string_view what) {
  if (!simdjson::validate_utf8(text.data(), text.size())) {
    throw std::invalid_argument(std::string(what) + " is not valid UTF-8");
  }
}

// `names` is the set of names added so far.
void check_new_name(const auto& names, const std::string& name) {
  if (name == "__metadata__") {
    throw std::invalid_argument("'__metadata__' is reserved and cannot name a tensor");
  }
  check_utf8(name, "tensor name " + single_quoted(name));
  if (names.contains(name)) {
    throw std::invalid_argument("tensor " + single_quoted(name) + " added twice");
  }
}

void append_number(std::string& out, std::uint64_t value) {
  std::array<char, 24> digits;
  const auto result = std::to_chars(digits.data(), digits.data() + digits.size(), value);
  out.append(digits.data(), result.ptr);
}

// JSON string literal; UTF-8 passes through, control characters are escaped.
void append_json_string(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += kHex[static_cast<unsigned char>(c) >> 4];
          out += kHex[static_cast<unsigned char>(c) & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

class OutputFile {
 public:
  explicit OutputFile(const std::filesystem::path& path) : path_(path.string()) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      fail("cannot create", errno);
    }
  }
  ~OutputFile() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // Appends `size` bytes, retrying short writes and EINTR.
  void write(const std::byte* data, std::size_t size) {
    while (size > 0) {
      const ssize_t done = ::write(fd_, data, std::min(size, kMaxWriteBytes));
      if (done < 0) {
        if (errno == EINTR) {
          continue;
        }
        fail("write failed", errno);
      }
      data += done;
      size -= static_cast<std::size_t>(done);
      offset_ += static_cast<std::uint64_t>(done);
    }
  }

  void close() {
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) {
      fail("close failed", errno);
    }
  }

 private:
  [[noreturn]] void fail(std::string_view what, int error_number) const {
    throw IoError(path_ + ": " + std::string(what) + " at offset " + std::to_string(offset_) +
                      ": " + std::strerror(error_number) + " (errno " +
                      std::to_string(error_number) + ")",
                  error_number, offset_);
  }

  std::string path_;
  int fd_ = -1;
  std::uint64_t offset_ = 0;
};

}  // namespace

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<std::uint64_t> shape,
                            std::span<const std::byte> data) {
  check_new_name(names_, name);
  const std::uint64_t nbytes = checked_nbytes(name, dtype, shape);
  if (data.size() != nbytes) {
    throw std::invalid_argument("tensor " + single_quoted(name) + ": " +
                                std::to_string(data.size()) + " bytes of data, but " +
                                std::string(dtype_name(dtype)) + " " + format_shape(shape) +
                                " needs " + std::to_string(nbytes));
  }
  names_.insert(name);
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), nbytes, data, FillFn{}});
}

void SafetensorsWriter::add(std::string name, DType dtype, std::vector<std::uint64_t> shape,
                            FillFn fill) {
  check_new_name(names_, name);
  if (!fill) {
    throw std::invalid_argument("tensor " + single_quoted(name) + ": empty fill function");
  }
  const std::uint64_t nbytes = checked_nbytes(name, dtype, shape);
  names_.insert(name);
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), nbytes, {}, std::move(fill)});
}

std::string SafetensorsWriter::serialize_header() const {
  if (header_alignment_ == 0) {
    throw std::invalid_argument("header alignment must be at least 1");
  }
  std::string json = "{";
  if (!metadata_.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata_) {
      check_utf8(key, "metadata key " + single_quoted(key));
      check_utf8(value, "metadata value of " + single_quoted(key));
      if (!first) {
        json += ',';
      }
      first = false;
      append_json_string(json, key);
      json += ':';
      append_json_string(json, value);
    }
    json += '}';
  }
  std::uint64_t offset = 0;
  for (const Entry& entry : entries_) {
    if (json.back() != '{') {
      json += ',';
    }
    append_json_string(json, entry.name);
    json += ":{\"dtype\":\"";
    json += dtype_name(entry.dtype);
    json += "\",\"shape\":[";
    for (std::size_t i = 0; i < entry.shape.size(); ++i) {
      if (i != 0) {
        json += ',';
      }
      append_number(json, entry.shape[i]);
    }
    json += "],\"data_offsets\":[";
    append_number(json, offset);
    json += ',';
    if (__builtin_add_overflow(offset, entry.nbytes, &offset)) {
      throw std::invalid_argument("total tensor size overflows 64 bits");
    }
    append_number(json, offset);
    json += "]}";
  }
  json += '}';
  const std::size_t misalignment = (kHeaderLengthBytes + json.size()) % header_alignment_;
  if (misalignment != 0) {
    json.append(header_alignment_ - misalignment, ' ');
  }
  if (json.size() > kMaxHeaderLength) {
    throw std::invalid_argument("header of " + std::to_string(json.size()) +
                                " bytes exceeds the format's limit of " +
                                std::to_string(kMaxHeaderLength));
  }

  std::uint64_t n = json.size();
  if constexpr (std::endian::native == std::endian::big) {
    n = __builtin_bswap64(n);
  }
  std::string out(kHeaderLengthBytes, '\0');
  std::memcpy(out.data(), &n, sizeof(n));
  out += json;
  return out;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  const std::string header = serialize_header();
  OutputFile file(path);
  file.write(reinterpret_cast<const std::byte*>(header.data()), header.size());

  // One buffer, reused by every FillFn tensor.
  std::size_t chunk_bytes = 0;
  for (const Entry& entry : entries_) {
    if (entry.fill) {
      chunk_bytes = std::max<std::size_t>(chunk_bytes,
                                          std::min<std::uint64_t>(entry.nbytes, kFillChunkBytes));
    }
  }
  const auto chunk = std::make_unique_for_overwrite<std::byte[]>(chunk_bytes);

  for (const Entry& entry : entries_) {
    if (!entry.fill) {
      file.write(entry.data.data(), entry.data.size());
      continue;
    }
    for (std::uint64_t done = 0; done < entry.nbytes;) {
      const auto size =
          static_cast<std::size_t>(std::min<std::uint64_t>(entry.nbytes - done, chunk_bytes));
      entry.fill(chunk.get(), size, done);
      file.write(chunk.get(), size);
      done += size;
    }
  }
  file.close();
}

}  // namespace warpload
