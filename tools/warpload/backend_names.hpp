// Backend names on the command line (--backend, --backends), checked against the storage
// layer's registry (warpload/storage.hpp): nothing here knows a backend by name.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"
#include "warpload/error.hpp"
#include "warpload/storage.hpp"

namespace warpload::cli {

// Whether `info` can serve a load of this kind: host backends any load, device-only ones
// device loads.
[[nodiscard]] inline bool serves(const BackendInfo& info, bool device_load) noexcept {
  return info.host_destinations || (device_load && info.device_destinations);
}

// Whether a load of this kind may name `info` on this machine: it serves the load and can run
// here, or a device load falls back to the staged pipeline when it cannot.
[[nodiscard]] inline bool usable_here(const BackendInfo& info, bool device_load) {
  if (!serves(info, device_load)) return false;
  return (device_load && info.stages_when_unusable) ||
         backend_unavailable_reason(info.name).empty();
}

// The backends a load of this kind may name on this machine, in the registry's order.
[[nodiscard]] inline std::vector<std::string> usable_backend_names(bool device_load) {
  std::vector<std::string> names;
  for (const BackendInfo& info : storage_backends()) {
    if (usable_here(info, device_load)) names.push_back(info.name);
  }
  return names;
}

// The registry's entry for `name`, checked for a load of this kind. Throws UsageError listing
// the usable backends when `name` is not registered or cannot serve the load (a device-only
// backend in a host load), and UnsupportedError with the registry's reason when it cannot run
// on this machine.
inline const BackendInfo& check_backend_name(std::string_view name, std::string_view option,
                                             bool device_load) {
  const BackendInfo* info = find_backend(name);
  if (info == nullptr) {
    throw UsageError(fmt::format("{}: unknown backend '{}' (available: {})", option, name,
                                 fmt::join(usable_backend_names(device_load), ", ")));
  }
  if (!serves(*info, device_load)) {
    throw UsageError(fmt::format(
        "{}: backend '{}' reads into device memory only (add --device cuda:N; available for "
        "host loads: {})",
        option, name, fmt::join(usable_backend_names(false), ", ")));
  }
  if (!usable_here(*info, device_load)) {
    throw UnsupportedError(fmt::format("{}: {}", option, backend_unavailable_reason(name)));
  }
  return *info;
}

// Whether --direct applies to backend `name` (it honours StorageOptions::direct).
[[nodiscard]] inline bool backend_takes_direct(std::string_view name) noexcept {
  const BackendInfo* info = find_backend(name);
  return info != nullptr && info->takes_direct;
}

// The names of the registered backends that match `keep`, joined with ", ".
template <typename Predicate>
[[nodiscard]] std::string backend_list(Predicate keep) {
  std::vector<std::string> names;
  for (const BackendInfo& info : storage_backends()) {
    if (keep(info)) names.push_back(info.name);
  }
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace warpload::cli
