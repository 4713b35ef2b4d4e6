#include "warpload/device.hpp"

#include <charconv>
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

}  // namespace warpload
