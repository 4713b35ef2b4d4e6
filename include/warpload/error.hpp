// warpload error hierarchy.
//
// Every failure at the C++ API surfaces as an exception derived from warpload::Error. The
// hierarchy is deliberately small so bindings can map it one to one:
//
//   Error                 (base; never thrown directly)
//   ├── InvalidFileError  bad safetensors file or index: carries the FormatRule broken
//   ├── NotFoundError     a path, tensor name or library that does not exist
//   ├── IoError           a read failed: carries errno and the byte offset in the file
//   ├── UnsupportedError  a valid request this build, backend or target cannot serve
//   ├── OutOfMemoryError  an allocation for destination or staging memory failed
//   └── CancelledError    the caller cancelled a load in progress
//
// Every message names the file and, where it applies, the tensor and the byte offset, e.g.
//   model-00003.safetensors: tensor 'lm_head.weight': data_offsets [a, b) overlap ...
//
// Thread safety: exception objects are immutable after construction.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace warpload {

enum class ErrorKind : std::uint8_t {
  kInvalidFile,
  kNotFound,
  kIo,
  kUnsupported,
  kOutOfMemory,
  kCancelled,
};

// The validation rule a file broke. The first eleven mirror the reference parser's error
// variants, in the order it checks them; the rest are warpload's own checks on top.
enum class FormatRule : std::uint8_t {
  kHeaderTooSmall,                // file shorter than the 8-byte length prefix
  kHeaderTooLarge,                // header length N > 100,000,000
  kInvalidHeaderLength,           // 8 + N runs past the end of the file
  kInvalidHeader,                 // header bytes are not valid UTF-8
  kInvalidHeaderDeserialization,  // not JSON, or JSON of the wrong shape / unknown dtype
  kDuplicateName,                 // the same key twice in one header
  kInvalidOffset,                 // sorted tensors do not tile [0, end) without gaps or overlap
  kValidationOverflow,            // shape product or bit count overflows 64 bits
  kMisalignedSlice,               // element count x bits is not a whole number of bytes
  kTensorInvalidInfo,             // end - begin != size implied by dtype and shape
  kMetadataIncompleteBuffer,      // 8 + N + data length != file length
  kDuplicateTensor,               // the same tensor name in two files of one load
  kInvalidIndex,                  // model.safetensors.index.json is malformed or inconsistent
  kInvalidConfig,                 // a warpload settings file (config.hpp) is malformed or mistyped
  kInvalidManifest,               // a digest manifest (`warpload hash`) is malformed
  kChecksumMismatch,              // a tensor's bytes differ from its digest in a manifest
};

[[nodiscard]] std::string_view format_rule_name(FormatRule rule) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

class InvalidFileError : public Error {
 public:
  InvalidFileError(FormatRule rule, const std::string& message)
      : Error(ErrorKind::kInvalidFile, message), rule_(rule) {}
  [[nodiscard]] FormatRule rule() const noexcept { return rule_; }

 private:
  FormatRule rule_;
};

class NotFoundError : public Error {
 public:
  explicit NotFoundError(const std::string& message) : Error(ErrorKind::kNotFound, message) {}
};

class IoError : public Error {
 public:
  // `error_number` is the errno value (0 when the failure is an unexpected end of file);
  // `offset` is the byte offset in the file where the failed read started.
  IoError(const std::string& message, int error_number, std::uint64_t offset)
      : Error(ErrorKind::kIo, message), errno_(error_number), offset_(offset) {}
  [[nodiscard]] int error_number() const noexcept { return errno_; }
  [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }

 private:
  int errno_;
  std::uint64_t offset_;
};

class UnsupportedError : public Error {
 public:
  explicit UnsupportedError(const std::string& message) : Error(ErrorKind::kUnsupported, message) {}
};

class OutOfMemoryError : public Error {
 public:
  explicit OutOfMemoryError(const std::string& message) : Error(ErrorKind::kOutOfMemory, message) {}
};

class CancelledError : public Error {
 public:
  explicit CancelledError(const std::string& message) : Error(ErrorKind::kCancelled, message) {}
};

}  // namespace warpload
