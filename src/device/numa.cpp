#include "device/numa.hpp"

#include <sched.h>

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <string>

#include "common/shared_library.hpp"
#include "device/cuda_shim.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

using numa_available_fn = int();
using numa_run_on_node_fn = int(int node);

struct NumaApi {
  numa_run_on_node_fn* run_on_node = nullptr;  // null: libnuma unusable
};

const LibrarySpec& numa_library() {
  static const LibrarySpec spec{.what = "NUMA (libnuma)",
                                .soname = "libnuma.so.1",
                                .env_var = "WARPLOAD_NUMA_LIB",
                                .defaults = {},
                                .missing_hint = "libnuma is not installed",
                                .env_hint = "",
                                .symbol_hint = "not a libnuma.so.1"};
  return spec;
}

// Loaded once per name and never unloaded; a library without NUMA support counts as absent.
NumaApi numa_api() noexcept {
  try {
    static auto* const mutex = new std::mutex;
    static auto* const loaded = new std::map<std::string, NumaApi>;
    const std::string name = numa_library().candidates().front();
    const std::lock_guard<std::mutex> lock(*mutex);
    if (auto it = loaded->find(name); it != loaded->end()) return it->second;
    NumaApi api;
    try {
      SharedLibrary library = SharedLibrary::open_path(numa_library(), name);
      numa_available_fn* available = nullptr;
      numa_run_on_node_fn* run_on_node = nullptr;
      library.bind({{"numa_available", &available}, {"numa_run_on_node", &run_on_node}});
      if (available() >= 0) {
        api.run_on_node = run_on_node;
        static_cast<void>(library.release());
      }
    } catch (const Error&) {
      // No usable libnuma: threads are simply not placed.
    }
    loaded->emplace(name, api);
    return api;
  } catch (...) {
    return NumaApi{};
  }
}

}  // namespace

int numa_node_of_pci_device(std::string_view bus_id,
                            const std::filesystem::path& sysfs_root) noexcept {
  try {
    // "dddddddd:bb:dd.f" (some drivers print an 8-digit domain) -> sysfs' "dddd:bb:dd.f".
    std::string id(bus_id);
    for (char& c : id) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::size_t colon = id.find(':');
    if (colon == std::string::npos || id.empty()) return -1;
    if (colon > 4) id.erase(0, colon - 4);
    if (id.find('/') != std::string::npos || id.find("..") != std::string::npos) return -1;
    std::ifstream in(sysfs_root / "bus" / "pci" / "devices" / id / "numa_node");
    std::string text;
    if (!in || !std::getline(in, text)) return -1;
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    int node = -1;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), node);
    if (error != std::errc() || end != text.data() + text.size() || node < 0) return -1;
    return node;
  } catch (...) {
    return -1;
  }
}

int cuda_device_numa_node(int device) noexcept {
  try {
    return numa_node_of_pci_device(cuda_pci_bus_id(device));
  } catch (...) {
    return -1;
  }
}

bool numa_library_available() noexcept { return numa_api().run_on_node != nullptr; }

NumaPlacement::NumaPlacement(int node) noexcept {
  if (node < 0) return;
  const NumaApi api = numa_api();
  if (api.run_on_node == nullptr) return;
  CPU_ZERO(&previous_);
  if (sched_getaffinity(0, sizeof(previous_), &previous_) != 0) return;
  placed_ = api.run_on_node(node) == 0;
}

NumaPlacement::~NumaPlacement() {
  if (placed_) static_cast<void>(sched_setaffinity(0, sizeof(previous_), &previous_));
}

}  // namespace warpload::detail
