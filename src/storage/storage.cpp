#include "warpload/storage.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <utility>

#include "device/cufile_shim.hpp"
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

namespace {

// One row of the backend table: what the backend is, whether it can run here, how to make it.
struct BackendEntry {
  BackendInfo info;
  // "" when the backend can run on this machine, else the sentence a user sees. Never throws.
  std::string (*unavailable)(const StorageOptions& options) = nullptr;
  std::unique_ptr<Storage> (*make)(const StorageOptions& options) = nullptr;
};

constexpr std::string_view kDefaultBackend = "auto";

std::string always_available(const StorageOptions& /*options*/) { return {}; }

std::string uring_unavailable(const StorageOptions& /*options*/) {
  if (detail::uring_available()) return {};
  return "backend 'uring' cannot run on this kernel: io_uring is missing or disabled "
         "(io_uring_setup failed, or it cannot read)";
}

// The 3FS client library: loading it is the whole check (a mount is checked per file).
std::string hf3fs_unavailable(const StorageOptions& /*options*/) {
  try {
    static_cast<void>(detail::hf3fs_api());
    return {};
  } catch (const std::exception& e) {
    return std::string("backend '3fs' cannot run here: ") + e.what();
  }
}

// The cuFile library: whether the driver opens and in which mode is the device load's
// business (storage/device_storage.hpp), as are the CUDA device and the nvidia-fs module.
std::string cufile_unavailable(const StorageOptions& /*options*/) {
  try {
    static_cast<void>(detail::cufile_api());
    return {};
  } catch (const std::exception& e) {
    return std::string("backend 'gds' cannot run here: ") + e.what();
  }
}

std::unique_ptr<Storage> make_gds(const StorageOptions& options) {
  return detail::make_gds_storage(options, nullptr);
}

// The registered backends, in the order `bench` shows them. Adding a backend: a row here
// (docs/architecture.md, "Adding a backend").
const std::vector<BackendEntry>& backend_table() {
  static const std::vector<BackendEntry> table = {
      {{.name = "auto",
        .summary = "per file: buffered posix when small or mostly in the page cache, else "
                   "O_DIRECT through io_uring",
        .picks_direct = true,
        .host_destinations = true,
        .benchmarked = true,
        .uses_threads = true,
        .uses_block_size = true,
        .uses_queue_depth = true},
       &always_available,
       &detail::make_auto_storage},
      {{.name = "posix",
        .summary = "a thread pool of pread()s straight into the destination",
        .takes_direct = true,
        .host_destinations = true,
        .benchmarked = true,
        .tuned = true,
        .uses_threads = true,
        .uses_block_size = true},
       &always_available,
       &detail::make_posix_storage},
      {{.name = "uring",
        .summary = "io_uring: many reads in flight per thread, registered files",
        .takes_direct = true,
        .host_destinations = true,
        .benchmarked = true,
        .tuned = true,
        .uses_threads = true,
        .uses_block_size = true,
        .uses_queue_depth = true},
       &uring_unavailable,
       &detail::make_uring_storage},
      {{.name = "mmap",
        .summary = "map each file and memcpy out of it: the reference implementation's way, "
                   "the baseline",
        .host_destinations = true,
        .owns_buffers = true,
        .preferred_allocator = true,
        .baseline = true,
        .benchmarked = true},
       &always_available,
       &detail::make_mmap_storage},
      {{.name = "3fs",
        .summary = "3FS USRBIO (client library loaded at run time): files on a 3FS mount, zero "
                   "copy into shared-memory iovs",
        .host_destinations = true,
        .needs_mount = true,
        .preferred_allocator = true,
        .benchmarked = true,
        .tuned = true,
        .uses_block_size = true,
        .uses_usrbio = true},
       &hf3fs_unavailable,
       &detail::make_usrbio_storage},
      {{.name = "gds",
        .summary = "GPUDirect Storage (cuFile, loaded at run time): straight into CUDA device "
                   "memory; device loads only",
        .device_destinations = true,
        .stages_when_unusable = true,
        .benchmarked = true,
        .uses_threads = true,
        .uses_block_size = true},
       &cufile_unavailable,
       &make_gds},
      {{.name = "http",
        .summary = "object storage by URL (s3://, http://, https://): libcurl, many ranged GETs "
                   "in flight straight into the destination",
        .host_destinations = true,
        .uses_threads = true,
        .uses_http = true,
        .reads_urls = true},
       &always_available,
       &detail::make_http_storage},
  };
  return table;
}

const BackendEntry* find_entry(std::string_view name) noexcept {
  for (const BackendEntry& entry : backend_table()) {
    if (entry.info.name == name) return &entry;
  }
  return nullptr;
}

std::string unregistered(std::string_view name) {
  std::string names;
  for (const std::string& available : available_storage_names()) {
    names += (names.empty() ? "" : ", ") + available;
  }
  std::string message = "'";  // built by appending: GCC 12 misreports '"x" + string' (-Wrestrict)
  message += name;
  message += "' is not a storage backend; available: " + names;
  return message;
}

}  // namespace

std::vector<BackendInfo> storage_backends() {
  std::vector<BackendInfo> infos;
  for (const BackendEntry& entry : backend_table()) infos.push_back(entry.info);
  return infos;
}

const BackendInfo* find_backend(std::string_view name) noexcept {
  const BackendEntry* entry = find_entry(name);
  return entry != nullptr ? &entry->info : nullptr;
}

std::string_view default_backend_name() noexcept { return kDefaultBackend; }

std::string backend_unavailable_reason(std::string_view name, const StorageOptions& options) {
  try {
    const BackendEntry* entry = find_entry(name);
    if (entry == nullptr) return unregistered(name);
    return entry->unavailable(options);
  } catch (...) {
    return "backend '" + std::string(name) + "' cannot be checked (out of memory)";
  }
}

std::unique_ptr<Storage> make_storage(std::string_view name, const StorageOptions& options) {
  const BackendEntry* entry = find_entry(name);
  if (entry == nullptr) throw UnsupportedError(unregistered(name));
  if (std::string reason = entry->unavailable(options); !reason.empty()) {
    throw UnsupportedError(reason);
  }
  return entry->make(options);
}

std::vector<std::string> available_storage_names() {
  std::vector<std::string> names;
  for (const BackendEntry& entry : backend_table()) {
    if (entry.info.host_destinations && !entry.info.reads_urls &&
        entry.unavailable(StorageOptions{}).empty()) {
      names.push_back(entry.info.name);
    }
  }
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
