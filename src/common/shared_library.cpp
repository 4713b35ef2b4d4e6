#include "common/shared_library.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <utility>

#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

std::string last_dlerror() {
  const char* reason = dlerror();
  return reason != nullptr ? reason : "unknown reason";
}

[[noreturn]] void throw_not_loaded(const LibrarySpec& spec,
                                   const std::vector<std::pair<std::string, std::string>>& tried,
                                   bool from_env) {
  std::string message = "cannot load the " + spec.what + " library: tried ";
  for (std::size_t i = 0; i < tried.size(); ++i) {
    if (i != 0) message += ", ";
    if (from_env) message += spec.env_var + "=";
    message += "'" + tried[i].first + "' (" + tried[i].second + ")";
  }
  message += ". ";
  if (!spec.missing_hint.empty()) message += spec.missing_hint + "? ";
  message += "Set " + spec.env_var + " to the full path of " + spec.soname;
  if (!spec.env_hint.empty()) message += ", " + spec.env_hint;
  throw UnsupportedError(message);
}

}  // namespace

std::vector<std::string> LibrarySpec::candidates() const {
  const char* override_path = env_var.empty() ? nullptr : std::getenv(env_var.c_str());
  if (override_path != nullptr && *override_path != '\0') return {override_path};
  if (!defaults.empty()) return defaults;
  return {soname};
}

SharedLibrary SharedLibrary::open(const LibrarySpec& spec) {
  const char* override_path = spec.env_var.empty() ? nullptr : std::getenv(spec.env_var.c_str());
  const bool from_env = override_path != nullptr && *override_path != '\0';
  std::vector<std::pair<std::string, std::string>> tried;
  for (const std::string& path : spec.candidates()) {
    if (void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL); handle != nullptr) {
      return SharedLibrary(path, handle, spec);
    }
    tried.emplace_back(path, last_dlerror());
  }
  throw_not_loaded(spec, tried, from_env);
}

SharedLibrary SharedLibrary::open_path(const LibrarySpec& spec, const std::string& path) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) throw_not_loaded(spec, {{path, last_dlerror()}}, false);
  return SharedLibrary(path, handle, spec);
}

SharedLibrary::SharedLibrary(std::string path, void* handle, const LibrarySpec& spec)
    : path_(std::move(path)), handle_(handle), what_(spec.what), symbol_hint_(spec.symbol_hint) {}

SharedLibrary::SharedLibrary(SharedLibrary&& other) noexcept
    : path_(std::move(other.path_)),
      handle_(std::exchange(other.handle_, nullptr)),
      what_(std::move(other.what_)),
      symbol_hint_(std::move(other.symbol_hint_)) {}

SharedLibrary& SharedLibrary::operator=(SharedLibrary&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) dlclose(handle_);
    path_ = std::move(other.path_);
    handle_ = std::exchange(other.handle_, nullptr);
    what_ = std::move(other.what_);
    symbol_hint_ = std::move(other.symbol_hint_);
  }
  return *this;
}

SharedLibrary::~SharedLibrary() {
  if (handle_ != nullptr) dlclose(handle_);
}

void* SharedLibrary::find(const char* symbol) const noexcept {
  if (handle_ == nullptr) return nullptr;
  dlerror();  // clear a stale message
  return dlsym(handle_, symbol);
}

void SharedLibrary::bind(std::initializer_list<SymbolSlot> table) const {
  for (const SymbolSlot& slot : table) {
    void* address = find(slot.name());
    if (address == nullptr) {
      std::string message = what_ + " library '" + path_ + "' has no symbol '" + slot.name() + "'";
      if (!symbol_hint_.empty()) message += " (" + symbol_hint_ + ")";
      throw UnsupportedError(message);
    }
    slot.fill(address);
  }
}

void* SharedLibrary::release() noexcept { return std::exchange(handle_, nullptr); }

}  // namespace warpload::detail
