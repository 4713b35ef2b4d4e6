/* The C ABI of 3FS's USRBIO client library, libhf3fs_api_shared.so.
 *
 * Mirrors the interface of 3FS's src/lib/api/hf3fs_usrbio.h (MIT) as documented in
 * shared/reference/usrbio.md: the struct layouts in field order and the signatures of every
 * function warpload calls. warpload never links against the library: the 3fs backend loads it
 * with dlopen (src/storage/hf3fs_shim.*) and the test emulator (tests/usrbio_emulator/)
 * implements these same symbols. Keep this file C-compatible and in step with that header.
 *
 * Return conventions worth repeating (they differ per function):
 *   - most calls: 0 or -errno;
 *   - hf3fs_extract_mount_point: strlen(mount)+1, or -1 when the path is not on 3FS;
 *   - hf3fs_reg_fd: a value <= 0 on success, a POSITIVE errno on failure;
 *   - hf3fs_prep_io: the slot index >= 0, or -errno (-EAGAIN when the ring is full);
 *   - hf3fs_wait_for_ios: the number of completions >= 0, or -errno.
 */
#ifndef WARPLOAD_HF3FS_ABI_H_
#define WARPLOAD_HF3FS_ABI_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WARPLOAD_HF3FS_SUPER_MAGIC 0x8f3f5fff
#define WARPLOAD_HF3FS_IOR_ALLOW_READ_UNCOMMITTED 1
#define WARPLOAD_HF3FS_IOR_FORBID_READ_HOLES 2

struct hf3fs_iov {
  uint8_t *base;
  void *iovh;
  char id[16];
  char mount_point[256];
  size_t size;
  size_t block_size;
  int numa;
};

struct hf3fs_ior {
  struct hf3fs_iov iov;
  void *iorh;
  char mount_point[256];
  bool for_read;
  int io_depth;
  int priority;
  int timeout;
  uint64_t flags;
};

struct hf3fs_cqe {
  int32_t index;
  int32_t reserved;
  int64_t result;
  const void *userdata;
};

/* Function types, named after the symbols (the shim's table holds one pointer of each). */
typedef bool (*hf3fs_is_hf3fs_fn)(int fd);
typedef int (*hf3fs_extract_mount_point_fn)(char *out, int size, const char *path);
typedef int (*hf3fs_iovcreate_fn)(struct hf3fs_iov *iov, const char *mount, size_t size,
                                  size_t block_size, int numa);
typedef int (*hf3fs_iovopen_fn)(struct hf3fs_iov *iov, const uint8_t id[16], const char *mount,
                                size_t size, size_t block_size, int numa);
typedef int (*hf3fs_iovwrap_fn)(struct hf3fs_iov *iov, void *base, const uint8_t id[16],
                                const char *mount, size_t size, size_t block_size, int numa);
typedef void (*hf3fs_iovunlink_fn)(struct hf3fs_iov *iov);
typedef void (*hf3fs_iovdestroy_fn)(struct hf3fs_iov *iov);
typedef size_t (*hf3fs_ior_size_fn)(int entries);
typedef int (*hf3fs_iorcreate4_fn)(struct hf3fs_ior *ior, const char *mount, int entries,
                                   bool for_read, int io_depth, int timeout, int numa,
                                   uint64_t flags);
typedef void (*hf3fs_iordestroy_fn)(struct hf3fs_ior *ior);
typedef int (*hf3fs_reg_fd_fn)(int fd, uint64_t flags);
typedef void (*hf3fs_dereg_fd_fn)(int fd);
typedef int (*hf3fs_io_entries_fn)(const struct hf3fs_ior *ior);
typedef int (*hf3fs_prep_io_fn)(const struct hf3fs_ior *ior, const struct hf3fs_iov *iov,
                                bool read, void *ptr, int fd, size_t off, uint64_t len,
                                const void *userdata);
typedef int (*hf3fs_submit_ios_fn)(const struct hf3fs_ior *ior);
typedef int (*hf3fs_wait_for_ios_fn)(const struct hf3fs_ior *ior, struct hf3fs_cqe *cqes,
                                     int cqec, int min_results,
                                     const struct timespec *abs_timeout);

#ifdef __cplusplus
}
#endif

#endif /* WARPLOAD_HF3FS_ABI_H_ */
