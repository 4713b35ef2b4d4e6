// See verify.hpp. The data section is read in kChunk pieces (tensors tile it, so a piece
// covers the tail of one tensor and the heads of the next ones) and each tensor's part of the
// piece is compared with its loaded bytes: one pread per 8 MiB however many tiny tensors.

#include "core/verify.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/printable.hpp"
#include "common/unique_fd.hpp"
#include "device/cuda_shim.hpp"
#include "storage/object_client.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

constexpr std::size_t kChunk = std::size_t{8} << 20;

std::string errno_text(int error_number) {
  return std::string(std::strerror(error_number)) + " (errno " + std::to_string(error_number) + ")";
}

std::string hex_byte(std::byte value) {
  char text[8];
  std::snprintf(text, sizeof(text), "0x%02x", static_cast<unsigned>(value));
  return text;
}

// Fills [dest, dest + size) from `offset`, retrying short reads and EINTR.
void read_range(int fd, std::byte* dest, std::size_t size, std::uint64_t offset,
                const std::string& file) {
  std::size_t done = 0;
  while (done < size) {
    const std::uint64_t at = offset + done;
    const ssize_t got = ::pread(fd, dest + done, size - done, static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error_number = errno;
      throw IoError(file + ": verify: read failed at offset " + std::to_string(at) + ": " +
                        errno_text(error_number),
                    error_number, at);
    }
    if (got == 0) {
      throw IoError(file + ": verify: unexpected end of file at offset " + std::to_string(at), 0,
                    at);
    }
    done += static_cast<std::size_t>(got);
  }
}

// A fresh descriptor (not the one the load read through), its size checked; the caller owns it.
int open_for_verify(const std::string& file, const Header& header) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int error_number = errno;
    if (error_number == ENOENT) throw NotFoundError(file + ": verify: no such file");
    throw IoError(file + ": verify: cannot open: " + errno_text(error_number), error_number, 0);
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    const int error_number = errno;
    throw IoError(file + ": verify: cannot stat: " + errno_text(error_number), error_number, 0);
  }
  if (static_cast<std::uint64_t>(info.st_size) != header.file_size) {
    throw IoError(file + ": verify: file changed size since it was loaded (" +
                      std::to_string(header.file_size) + " -> " + std::to_string(info.st_size) +
                      " bytes)",
                  0, 0);
  }
  return fd.release();
}

}  // namespace

void verify_loaded_file(const std::filesystem::path& path, const Header& header, int device_index,
                        const LoadedTensorBytes& loaded) {
  verify_loaded_tensors(path, header, 0, header.tensors.size(), device_index, loaded);
}

void verify_loaded_tensors(const std::filesystem::path& path, const Header& header,
                           std::size_t first, std::size_t last, int device_index,
                           const LoadedTensorBytes& loaded) {
  last = std::min(last, header.tensors.size());
  if (first >= last) return;
  const std::string file = path.string();
  // Fills [dest, dest + size) with file bytes from `offset`: fresh ranged GETs of the version
  // the load read (its pinned ETag) for a URL, pread()s on a fresh descriptor for a file.
  std::function<void(std::byte*, std::size_t, std::uint64_t)> read;
  ObjectUrl url;
  PinnedObject version;
  std::optional<UniqueFd> fd;
  if (is_object_url(file)) {
    url = parse_object_url(file);
    static_cast<void>(pinned_object_version(file, &version));
    read = [&](std::byte* dest, std::size_t size, std::uint64_t offset) {
      const ObjectRange range{&url, version.etag, offset, size, dest};
      fetch_ranges({&range, 1}, resolve_http_settings({}), nullptr);
    };
  } else {
    fd.emplace(open_for_verify(file, header));
    read = [&](std::byte* dest, std::size_t size, std::uint64_t offset) {
      read_range(fd->get(), dest, size, offset, file);
    };
  }
  // Tensors tile the data section, so [first, last) is one byte range of it.
  const std::uint64_t range_begin = header.tensors[first].begin;
  const std::uint64_t range_end = header.tensors[last - 1].end;
  const std::size_t chunk =
      static_cast<std::size_t>(std::min<std::uint64_t>(range_end - range_begin, kChunk));
  std::vector<std::byte> from_file(chunk);
  std::vector<std::byte> from_device(device_index >= 0 ? chunk : 0);
  auto tensor = header.tensors.begin() + static_cast<std::ptrdiff_t>(first);
  const auto tensors_end = header.tensors.begin() + static_cast<std::ptrdiff_t>(last);
  for (std::uint64_t at = range_begin; at < range_end; at += chunk) {
    const std::size_t size =
        static_cast<std::size_t>(std::min<std::uint64_t>(chunk, range_end - at));
    read(from_file.data(), size, header.data_offset() + at);
    // Compare each tensor's part of [at, at + size).
    for (; tensor != tensors_end && tensor->begin < at + size; ++tensor) {
      const std::uint64_t begin = std::max(tensor->begin, at);
      const std::uint64_t end = std::min(tensor->end, at + size);
      if (begin < end) {
        const std::byte* expected = from_file.data() + (begin - at);
        const std::byte* got = loaded(*tensor) + (begin - tensor->begin);
        const auto length = static_cast<std::size_t>(end - begin);
        if (device_index >= 0) {
          copy_to_host(from_device.data(), got, length, device_index);
          got = from_device.data();
        }
        if (std::memcmp(got, expected, length) != 0) {
          const auto [g, e] = std::mismatch(got, got + length, expected);
          const std::uint64_t in_tensor =
              begin - tensor->begin + static_cast<std::uint64_t>(g - got);
          const std::uint64_t offset = header.data_offset() + tensor->begin + in_tensor;
          throw IoError(file + ": tensor '" + printable(tensor->name) + "': verify: loaded byte " +
                            std::to_string(in_tensor) + " of the tensor (file offset " +
                            std::to_string(offset) + ") is " + hex_byte(*g) + ", the file has " +
                            hex_byte(*e),
                        EIO, offset);
        }
      }
      // A tensor that runs past this piece is continued in the next one.
      if (tensor->end > at + size) break;
    }
  }
}

}  // namespace warpload::detail
