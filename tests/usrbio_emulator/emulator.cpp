// USRBIO emulator: a libhf3fs_api_shared.so that implements the 3FS client ABI
// (src/storage/hf3fs_abi.h) on an ordinary local file system, so that tests drive the real
// 3fs backend code path through dlopen. Behaviour, choices and the fault-injection switches are
// documented in tests/usrbio_emulator/README.md; the comments here explain only why.

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "storage/hf3fs_abi.h"

#define HF3FS_EMU_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

// ---------------------------------------------------------------------------------------------
// Environment switches (read at each call: tests flip them between loads).

bool log_enabled() noexcept {
  const char* v = std::getenv("HF3FS_USRBIO_LIB_LOG");
  return v != nullptr && *v != '\0';
}

__attribute__((format(printf, 1, 2))) void log_call(const char* fmt, ...) noexcept {
  if (!log_enabled()) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "hf3fs-emu: %s\n", line);
}

// Parses a non-negative decimal environment variable; false when unset or malformed.
bool env_u64(const char* name, uint64_t* out) noexcept {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0') return false;
  *out = n;
  return true;
}

bool env_flag(const char* name) noexcept {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

// ---------------------------------------------------------------------------------------------
// Mount detection: a mount is a directory holding a `3fs-virt/` subdirectory.

bool is_dir(const std::string& p) noexcept {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_mount_root(const std::string& dir) noexcept {
  return is_dir(dir == "/" ? std::string("/3fs-virt") : dir + "/3fs-virt");
}

std::string canonical(const char* path) {
  char* r = ::realpath(path, nullptr);
  if (r == nullptr) return {};
  std::string s(r);
  std::free(r);
  return s;
}

std::string parent_of(const std::string& p) {
  auto slash = p.find_last_of('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return p.substr(0, slash);
}

// Nearest ancestor (the path itself included when it is a directory) that is a mount root;
// empty when none. Paths that do not exist yet are judged by their parent directory.
std::string find_mount(const char* path) {
  if (path == nullptr || *path == '\0') return {};
  std::string dir = canonical(path);
  if (dir.empty()) {
    // Not there (yet): judge by the nearest existing ancestor.
    std::string raw(path);
    while (dir.empty()) {
      while (raw.size() > 1 && raw.back() == '/') raw.pop_back();
      if (raw == "/" || raw.find('/') == std::string::npos) {
        dir = canonical(raw == "/" ? "/" : ".");
        break;
      }
      raw = parent_of(raw);
      dir = canonical(raw.c_str());
    }
    if (dir.empty()) return {};
  } else if (!is_dir(dir)) {
    dir = parent_of(dir);
  }
  for (;;) {
    if (is_mount_root(dir)) return dir;
    if (dir == "/") return {};
    dir = parent_of(dir);
  }
}

std::string fd_path(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char buf[PATH_MAX];
  ssize_t n = ::readlink(link, buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<size_t>(n));
}

// Validates the `mount` argument of iovcreate/iorcreate: it must name a mount root (not merely a
// path inside one), as the real library builds `<mount>/3fs-virt/...` from it.
int resolve_mount_arg(const char* mount, std::string* out) {
  if (mount == nullptr || *mount == '\0') return -EINVAL;
  std::string c = canonical(mount);
  if (c.empty()) return -ENOENT;
  if (!is_mount_root(c)) return -EINVAL;
  if (c.size() >= sizeof(hf3fs_iov{}.mount_point)) return -ENAMETOOLONG;
  *out = std::move(c);
  return 0;
}

void copy_mount(char (&dst)[256], const std::string& src) noexcept {
  std::memset(dst, 0, sizeof dst);
  std::memcpy(dst, src.data(), std::min(src.size(), sizeof dst - 1));
}

std::string hex_id(const void* id) {
  static const char kDigits[] = "0123456789abcdef";
  const auto* b = static_cast<const uint8_t*>(id);
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[2 * i] = kDigits[b[i] >> 4];
    s[2 * i + 1] = kDigits[b[i] & 15];
  }
  return s;
}

int random_id(uint8_t (&id)[16]) noexcept {
  size_t got = 0;
  while (got < sizeof id) {
    ssize_t n = ::getrandom(id + got, sizeof id - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    got += static_cast<size_t>(n);
  }
  return 0;
}

std::string iov_link_dir(const std::string& mount) {
  return (mount == "/" ? std::string() : mount) + "/3fs-virt/iovs";
}

// ---------------------------------------------------------------------------------------------
// Shared memory.

struct ShmMapping {
  void* base = nullptr;
  size_t size = 0;
};

// Bytes of shared memory this process's emulator created and still holds (iovs from iovcreate,
// rings), checked against WARPLOAD_EMU_SHM_LIMIT_BYTES: a /dev/shm that is full.
std::atomic<uint64_t> g_shm_bytes{0};

void release_shm_bytes(size_t size) noexcept { g_shm_bytes.fetch_sub(size); }

// Opens (or creates) POSIX shared memory `name`, sizes it when creating, maps it shared.
// Creating more than WARPLOAD_EMU_SHM_LIMIT_BYTES in all fails with -ENOSPC.
int map_shm(const std::string& name, size_t size, bool create, ShmMapping* out) {
  uint64_t limit = 0;
  if (create && env_u64("WARPLOAD_EMU_SHM_LIMIT_BYTES", &limit) &&
      g_shm_bytes.load() + size > limit) {
    return -ENOSPC;
  }
  int flags = create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR;
  int fd = ::shm_open(name.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  if (create && ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int e = errno;
    ::close(fd);
    ::shm_unlink(name.c_str());
    return -e;
  }
  if (!create) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < size) {
      ::close(fd);
      return -EINVAL;
    }
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    if (create) ::shm_unlink(name.c_str());
    return -e;
  }
  if (create) g_shm_bytes.fetch_add(size);
  out->base = p;
  out->size = size;
  return 0;
}

// The private handle behind hf3fs_iov::iovh for iovs made by iovcreate/iovopen. Wrapped iovs
// get no handle (iovh == nullptr): nothing of theirs is ours to free.
struct IovHandle {
  std::string shm_name;
  std::string link_path;
  bool owner = false;  // created by iovcreate: destroy unlinks the shm and the symlink
};

// ---------------------------------------------------------------------------------------------
// Registered files.

struct RegisteredFile {
  int original_fd = -1;
  int dup_fd = -1;
  std::string path;
  RegisteredFile() = default;
  RegisteredFile(const RegisteredFile&) = delete;
  RegisteredFile& operator=(const RegisteredFile&) = delete;
  // Closed when the last I/O referring to it is gone, so a dereg racing with an I/O (misuse)
  // reads from a closed-but-not-reused descriptor never.
  ~RegisteredFile() {
    if (dup_fd >= 0) ::close(dup_fd);
  }
};

struct FileRegistry {
  std::mutex mu;
  std::unordered_map<int, std::shared_ptr<RegisteredFile>> by_original;
  std::unordered_map<int, std::shared_ptr<RegisteredFile>> by_dup;
};

FileRegistry& registry() {
  static auto* r = new FileRegistry;  // never destroyed: rings may outlive static teardown
  return *r;
}

// prep_io accepts the original fd or the value reg_fd returned (minus the duplicate).
std::shared_ptr<RegisteredFile> lookup_file(int fd) {
  FileRegistry& r = registry();
  std::lock_guard lock(r.mu);
  if (auto it = r.by_original.find(fd); it != r.by_original.end()) return it->second;
  if (fd <= 0) {
    if (auto it = r.by_dup.find(-fd); it != r.by_dup.end()) return it->second;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Rings.

using Clock = std::chrono::steady_clock;

struct IoSlot {
  bool read = true;
  uint8_t* ptr = nullptr;
  uint64_t len = 0;
  uint64_t off = 0;
  const void* userdata = nullptr;
  std::shared_ptr<RegisteredFile> file;
};

struct Submitted {
  int32_t slot;
  Clock::time_point at;
};

struct Ring {
  // Immutable after creation.
  int entries = 0;
  bool for_read = true;
  int io_depth = 0;
  int timeout_ms = 0;
  uint64_t flags = 0;
  ShmMapping shm;

  std::mutex mu;
  std::condition_variable work_cv;  // workers: new submissions or stop
  std::condition_variable done_cv;  // waiters: new completions
  std::vector<IoSlot> slots;
  std::vector<int32_t> free_slots;
  std::vector<int32_t> prepared;  // prepared, not yet submitted: invisible to workers
  std::deque<Submitted> submitted;
  std::deque<hf3fs_cqe> completed;
  int in_flight = 0;
  bool stopping = false;
  std::vector<std::thread> workers;
};

size_t ring_bytes(int entries) noexcept {
  if (entries <= 0) return 0;
  // A header page, then per entry a 64-byte submission and a 32-byte completion record, in
  // whole pages: the shape of the real ring, whose contents the emulator does not use.
  size_t bytes = 4096 + static_cast<size_t>(entries) * (64 + sizeof(hf3fs_cqe));
  return (bytes + 4095) / 4096 * 4096;
}

Ring* ring_of(const hf3fs_ior* ior) noexcept {
  return ior == nullptr ? nullptr : static_cast<Ring*>(ior->iorh);
}

// True when the I/O covers the file offset named by env var `offset_var` (and, if
// WARPLOAD_EMU_FAIL_PATH_SUFFIX is set, its file's path ends with it).
bool env_offset_hits(const IoSlot& io, const char* offset_var) {
  uint64_t at = 0;
  if (!env_u64(offset_var, &at)) return false;
  if (io.len == 0 || at < io.off || at - io.off >= io.len) return false;
  const char* suffix = std::getenv("WARPLOAD_EMU_FAIL_PATH_SUFFIX");
  if (suffix != nullptr && *suffix != '\0') {
    const std::string& p = io.file->path;
    size_t n = std::strlen(suffix);
    if (p.size() < n || p.compare(p.size() - n, n, suffix) != 0) return false;
  }
  return true;
}

// True when [off, off+len) clipped to the file size touches a hole. Uses a private open file
// description: SEEK_DATA/SEEK_HOLE move the offset, which the caller's fd shares with our dup.
bool range_has_hole(const IoSlot& io) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", io.file->dup_fd);
  int fd = ::open(link, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool hole = false;
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    uint64_t size = static_cast<uint64_t>(st.st_size);
    uint64_t end = std::min(size, io.off + io.len);
    if (io.off < end) {
      off_t data = ::lseek(fd, static_cast<off_t>(io.off), SEEK_DATA);
      if (data < 0 || static_cast<uint64_t>(data) > io.off) {
        hole = true;
      } else {
        off_t h = ::lseek(fd, static_cast<off_t>(io.off), SEEK_HOLE);
        hole = h >= 0 && static_cast<uint64_t>(h) < end;
      }
    }
  }
  ::close(fd);
  return hole;
}

// ---------------------------------------------------------------------------------------------
// Test hooks (README.md, "Test hooks"): what tests can see besides bytes.

using IoObserver = void (*)(const void* ptr, size_t len);
std::atomic<IoObserver> io_observer{nullptr};
std::atomic<long long> iovcreate_calls{0};

// Live iovs made by iovcreate/iovopen: base -> size.
std::mutex& live_iovs_mutex() {
  static std::mutex m;
  return m;
}
std::map<uintptr_t, size_t>& live_iovs() {
  static auto* const iovs = new std::map<uintptr_t, size_t>;  // outlives static destruction
  return *iovs;
}

int64_t perform_io(const IoSlot& io, uint64_t ring_flags) {
  if (const IoObserver observe = io_observer.load(); observe != nullptr && io.read) {
    observe(io.ptr, static_cast<size_t>(io.len));
  }
  uint64_t delay_ms = 0;
  if (env_offset_hits(io, "WARPLOAD_EMU_DELAY_OFFSET") &&
      env_u64("WARPLOAD_EMU_DELAY_MS", &delay_ms)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  }
  if (env_offset_hits(io, "WARPLOAD_EMU_FAIL_OFFSET")) return -EIO;
  if (io.read && (ring_flags & WARPLOAD_HF3FS_IOR_FORBID_READ_HOLES) != 0 && range_has_hole(io))
    return -ENODATA;
  uint64_t want = io.len;
  uint64_t cap = 0;
  if (env_u64("WARPLOAD_EMU_MAX_IO_BYTES", &cap) && cap > 0) want = std::min(want, cap);
  uint64_t done = 0;
  while (done < want) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(want - done, 1u << 30));
    off_t pos = static_cast<off_t>(io.off + done);
    ssize_t n = io.read ? ::pread(io.file->dup_fd, io.ptr + done, chunk, pos)
                        : ::pwrite(io.file->dup_fd, io.ptr + done, chunk, pos);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return -errno;
    }
    if (n == 0) break;  // end of file: a short result
    done += static_cast<uint64_t>(n);
  }
  return static_cast<int64_t>(done);
}

