// NUMA placement of the threads that feed a GPU: reader threads run on the CPUs of the NUMA node
// the GPU hangs off, so pinned staging memory and the PCIe root port are local to them.
//
// Where a GPU is: its PCI address from the CUDA driver (cuDeviceGetPCIBusId), then
// /sys/bus/pci/devices/<address>/numa_node. -1 there (a single-node machine or a BIOS that does
// not say), an absent or unreadable entry: no placement.
//
// How threads are placed: libnuma.so.1, loaded at run time with dlopen (no build dependency;
// $WARPLOAD_NUMA_LIB overrides the name), numa_run_on_node(). Without libnuma, or when
// numa_available() < 0, nothing is placed. Placement is always undone at scope exit (the
// thread's previous CPU affinity is restored), because one of the placed threads is the
// caller's own. Threads a placed thread starts inherit its affinity (storage workers do).
//
// Thread safety: every function may be called from any thread; a NumaPlacement belongs to
// the thread that made it.
#pragma once

#include <sched.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace warpload::detail {

// The NUMA node of the PCI device at `bus_id` (as cuDeviceGetPCIBusId writes it, e.g.
// "0000:3B:00.0" or "00000000:3B:00.0"; matched case-insensitively against sysfs' lower-case
// names) from `<sysfs_root>/bus/pci/devices/<id>/numa_node`. -1 when the entry is absent,
// unreadable, not a number, or itself -1. Never throws.
[[nodiscard]] int numa_node_of_pci_device(
    std::string_view bus_id, const std::filesystem::path& sysfs_root = "/sys") noexcept;

// The NUMA node of CUDA device `device`, or -1 when unknown (no driver, bad ordinal, no sysfs
// entry). Never throws.
[[nodiscard]] int cuda_device_numa_node(int device) noexcept;

// Whether libnuma could be loaded and reports NUMA support (numa_available() >= 0). Never
// throws; the answer is cached per library name.
[[nodiscard]] bool numa_library_available() noexcept;

// Runs the calling thread on the CPUs of `node` for the object's lifetime (numa_run_on_node);
// the destructor restores the affinity the thread had. Does nothing when `node` < 0 or libnuma
// is unavailable; placed() says whether it placed the thread.
class NumaPlacement {
 public:
  explicit NumaPlacement(int node) noexcept;
  ~NumaPlacement();
  NumaPlacement(const NumaPlacement&) = delete;
  NumaPlacement& operator=(const NumaPlacement&) = delete;

  [[nodiscard]] bool placed() const noexcept { return placed_; }

 private:
  bool placed_ = false;
  cpu_set_t previous_{};
};

}  // namespace warpload::detail
