// Checks shared by the fuzz targets. A broken invariant is a bug in warpload, not in the input:
// it is reported on stderr and the process aborts, which libFuzzer records as a crash and
// saves the input that caused it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "warpload/dtype.hpp"
#include "warpload/format.hpp"

namespace warpload::fuzz {

[[noreturn]] inline void invariant_broken(const std::string& what) {
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

inline void check(bool condition, const std::string& what) {
  if (!condition) invariant_broken(what);
}

// A header parse_header() accepted must describe `file_size` bytes exactly: tensors tile the
// data section without gaps or overlap, each tensor's size follows from its dtype and shape
// without overflow, and by_name indexes every tensor once.
inline void check_header(const Header& header, std::uint64_t file_size) {
  check(header.file_size == file_size, "file_size differs from the file's");
  check(header.header_length <= kMaxHeaderLength, "header longer than the cap was accepted");
  check(header.data_offset() <= file_size, "data offset past the end of the file");
  check(header.by_name.size() == header.tensors.size(), "by_name and tensors disagree");
  std::uint64_t end = 0;
  for (std::size_t i = 0; i < header.tensors.size(); ++i) {
    const TensorInfo& t = header.tensors[i];
    check(t.begin == end, "tensor '" + t.name + "' does not start where the previous ends");
    check(t.end >= t.begin, "tensor '" + t.name + "' ends before it begins");
    std::uint64_t numel = 1;
    for (const std::uint64_t dim : t.shape) {
      check(!__builtin_mul_overflow(numel, dim, &numel), "tensor '" + t.name + "' numel overflows");
    }
    std::uint64_t bits = 0;
    check(!__builtin_mul_overflow(numel, std::uint64_t{dtype_bits(t.dtype)}, &bits),
          "tensor '" + t.name + "' bit count overflows");
    check(bits % 8 == 0 && bits / 8 == t.nbytes(), "tensor '" + t.name + "' size mismatch");
    const auto it = header.by_name.find(t.name);
    check(it != header.by_name.end() && it->second == i,
          "by_name does not point at tensor '" + t.name + "'");
    end = t.end;
  }
  check(header.data_offset() + end == file_size, "tensors do not cover the data section");
}

// Every error message names the file it is about.
inline void check_names_file(std::string_view message, std::string_view file) {
  check(message.find(file) != std::string_view::npos,
        "error message does not name the file: " + std::string(message));
}

}  // namespace warpload::fuzz
