#include "warpload/device.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

#include "device/cuda_shim.hpp"

namespace warpload {

Device Device::parse(std::string_view name) {
  if (name == "cpu") return Device{Kind::kCpu, 0};
  if (name == "cuda") return Device{Kind::kCuda, 0};
  constexpr std::string_view kPrefix = "cuda:";
  if (name.substr(0, kPrefix.size()) == kPrefix) {
    const std::string_view digits = name.substr(kPrefix.size());
    // Decimal digits only, no sign or spaces, no leading zeros (one spelling per device).
    const bool canonical = !digits.empty() && (digits.size() == 1 || digits.front() != '0');
    int index = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (canonical && error == std::errc() && end == digits.data() + digits.size() &&
        digits.front() != '-' && digits.front() != '+') {
      return Device{Kind::kCuda, index};
    }
  }
  throw std::invalid_argument("invalid device '" + std::string(name) +
                              "': expected \"cpu\", \"cuda\" or \"cuda:N\"");
}

std::string Device::name() const {
  return kind == Kind::kCpu ? std::string("cpu") : "cuda:" + std::to_string(index);
}

bool cuda_available() noexcept {
  try {
    return detail::cuda_device_count() > 0;
  } catch (...) {
    return false;
  }
}

DeviceMemoryInfo cuda_memory_info(Device device) {
  if (!device.is_cuda()) throw std::invalid_argument("cuda_memory_info: not a CUDA device");
  detail::check_cuda_device(device.index);
  const detail::CudaContextScope scope(device.index);
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  detail::cuda_check(detail::cuda_api().mem_get_info(&free_bytes, &total_bytes),
                     device.name() + ": cuMemGetInfo");
  return DeviceMemoryInfo{free_bytes, total_bytes};
}

double measure_pinned_copy_gbps(Device device, std::uint64_t bytes, unsigned runs) {
  const auto size = static_cast<std::size_t>(std::max<std::uint64_t>(bytes, 1));
  const auto pinned = make_pinned_allocator(device)->allocate(size, 4096);
  const auto target = make_cuda_allocator(device)->allocate(size, 256);
  std::memset(pinned->data(), 0x5A, size);
  const detail::CudaStream stream(device.index);
  double best = 0;
  for (unsigned r = 0; r <= std::max(runs, 1U); ++r) {  // run 0 warms up
    const auto start = std::chrono::steady_clock::now();
    detail::copy_to_device_async(target->data(), pinned->data(), size, stream);
    stream.synchronize();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r > 0 && seconds > 0) best = std::max(best, static_cast<double>(size) / seconds / 1e9);
  }
  return best;
}

}  // namespace warpload