// Takes the next batch off `submitted` per the io_depth rules, or returns false on stop.
bool next_batch(Ring& r, std::unique_lock<std::mutex>& lock, std::vector<int32_t>* batch) {
  batch->clear();
  for (;;) {
    if (r.stopping) return false;
    size_t avail = r.submitted.size();
    if (r.io_depth > 0) {
      // Exactly io_depth at a time, never fewer: an underfilled ring never runs.
      if (avail >= static_cast<size_t>(r.io_depth)) {
        for (int i = 0; i < r.io_depth; ++i) {
          batch->push_back(r.submitted.front().slot);
          r.submitted.pop_front();
        }
        return true;
      }
      r.work_cv.wait(lock);
      continue;
    }
    if (avail == 0) {
      r.work_cv.wait(lock);
      continue;
    }
    size_t limit = r.io_depth == 0 ? 1 : static_cast<size_t>(-static_cast<int64_t>(r.io_depth));
    if (r.io_depth < 0 && avail < limit && r.timeout_ms > 0) {
      // Hold a partial batch until it fills or its oldest I/O has waited `timeout` ms.
      auto flush_at = r.submitted.front().at + std::chrono::milliseconds(r.timeout_ms);
      if (Clock::now() < flush_at) {
        r.work_cv.wait_until(lock, flush_at);
        continue;
      }
    }
    // io_depth == 0 takes one I/O per worker turn so that the workers share the queue.
    size_t take = std::min(avail, limit);
    for (size_t i = 0; i < take; ++i) {
      batch->push_back(r.submitted.front().slot);
      r.submitted.pop_front();
    }
    return true;
  }
}

