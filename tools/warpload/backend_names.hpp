// Checks a --backend / --backends name against the backends this machine can run.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "warpload/storage.hpp"

namespace warpload::cli {

// Throws UsageError naming the available backends when `name` is not one of them.
inline void check_backend_name(std::string_view name, const std::vector<std::string>& available,
                               std::string_view option) {
  if (std::find(available.begin(), available.end(), name) != available.end()) {
    return;
  }
  throw UsageError(fmt::format("{}: unknown or unavailable backend '{}' (available: {})", option,
                               name, fmt::join(available, ", ")));
}

// Only the descriptor-based backends take --direct: mmap reads through its mapping, auto
// chooses for itself, and 3fs reads through USRBIO, which bypasses the page cache anyway.
[[nodiscard]] inline bool backend_takes_direct(std::string_view name) noexcept {
  return name == "posix" || name == "uring";
}

}  // namespace warpload::cli
