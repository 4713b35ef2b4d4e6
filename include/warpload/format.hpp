// The safetensors file format: parser and writer.
//
// File layout:
//   bytes [0, 8)          N, a little-endian u64: the length of the JSON header
//   bytes [8, 8 + N)      UTF-8 JSON object. Each key but "__metadata__" names a tensor:
//                           {"dtype": "BF16", "shape": [4096, 4096], "data_offsets": [b, e]}
//                         with [b, e) relative to the start of the data section. The optional
//                         "__metadata__" is a string -> string map. Leading whitespace before
//                         '{' is accepted; writers pad the JSON with spaces to a multiple of 8.
//   bytes [8 + N, end)    the data section: tensors back to back, no gaps, no overlap.
//
// Validation follows the reference parser (huggingface/safetensors), check by check and in
// its order (see FormatRule in error.hpp), and adds one rule: a key may appear only once.
// All arithmetic on untrusted lengths is overflow-checked.
//
// Thread safety: free functions are reentrant; a Header is an immutable value once returned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "warpload/dtype.hpp"

namespace warpload {

inline constexpr std::uint64_t kHeaderLengthBytes = 8;
inline constexpr std::uint64_t kMaxHeaderLength = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kU8;
  std::vector<std::uint64_t> shape;  // empty for a 0-d scalar
  std::uint64_t begin = 0;           // byte offset in the data section
  std::uint64_t end = 0;             // one past the last byte, in the data section

  [[nodiscard]] std::uint64_t nbytes() const noexcept { return end - begin; }
  [[nodiscard]] std::uint64_t numel() const noexcept;  // 1 for a 0-d scalar
};

// Hash for string-keyed maps that are searched with a string_view without a copy.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view name) const noexcept {
    return std::hash<std::string_view>{}(name);
  }
};

// A parsed, validated header.
struct Header {
  std::uint64_t header_length = 0;  // N
  std::uint64_t file_size = 0;
  std::vector<TensorInfo> tensors;              // in data order (sorted by begin)
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent

  // Byte offset of the data section in the file: 8 + N.
  [[nodiscard]] std::uint64_t data_offset() const noexcept {
    return kHeaderLengthBytes + header_length;
  }
  // Bytes in the data section (== the last tensor's end).
  [[nodiscard]] std::uint64_t data_size() const noexcept { return file_size - data_offset(); }

  // Index into `tensors` by name, or nullptr.
  [[nodiscard]] const TensorInfo* find(std::string_view name) const noexcept;

  // name -> index into `tensors`
  std::unordered_map<std::string, std::size_t, NameHash, std::equal_to<>> by_name;
};

// "[4096, 11008]"; "[]" for a 0-d scalar. Used in messages and tables.
[[nodiscard]] std::string format_shape(std::span<const std::uint64_t> shape);

// Parses and validates a header.
//   `prefix`    the first bytes of the file: at least min(file_size, 8 + N) of them.
//   `file_size` the file's length in bytes.
//   `file`      how to name the file in error messages.
// Throws InvalidFileError naming the file, the rule and (where it applies) the tensor.
[[nodiscard]] Header parse_header(std::span<const std::byte> prefix, std::uint64_t file_size,
                                  std::string_view file);

// Reads and validates the header of the file at `path` with two small preads.
// Throws NotFoundError, IoError or InvalidFileError.
[[nodiscard]] Header read_header(const std::filesystem::path& path);

// Writes safetensors files. Tensors are laid out in the order they were added; the JSON
// header is padded with spaces so that 8 + N is a multiple of `header_alignment`.
//
// Not thread-safe; one writer per file.
class SafetensorsWriter {
 public:
  // Fills `dest` (the tensor's `size` bytes, at tensor byte offset `offset`) with data.
  // Called with consecutive chunks of at most a few MiB, so large tensors stream.
  using FillFn = std::function<void(std::byte* dest, std::size_t size, std::uint64_t offset)>;

  SafetensorsWriter() = default;

  // Adds a tensor whose bytes are `data` (must stay alive until write()). Throws
  // std::invalid_argument when data.size() does not match dtype and shape.
  void add(std::string name, DType dtype, std::vector<std::uint64_t> shape,
           std::span<const std::byte> data);
  // Adds a tensor whose bytes are produced by `fill` during write().
  void add(std::string name, DType dtype, std::vector<std::uint64_t> shape, FillFn fill);

  void set_metadata(std::map<std::string, std::string> metadata) {
    metadata_ = std::move(metadata);
  }
  // 8 by default, as the reference writer; 1 writes the JSON unpadded.
  void set_header_alignment(std::size_t alignment) { header_alignment_ = alignment; }

  // The 8-byte length followed by the (padded) JSON header, as it will be written.
  [[nodiscard]] std::string serialize_header() const;

  // Writes the file (truncating). Throws IoError naming the path.
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::uint64_t> shape;
    std::uint64_t nbytes;
    std::span<const std::byte> data;
    FillFn fill;
  };
  std::vector<Entry> entries_;
  std::unordered_set<std::string, NameHash, std::equal_to<>> names_;
  std::map<std::string, std::string> metadata_;
  std::size_t header_alignment_ = 8;
};

}  // namespace warpload