void worker_main(Ring* r) {
  std::vector<int32_t> batch;
  std::vector<hf3fs_cqe> done;
  std::unique_lock lock(r->mu);
  for (;;) {
    if (!next_batch(*r, lock, &batch)) return;
    r->in_flight += static_cast<int>(batch.size());
    std::vector<IoSlot> ios;
    ios.reserve(batch.size());
    for (int32_t s : batch) ios.push_back(r->slots[static_cast<size_t>(s)]);
    lock.unlock();
    done.clear();
    for (size_t i = 0; i < ios.size(); ++i) {
      hf3fs_cqe cqe{};
      cqe.index = batch[i];
      cqe.result = perform_io(ios[i], r->flags);
      cqe.userdata = ios[i].userdata;
      done.push_back(cqe);
    }
    ios.clear();  // drop file references before the completions become visible
    lock.lock();
    // A batch completes as a whole, as the daemon posts it.
    for (const hf3fs_cqe& c : done) r->completed.push_back(c);
    r->in_flight -= static_cast<int>(batch.size());
    r->done_cv.notify_all();
  }
}

int worker_count() {
  uint64_t n = 0;
  if (env_u64("WARPLOAD_EMU_WORKERS", &n) && n > 0)
    return static_cast<int>(std::min<uint64_t>(n, 64));
  return 2;
}

