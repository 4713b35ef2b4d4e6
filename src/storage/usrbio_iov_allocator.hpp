// The "3fs" backend's destination memory (its preferred_allocator()): Buffers that are USRBIO
// iovs, shared memory the 3FS daemon writes into, so a read into one needs no copy. Every live
// iov is recorded in a process-wide registry that the backend's ring workers ask (find_iov) to
// decide, per I/O, between preparing it straight into the destination and a staging copy.
//
// Ownership: an iov Buffer owns its iov (hf3fs_iovdestroy when the last reference goes, on any
// thread); the client library's table is never unloaded. Thread safety: everything here may be
// used from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "storage/hf3fs_shim.hpp"
#include "warpload/memory.hpp"

namespace warpload::detail {

// Where the next iov buffer goes: the configured mount, else the mount of the file opened last
// (the Loader allocates each file's buffer right after opening it).
class MountHint {
 public:
  void set(const std::string& mount) {
    const std::lock_guard<std::mutex> lock(mutex_);
    mount_ = mount;
  }
  [[nodiscard]] std::string get() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return mount_;
  }

 private:
  mutable std::mutex mutex_;
  std::string mount_;
};

// Iov memory on the mount `hint` names when a buffer is allocated (block_size: the iovs'
// `block_size`, 0 = unblocked). Before any 3FS file is open, or when the daemon refuses an iov,
// buffers are ordinary host memory (the backend then reads through its staging iovs).
[[nodiscard]] std::shared_ptr<Allocator> make_iov_allocator(const Hf3fsApi& api,
                                                            std::shared_ptr<MountHint> hint,
                                                            std::uint64_t block_size);

// The live iov of `mount` that holds all of [dest, dest + length), or null.
[[nodiscard]] const hf3fs_iov* find_iov(const std::byte* dest, std::uint64_t length,
                                        const std::string& mount) noexcept;

}  // namespace warpload::detail
