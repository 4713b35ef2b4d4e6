// The storage keyword options every Python loader constructor takes, as StorageOptions.
#pragma once

#include <cstdint>
#include <string>

#include "warpload/storage.hpp"

namespace warpload::python {

// 0 / "" = the backend's default, as in StorageOptions. `connections` and `request_size` are the
// "http" backend's (URLs).
inline StorageOptions storage_options(bool direct, unsigned threads, std::uint64_t block_size,
                                      unsigned queue_depth, const std::string& mount_point,
                                      unsigned connections, std::uint64_t request_size) {
  StorageOptions s;
  s.http.connections = connections;
  s.http.request_size = request_size;
  s.direct = direct;
  s.threads = threads;
  s.block_size = block_size;
  s.queue_depth = queue_depth;
  s.usrbio.mount_point = mount_point;
  return s;
}

}  // namespace warpload::python