// True when nothing can ever complete without more prep_io/submit_ios calls.
bool ring_stalled(const Ring& r) {
  if (r.in_flight > 0) return false;
  if (r.io_depth > 0) return r.submitted.size() < static_cast<size_t>(r.io_depth);
  return r.submitted.empty();
}

int create_ring(hf3fs_ior* ior, const char* mount, int entries, bool for_read, int io_depth,
                int priority, int timeout, int numa, uint64_t flags) {
  if (ior == nullptr || entries <= 0 || io_depth > entries) return -EINVAL;
  std::string m;
  if (int rc = resolve_mount_arg(mount, &m); rc != 0) return rc;
  uint8_t id[16];
  if (int rc = random_id(id); rc != 0) return rc;

  auto ring = std::make_unique<Ring>();
  ring->entries = entries;
  ring->for_read = for_read;
  ring->io_depth = io_depth;
  ring->timeout_ms = std::max(timeout, 0);
  ring->flags = flags;
  // The ring's shared memory is unlinked at once: only the mapping keeps it alive, so a
  // crashed test leaves nothing in /dev/shm.
  std::string name = "/hf3fs-ior-" + hex_id(id);
  if (int rc = map_shm(name, ring_bytes(entries), true, &ring->shm); rc != 0) return rc;
  ::shm_unlink(name.c_str());
  ring->slots.resize(static_cast<size_t>(entries));
  ring->free_slots.reserve(static_cast<size_t>(entries));
  for (int i = entries - 1; i >= 0; --i) ring->free_slots.push_back(i);
  try {
    int n = worker_count();
    for (int i = 0; i < n; ++i) ring->workers.emplace_back(worker_main, ring.get());
  } catch (const std::system_error&) {
    {
      std::lock_guard lock(ring->mu);
      ring->stopping = true;
    }
    ring->work_cv.notify_all();
    for (auto& t : ring->workers) t.join();
    ::munmap(ring->shm.base, ring->shm.size);
    release_shm_bytes(ring->shm.size);
    return -EAGAIN;
  }

  std::memset(ior, 0, sizeof *ior);
  ior->iov.base = static_cast<uint8_t*>(ring->shm.base);
  ior->iov.iovh = nullptr;
  std::memcpy(ior->iov.id, id, sizeof id);
  copy_mount(ior->iov.mount_point, m);
  ior->iov.size = ring->shm.size;
  ior->iov.block_size = 0;
  ior->iov.numa = numa;
  ior->iorh = ring.release();
  copy_mount(ior->mount_point, m);
  ior->for_read = for_read;
  ior->io_depth = io_depth;
  ior->priority = priority;
  ior->timeout = timeout;
  ior->flags = flags;
  return 0;
}

}  // namespace

