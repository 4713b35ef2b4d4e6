// An independent safetensors reader for tests: std::ifstream for bytes and a few lines of
// recursive-descent JSON, sharing no code with warpload. It trusts its input: it is meant to
// read well-formed files byte for byte, not to validate them, and throws std::runtime_error
// on anything it does not understand.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace warpload::testing {

struct ReferenceTensor {
  std::string dtype;  // as written in the file, e.g. "BF16"
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0;  // relative to the data section
  std::uint64_t end = 0;
};

struct ReferenceFile {
  std::uint64_t header_length = 0;  // N
  std::uint64_t data_offset = 0;    // 8 + N
  std::string json;                 // the N header bytes, padding included
  std::map<std::string, ReferenceTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// `size` bytes of the file at `path` starting at `offset`.
inline std::string read_file_range(const std::filesystem::path& path, std::uint64_t offset,
                                   std::uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("reference reader: cannot open " + path.string());
  }
  in.seekg(static_cast<std::streamoff>(offset));
  std::string bytes(size, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (static_cast<std::uint64_t>(in.gcount()) != size) {
    throw std::runtime_error("reference reader: short read of " + path.string());
  }
  return bytes;
}

namespace reference_detail {

class Json {
 public:
  explicit Json(std::string_view text) : text_(text) {}

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r' || text_[pos_] == '\t')) {
      ++pos_;
    }
  }
  void expect(char c) {
    skip_space();
    if (pos_ >= text_.size() || text_[pos_] != c) {
      fail(std::string("expected '") + c + "'");
    }
    ++pos_;
  }
  // Consumes `c` if it is next.
  bool accept(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool accept_null() {
    skip_space();
    if (text_.substr(pos_, 4) != "null") {
      return false;
    }
    pos_ += 4;
    return true;
  }

  std::uint64_t number() {
    skip_space();
    std::uint64_t value = 0;
    const std::size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      value = value * 10 + static_cast<std::uint64_t>(text_[pos_++] - '0');
    }
    if (pos_ == start) {
      fail("expected a number");
    }
    return value;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) {
        fail("unterminated string");
      }
      const char c = text_[pos_++];
      if (c == '"') {
        return out;
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      const char escape = text_[pos_++];
      switch (escape) {
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u':
          append_utf8(out, code_point());
          break;
        default:
          out += escape;  // '"', '\\', '/'
      }
    }
  }

  std::vector<std::uint64_t> numbers() {
    std::vector<std::uint64_t> out;
    expect('[');
    if (accept(']')) {
      return out;
    }
    do {
      out.push_back(number());
    } while (accept(','));
    expect(']');
    return out;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("reference reader: " + what + " at header byte " +
                             std::to_string(pos_));
  }

 private:
  std::uint32_t hex4() {
    if (pos_ + 4 > text_.size()) {
      fail("short \\u escape");
    }
    const auto value =
        static_cast<std::uint32_t>(std::stoul(std::string(text_.substr(pos_, 4)), nullptr, 16));
    pos_ += 4;
    return value;
  }
  std::uint32_t code_point() {
    const std::uint32_t high = hex4();
    if (high < 0xD800 || high > 0xDBFF) {
      return high;
    }
    if (text_.substr(pos_, 2) != "\\u") {
      fail("lone surrogate");
    }
    pos_ += 2;
    return 0x10000 + ((high - 0xD800) << 10) + (hex4() - 0xDC00);
  }
  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace reference_detail

// Parses the header JSON (the N bytes after the length prefix).
inline void parse_reference_json(std::string_view json, ReferenceFile& file) {
  reference_detail::Json in(json);
  in.expect('{');
  if (in.accept('}')) {
    return;
  }
  do {
    const std::string key = in.string();
    in.expect(':');
    if (key == "__metadata__") {
      if (in.accept_null()) {
        continue;
      }
      in.expect('{');
      if (in.accept('}')) {
        continue;
      }
      do {
        std::string name = in.string();
        in.expect(':');
        file.metadata[name] = in.string();
      } while (in.accept(','));
      in.expect('}');
      continue;
    }
    ReferenceTensor tensor;
    in.expect('{');
    do {
      const std::string field = in.string();
      in.expect(':');
      if (field == "dtype") {
        tensor.dtype = in.string();
      } else if (field == "shape") {
        tensor.shape = in.numbers();
      } else if (field == "data_offsets") {
        const std::vector<std::uint64_t> offsets = in.numbers();
        if (offsets.size() != 2) {
          in.fail("data_offsets needs 2 numbers");
        }
        tensor.begin = offsets[0];
        tensor.end = offsets[1];
      } else {
        in.fail("unknown field " + field);
      }
    } while (in.accept(','));
    in.expect('}');
    file.tensors[key] = tensor;
  } while (in.accept(','));
  in.expect('}');
}

// Reads the length prefix and header of the file at `path`.
inline ReferenceFile read_reference_header(const std::filesystem::path& path) {
  const std::string prefix = read_file_range(path, 0, 8);
  ReferenceFile file;
  for (int i = 7; i >= 0; --i) {
    file.header_length = (file.header_length << 8) | static_cast<unsigned char>(prefix[i]);
  }
  file.data_offset = 8 + file.header_length;
  file.json = read_file_range(path, 8, file.header_length);
  parse_reference_json(file.json, file);
  return file;
}

// The bytes of tensor `name`, read straight from the file.
inline std::string read_reference_tensor(const std::filesystem::path& path,
                                         const ReferenceFile& file, const std::string& name) {
  const ReferenceTensor& tensor = file.tensors.at(name);
  return read_file_range(path, file.data_offset + tensor.begin, tensor.end - tensor.begin);
}

}  // namespace warpload::testing
