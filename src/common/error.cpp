#include "warpload/error.hpp"

namespace warpload {

std::string_view format_rule_name(FormatRule rule) noexcept {
  // These names appear in messages and in the CLI's JSON output: never rename one.
  switch (rule) {
    case FormatRule::kHeaderTooSmall:
      return "header_too_small";
    case FormatRule::kHeaderTooLarge:
      return "header_too_large";
    case FormatRule::kInvalidHeaderLength:
      return "invalid_header_length";
    case FormatRule::kInvalidHeader:
      return "invalid_header";
    case FormatRule::kInvalidHeaderDeserialization:
      return "invalid_header_deserialization";
    case FormatRule::kDuplicateName:
      return "duplicate_name";
    case FormatRule::kInvalidOffset:
      return "invalid_offset";
    case FormatRule::kValidationOverflow:
      return "validation_overflow";
    case FormatRule::kMisalignedSlice:
      return "misaligned_slice";
    case FormatRule::kTensorInvalidInfo:
      return "tensor_invalid_info";
    case FormatRule::kMetadataIncompleteBuffer:
      return "metadata_incomplete_buffer";
    case FormatRule::kDuplicateTensor:
      return "duplicate_tensor";
    case FormatRule::kInvalidIndex:
      return "invalid_index";
    case FormatRule::kInvalidConfig:
      return "invalid_config";
    case FormatRule::kInvalidManifest:
      return "invalid_manifest";
    case FormatRule::kChecksumMismatch:
      return "checksum_mismatch";
  }
  return "unknown_rule";
}

}  // namespace warpload