// =============================================================================================
// Exported ABI.

HF3FS_EMU_EXPORT bool hf3fs_is_hf3fs(int fd) {
  bool on = false;
  if (fd >= 0) {
    std::string p = fd_path(fd);
    on = !p.empty() && p[0] == '/' && !find_mount(p.c_str()).empty();
  }
  log_call("hf3fs_is_hf3fs(%d) = %d", fd, on ? 1 : 0);
  return on;
}

HF3FS_EMU_EXPORT int hf3fs_extract_mount_point(char* out, int size, const char* path) {
  std::string m = find_mount(path);
  int rc = -1;
  if (!m.empty()) {
    rc = static_cast<int>(m.size()) + 1;
    if (out != nullptr && size >= rc) std::memcpy(out, m.c_str(), m.size() + 1);
  }
  log_call("hf3fs_extract_mount_point(%p, %d, %s) = %d", static_cast<void*>(out), size,
           path ? path : "(null)", rc);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_iovcreate(hf3fs_iov* iov, const char* mount, size_t size,
                                     size_t block_size, int numa) {
  int rc = 0;
  std::string m;
  if (iov == nullptr || size == 0) {
    rc = -EINVAL;
  } else {
    rc = resolve_mount_arg(mount, &m);
  }
  uint8_t id[16];
  if (rc == 0) rc = random_id(id);
  ShmMapping map;
  std::unique_ptr<IovHandle> h;
  if (rc == 0) {
    h = std::make_unique<IovHandle>();
    h->shm_name = "/hf3fs-iov-" + hex_id(id);
    h->owner = true;
    rc = map_shm(h->shm_name, size, true, &map);
  }
  if (rc == 0) {
    std::string dir = iov_link_dir(m);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) rc = -errno;
    h->link_path = dir + "/" + hex_id(id);
    if (rc == 0 && ::symlink(("/dev/shm" + h->shm_name).c_str(), h->link_path.c_str()) != 0)
      rc = -errno;
    if (rc != 0) {
      ::munmap(map.base, map.size);
      ::shm_unlink(h->shm_name.c_str());
      release_shm_bytes(map.size);
    }
  }
  if (rc == 0) {
    iov->base = static_cast<uint8_t*>(map.base);
    std::memcpy(iov->id, id, sizeof id);
    copy_mount(iov->mount_point, m);
    iov->size = size;
    iov->block_size = block_size;
    iov->numa = numa;
    iov->iovh = h.release();
    ++iovcreate_calls;
    const std::lock_guard<std::mutex> lock(live_iovs_mutex());
    live_iovs()[reinterpret_cast<uintptr_t>(map.base)] = size;
  }
  log_call("hf3fs_iovcreate(%p, %s, %zu, %zu, %d) = %d", static_cast<void*>(iov),
           mount ? mount : "(null)", size, block_size, numa, rc);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_iovopen(hf3fs_iov* iov, const uint8_t id[16], const char* mount,
                                   size_t size, size_t block_size, int numa) {
  int rc = 0;
  std::string m;
  if (iov == nullptr || id == nullptr || size == 0) {
    rc = -EINVAL;
  } else {
    rc = resolve_mount_arg(mount, &m);
  }
  ShmMapping map;
  std::unique_ptr<IovHandle> h;
  if (rc == 0) {
    h = std::make_unique<IovHandle>();
    h->shm_name = "/hf3fs-iov-" + hex_id(id);
    h->link_path = iov_link_dir(m) + "/" + hex_id(id);
    h->owner = false;
    rc = map_shm(h->shm_name, size, false, &map);
  }
  if (rc == 0) {
    iov->base = static_cast<uint8_t*>(map.base);
    std::memcpy(iov->id, id, 16);
    copy_mount(iov->mount_point, m);
    iov->size = size;
    iov->block_size = block_size;
    iov->numa = numa;
    iov->iovh = h.release();
  }
  log_call("hf3fs_iovopen(%p, %s, %zu, %zu, %d) = %d", static_cast<void*>(iov),
           mount ? mount : "(null)", size, block_size, numa, rc);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_iovwrap(hf3fs_iov* iov, void* base, const uint8_t id[16],
                                   const char* mount, size_t size, size_t block_size, int numa) {
  int rc = 0;
  std::string m;
  if (iov == nullptr || base == nullptr || id == nullptr || size == 0) {
    rc = -EINVAL;
  } else {
    rc = resolve_mount_arg(mount, &m);
  }
  if (rc == 0) {
    iov->base = static_cast<uint8_t*>(base);
    iov->iovh = nullptr;
    std::memcpy(iov->id, id, 16);
    copy_mount(iov->mount_point, m);
    iov->size = size;
    iov->block_size = block_size;
    iov->numa = numa;
  }
  log_call("hf3fs_iovwrap(%p, %p, %s, %zu, %zu, %d) = %d", static_cast<void*>(iov), base,
           mount ? mount : "(null)", size, block_size, numa, rc);
  return rc;
}

HF3FS_EMU_EXPORT void hf3fs_iovunlink(hf3fs_iov* iov) {
  log_call("hf3fs_iovunlink(%p)", static_cast<void*>(iov));
  if (iov == nullptr || iov->mount_point[0] == '\0') return;
  std::string mount(iov->mount_point, strnlen(iov->mount_point, sizeof iov->mount_point));
  std::string link = iov_link_dir(mount) + "/" + hex_id(iov->id);
  ::unlink(link.c_str());
}

HF3FS_EMU_EXPORT void hf3fs_iovdestroy(hf3fs_iov* iov) {
  log_call("hf3fs_iovdestroy(%p)", static_cast<void*>(iov));
  if (iov == nullptr || iov->iovh == nullptr) return;  // wrapped or never created
  auto* h = static_cast<IovHandle*>(iov->iovh);
  {
    const std::lock_guard<std::mutex> lock(live_iovs_mutex());
    live_iovs().erase(reinterpret_cast<uintptr_t>(iov->base));
  }
  ::munmap(iov->base, iov->size);
  if (h->owner) {
    ::unlink(h->link_path.c_str());
    ::shm_unlink(h->shm_name.c_str());
    release_shm_bytes(iov->size);
  }
  delete h;
  iov->iovh = nullptr;
  iov->base = nullptr;
}

HF3FS_EMU_EXPORT size_t hf3fs_ior_size(int entries) {
  size_t n = ring_bytes(entries);
  log_call("hf3fs_ior_size(%d) = %zu", entries, n);
  return n;
}

HF3FS_EMU_EXPORT int hf3fs_iorcreate4(hf3fs_ior* ior, const char* mount, int entries, bool for_read,
                                      int io_depth, int timeout, int numa, uint64_t flags) {
  int rc = create_ring(ior, mount, entries, for_read, io_depth, 0, timeout, numa, flags);
  log_call("hf3fs_iorcreate4(%p, %s, %d, %d, %d, %d, %d, %llu) = %d", static_cast<void*>(ior),
           mount ? mount : "(null)", entries, for_read ? 1 : 0, io_depth, timeout, numa,
           static_cast<unsigned long long>(flags), rc);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_iorcreate3(hf3fs_ior* ior, const char* mount, int entries, bool for_read,
                                      int io_depth, int priority, int timeout, int numa) {
  int rc = create_ring(ior, mount, entries, for_read, io_depth, priority, timeout, numa, 0);
  log_call("hf3fs_iorcreate3(%p, %s, %d, %d, %d, %d, %d, %d) = %d", static_cast<void*>(ior),
           mount ? mount : "(null)", entries, for_read ? 1 : 0, io_depth, priority, timeout, numa,
           rc);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_iorcreate2(hf3fs_ior* ior, const char* mount, int entries, bool for_read,
                                      int io_depth, int priority, int numa) {
  int rc = create_ring(ior, mount, entries, for_read, io_depth, priority, 0, numa, 0);
  log_call("hf3fs_iorcreate2(%p, %s, %d, %d, %d, %d, %d) = %d", static_cast<void*>(ior),
           mount ? mount : "(null)", entries, for_read ? 1 : 0, io_depth, priority, numa, rc);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_iorcreate(hf3fs_ior* ior, const char* mount, int entries, bool for_read,
                                     int io_depth, int numa) {
  int rc = create_ring(ior, mount, entries, for_read, io_depth, 0, 0, numa, 0);
  log_call("hf3fs_iorcreate(%p, %s, %d, %d, %d, %d) = %d", static_cast<void*>(ior),
           mount ? mount : "(null)", entries, for_read ? 1 : 0, io_depth, numa, rc);
  return rc;
}

HF3FS_EMU_EXPORT void hf3fs_iordestroy(hf3fs_ior* ior) {
  log_call("hf3fs_iordestroy(%p)", static_cast<void*>(ior));
  Ring* r = ring_of(ior);
  if (r == nullptr) return;
  {
    std::lock_guard lock(r->mu);
    r->stopping = true;  // workers finish the batch they hold, then leave
  }
  r->work_cv.notify_all();
  for (auto& t : r->workers) t.join();
  {
    std::lock_guard lock(r->mu);
    r->done_cv.notify_all();
  }
  ::munmap(r->shm.base, r->shm.size);
  release_shm_bytes(r->shm.size);
  delete r;
  ior->iorh = nullptr;
  ior->iov.base = nullptr;
}

HF3FS_EMU_EXPORT int hf3fs_reg_fd(int fd, uint64_t flags) {
  int rc = 0;
  std::string path = fd >= 0 ? fd_path(fd) : std::string();
  if (path.empty() || path[0] != '/' || find_mount(path.c_str()).empty()) {
    rc = EBADF;
  } else {
    FileRegistry& r = registry();
    std::lock_guard lock(r.mu);
    if (r.by_original.count(fd) != 0) {
      rc = EINVAL;
    } else {
      int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (d < 0) {
        rc = errno;
      } else {
        auto f = std::make_shared<RegisteredFile>();
        f->original_fd = fd;
        f->dup_fd = d;
        f->path = path;
        r.by_original[fd] = f;
        r.by_dup[d] = f;
        rc = -d;
      }
    }
  }
  log_call("hf3fs_reg_fd(%d, %llu) = %d", fd, static_cast<unsigned long long>(flags), rc);
  return rc;
}

HF3FS_EMU_EXPORT void hf3fs_dereg_fd(int fd) {
  log_call("hf3fs_dereg_fd(%d)", fd);
  std::shared_ptr<RegisteredFile> f;
  FileRegistry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.by_original.find(fd);
  if (it == r.by_original.end()) return;
  f = std::move(it->second);
  r.by_original.erase(it);
  r.by_dup.erase(f->dup_fd);
  // `f` dies here unless an I/O still holds it; the dup is closed with the last reference.
}

HF3FS_EMU_EXPORT int hf3fs_io_entries(const hf3fs_ior* ior) {
  Ring* r = ring_of(ior);
  int n = r == nullptr ? -EINVAL : r->entries;
  log_call("hf3fs_io_entries(%p) = %d", static_cast<const void*>(ior), n);
  return n;
}

HF3FS_EMU_EXPORT int hf3fs_prep_io(const hf3fs_ior* ior, const hf3fs_iov* iov, bool read, void* ptr,
                                   int fd, size_t off, uint64_t len, const void* userdata) {
  int rc = 0;
  Ring* r = ring_of(ior);
  auto* p = static_cast<uint8_t*>(ptr);
  if (r == nullptr || iov == nullptr || iov->base == nullptr || p == nullptr) {
    rc = -EINVAL;
  } else if (read != ior->for_read) {
    rc = -EINVAL;
  } else if (p < iov->base || len > iov->size ||
             static_cast<uint64_t>(p - iov->base) > iov->size - len) {
    rc = -EINVAL;
  } else if (off > static_cast<uint64_t>(INT64_MAX) ||
             len > static_cast<uint64_t>(INT64_MAX) - off) {
    rc = -EINVAL;
  } else if (iov->block_size != 0 && len > 0 &&
             static_cast<uint64_t>(p - iov->base) / iov->block_size !=
                 (static_cast<uint64_t>(p - iov->base) + len - 1) / iov->block_size) {
    rc = -EINVAL;
  }
  std::shared_ptr<RegisteredFile> file;
  if (rc == 0) {
    file = lookup_file(fd);
    if (!file) rc = -EBADF;
  }
  if (rc == 0) {
    std::lock_guard lock(r->mu);
    if (r->free_slots.empty()) {
      rc = -EAGAIN;
    } else {
      int32_t s = r->free_slots.back();
      r->free_slots.pop_back();
      IoSlot& slot = r->slots[static_cast<size_t>(s)];
      slot.read = read;
      slot.ptr = p;
      slot.len = len;
      slot.off = off;
      slot.userdata = userdata;
      slot.file = std::move(file);
      r->prepared.push_back(s);
      rc = s;
    }
  }
  log_call("hf3fs_prep_io(%p, %p, %d, %p, %d, %zu, %llu, %p) = %d", static_cast<const void*>(ior),
           static_cast<const void*>(iov), read ? 1 : 0, ptr, fd, off,
           static_cast<unsigned long long>(len), userdata, rc);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_submit_ios(const hf3fs_ior* ior) {
  Ring* r = ring_of(ior);
  int rc = 0;
  size_t n = 0;
  if (r == nullptr) {
    rc = -EINVAL;
  } else {
    std::lock_guard lock(r->mu);
    auto now = Clock::now();
    n = r->prepared.size();
    for (int32_t s : r->prepared) r->submitted.push_back({s, now});
    r->prepared.clear();
    if (n > 0) r->work_cv.notify_all();
  }
  log_call("hf3fs_submit_ios(%p) = %d (%zu submitted)", static_cast<const void*>(ior), rc, n);
  return rc;
}

HF3FS_EMU_EXPORT int hf3fs_wait_for_ios(const hf3fs_ior* ior, hf3fs_cqe* cqes, int cqec,
                                        int min_results, const struct timespec* abs_timeout) {
  Ring* r = ring_of(ior);
  if (r == nullptr || (cqes == nullptr && cqec > 0) || cqec < 0) {
    log_call("hf3fs_wait_for_ios(%p, %d, %d) = %d", static_cast<const void*>(ior), cqec,
             min_results, -EINVAL);
    return -EINVAL;
  }
  size_t want = static_cast<size_t>(std::clamp(min_results, 0, cqec));
  int rc = 0;
  std::unique_lock lock(r->mu);
  auto ready = [&] { return r->completed.size() >= want || r->stopping; };
  if (abs_timeout != nullptr) {
    auto deadline = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(abs_timeout->tv_sec) +
            std::chrono::nanoseconds(abs_timeout->tv_nsec)));
    if (!r->done_cv.wait_until(lock, deadline, ready) && env_flag("WARPLOAD_EMU_WAIT_ETIMEDOUT")) {
      rc = -ETIMEDOUT;
    }
  } else {
    uint64_t stall_ms = 0;
    if (env_u64("WARPLOAD_EMU_STALL_MS", &stall_ms) && stall_ms > 0) {
      // Opt-in deadlock detector: the real library would hang here forever.
      while (!ready()) {
        if (!r->done_cv.wait_for(lock, std::chrono::milliseconds(stall_ms), ready) &&
            ring_stalled(*r)) {
          std::fprintf(stderr,
                       "hf3fs-emu: wait_for_ios(min_results=%d) without a deadline can never "
                       "finish: io_depth=%d, %zu submitted, %zu prepared unsubmitted, %zu "
                       "completions ready; returning -EDEADLK\n",
                       min_results, r->io_depth, r->submitted.size(), r->prepared.size(),
                       r->completed.size());
          rc = -EDEADLK;
          break;
        }
      }
    } else {
      r->done_cv.wait(lock, ready);
    }
  }
  if (rc == 0) {
    size_t n = std::min(r->completed.size(), static_cast<size_t>(cqec));
    for (size_t i = 0; i < n; ++i) {
      cqes[i] = r->completed.front();
      r->completed.pop_front();
      IoSlot& slot = r->slots[static_cast<size_t>(cqes[i].index)];
      slot = IoSlot{};
      r->free_slots.push_back(cqes[i].index);
    }
    rc = static_cast<int>(n);
  }
  lock.unlock();
  log_call("hf3fs_wait_for_ios(%p, %d, %d, %s) = %d", static_cast<const void*>(ior), cqec,
           min_results, abs_timeout ? "deadline" : "no deadline", rc);
  return rc;
}

// ---- test hooks (not part of the 3FS ABI) ----

// Calls `observer` (null: none) with the destination of every read I/O, from the worker thread
// that performs it, before it runs.
HF3FS_EMU_EXPORT void hf3fs_emu_set_io_observer(void (*observer)(const void*, size_t)) {
  io_observer.store(observer);
}

// 1 when [p, p + len) lies inside one live iov made by hf3fs_iovcreate, else 0.
HF3FS_EMU_EXPORT int hf3fs_emu_in_iov(const void* p, size_t len) {
  const auto begin = reinterpret_cast<uintptr_t>(p);
  const std::lock_guard<std::mutex> lock(live_iovs_mutex());
  auto it = live_iovs().upper_bound(begin);
  if (it == live_iovs().begin()) return 0;
  --it;
  return begin - it->first <= it->second && len <= it->second - (begin - it->first) ? 1 : 0;
}

// Successful hf3fs_iovcreate calls since the library was loaded.
HF3FS_EMU_EXPORT long long hf3fs_emu_iovcreate_calls(void) { return iovcreate_calls.load(); }
