// Counts of what a process holds, for tests that check nothing leaked: entries of a folder
// (e.g. /proc/self/fd) and shared-memory mappings (iovs and rings live in /dev/shm).
#pragma once

#include <dirent.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <string>

namespace warpload::testing {

// Entries of `folder` other than "." and ".."; 0 when it cannot be opened.
inline std::size_t count_entries(const char* folder) {
  std::size_t n = 0;
  DIR* dir = opendir(folder);
  if (dir == nullptr) return 0;
  while (const dirent* entry = readdir(dir)) {
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) ++n;
  }
  closedir(dir);
  return n;
}

// Mappings of /dev/shm files in this process. Counting /dev/shm itself would see other test
// processes running at the same time (ctest -j).
inline std::size_t count_shm_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/dev/shm/") != std::string::npos) ++n;
  }
  return n;
}

}  // namespace warpload::testing
