#include "warpload/storage.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "storage/backends.hpp"
#include "storage/hf3fs_shim.hpp"
#include "warpload/error.hpp"

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x2000U
#endif

namespace warpload {

StorageFile::~StorageFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::int64_t StorageFile::read_some(std::byte* dest, std::size_t size,
                                    std::uint64_t offset) noexcept {
  const ssize_t got = ::pread(fd_, dest, size, static_cast<off_t>(offset));
  return got >= 0 ? static_cast<std::int64_t>(got) : -static_cast<std::int64_t>(errno);
}

namespace detail {

namespace {

[[noreturn]] void throw_open_error(const std::filesystem::path& path, int error_number) {
  const std::string message = path.string() + ": cannot open: " + std::strerror(error_number);
  if (error_number == ENOENT) throw NotFoundError(message);
  throw IoError(message, error_number, 0);
}

}  // namespace

std::size_t direct_io_alignment(int fd) noexcept {
  struct statx info {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &info) != 0 ||
      (info.stx_mask & STATX_DIOALIGN) == 0) {
    return kFallbackDirectAlignment;
  }
  // stx_dio_mem_align and stx_dio_offset_align sit at bytes 0x98 and 0x9c of the kernel's
  // struct statx; older glibc headers call that space padding, so read it by position.
  static_assert(sizeof(info) >= 0xa0, "struct statx is shorter than the kernel's");
  std::uint32_t mem_align = 0;
  std::uint32_t offset_align = 0;
  std::memcpy(&mem_align, reinterpret_cast<const char*>(&info) + 0x98, sizeof(mem_align));
  std::memcpy(&offset_align, reinterpret_cast<const char*>(&info) + 0x9c, sizeof(offset_align));
  const std::size_t alignment = std::max(mem_align, offset_align);
  // 0 means the kernel knows O_DIRECT is unsupported here; open() succeeded anyway, so be
  // conservative rather than wrong.
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) return kFallbackDirectAlignment;
  return alignment;
}

std::size_t enable_direct(int fd) noexcept {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) return 1;
  return direct_io_alignment(fd);
}

OpenedFile open_file(const std::filesystem::path& path, bool direct) {
  // O_NONBLOCK keeps open() from hanging on a FIFO; it is cleared again for regular files
  // (io_uring would otherwise return -EAGAIN for reads it could have waited on).
  const int base_flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK;
  int fd = ::open(path.c_str(), base_flags | (direct ? O_DIRECT : 0));
  if (fd < 0 && direct && errno == EINVAL) {
    direct = false;  // the filesystem has no O_DIRECT (tmpfs, some FUSE): read buffered
    fd = ::open(path.c_str(), base_flags);
  }
  if (fd < 0) throw_open_error(path, errno);
  UniqueFd guard(fd);

  struct stat info {};
  if (::fstat(fd, &info) != 0) throw_open_error(path, errno);
  if (S_ISDIR(info.st_mode)) {
    throw IoError(path.string() + ": cannot read: is a directory", EISDIR, 0);
  }
  if (!S_ISREG(info.st_mode)) {
    throw UnsupportedError(path.string() + ": cannot read: not a regular file");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) throw_open_error(path, errno);

  OpenedFile opened;
  opened.size = static_cast<std::uint64_t>(info.st_size);
  opened.alignment = direct ? direct_io_alignment(fd) : 1;
  opened.fd = guard.release();
  return opened;
}

std::unique_ptr<StorageFile> open_storage_file(const std::filesystem::path& path, bool direct) {
  const OpenedFile opened = open_file(path, direct);
  UniqueFd guard(opened.fd);
  auto file = std::make_unique<StorageFile>(path, opened.fd, opened.size, opened.alignment);
  static_cast<void>(guard.release());
  return file;
}

}  // namespace detail

std::unique_ptr<Storage> make_storage(std::string_view name, const StorageOptions& options) {
  if (name == "auto") return detail::make_auto_storage(options);
  if (name == "posix") return detail::make_posix_storage(options);
  if (name == "mmap") return detail::make_mmap_storage(options);
  if (name == "uring" && detail::uring_available()) return detail::make_uring_storage(options);
  // "3fs" reports why its library cannot be used (which library, which symbol).
  if (name == "3fs") return detail::make_usrbio_storage(options);
  // "gds" likewise (no cuda_device, no CUDA, no cuFile, or its driver would not open).
  if (name == "gds") return detail::make_gds_storage(options, nullptr);

  std::string names;
  for (const std::string& available : available_storage_names()) {
    names += (names.empty() ? "" : ", ") + available;
  }
  const std::string what =
      name == "uring" ? "' cannot run on this kernel (no io_uring)" : "' is not a storage backend";
  throw UnsupportedError("'" + std::string(name) + what + "; available: " + names);
}

std::vector<std::string> available_storage_names() {
  std::vector<std::string> names = {"auto", "posix"};
  if (detail::uring_available()) names.emplace_back("uring");
  names.emplace_back("mmap");
  if (detail::hf3fs_available()) names.emplace_back("3fs");
  return names;
}

std::string_view usrbio_target_name(UsrbioTarget target) noexcept {
  switch (target) {
    case UsrbioTarget::kIov:
      return "iov";
    case UsrbioTarget::kStaging:
      return "staging";
    case UsrbioTarget::kAuto:
      break;
  }
  return "auto";
}

bool parse_usrbio_target(std::string_view text, UsrbioTarget* out) noexcept {
  for (const UsrbioTarget t : {UsrbioTarget::kAuto, UsrbioTarget::kIov, UsrbioTarget::kStaging}) {
    if (text == usrbio_target_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

}  // namespace warpload
