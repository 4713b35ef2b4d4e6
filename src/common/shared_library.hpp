// SharedLibrary: the one dlopen/dlsym helper every run-time shim binds through (the CUDA
// driver, cuFile, NCCL, the 3FS USRBIO client, libnuma).
//
// A LibrarySpec says what the library is called in messages, which environment variable
// overrides where it is looked for, and the names tried otherwise. open() tries the override
// alone when it is set and non-empty, else each default in order, and returns the first that
// loads (RTLD_NOW | RTLD_LOCAL: a shim's library must not satisfy other libraries' lookups).
// Failures are uniform:
//   - no candidate loads: UnsupportedError "cannot load the <what> library: tried '<path>'
//     (<dlerror>), ...; <hint>. Set <ENV> to the full path of <soname>" (a missing client
//     library is a missing capability, not a missing file);
//   - a symbol is missing: UnsupportedError "<what> library '<path>' has no symbol '<name>'
//     (<symbol hint>)".
//
// Ownership: a SharedLibrary closes its handle when destroyed, unless release() handed the
// handle over; shims release() once every symbol is bound, because code and memory from the
// library may be in use until the process ends. Thread safety: none of its own; shims guard
// their process-wide tables.
#pragma once

#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

namespace warpload::detail {

struct LibrarySpec {
  std::string what;     // in messages: "cannot load the <what> library"
  std::string soname;   // canonical file name, e.g. "libcufile.so.0"; the default when
                        // `defaults` is empty
  std::string env_var;  // override: a path or name, tried alone when set and non-empty
  std::vector<std::string> defaults;  // tried in order when the override is unset
  std::string missing_hint;  // why it may be missing, e.g. "GPUDirect Storage is not installed"
  std::string env_hint;      // said after the variable, e.g. "or HF3FS_LIB_DIR to its folder"
  std::string symbol_hint;   // why a symbol may be missing, e.g. "not a libcufile.so.0, or ..."

  // The names open() tries, in order: the override alone, else `defaults` (else `soname`).
  [[nodiscard]] std::vector<std::string> candidates() const;
};

// One entry of a symbol table: the symbol's name and the typed function pointer it fills.
class SymbolSlot {
 public:
  template <typename Fn>
  requires std::is_function_v<Fn> SymbolSlot(const char* name, Fn** slot)
  noexcept : name_(name), slot_(static_cast<void*>(slot)), assign_(&assign<Fn>) {}

  [[nodiscard]] const char* name() const noexcept { return name_; }
  void fill(void* address) const noexcept { assign_(slot_, address); }

 private:
  template <typename Fn>
  static void assign(void* slot, void* address) noexcept {
    *static_cast<Fn**>(slot) = reinterpret_cast<Fn*>(address);
  }

  const char* name_;
  void* slot_;
  void (*assign_)(void*, void*) noexcept;
};

class SharedLibrary {
 public:
  // Loads the first of spec.candidates() that loads; throws UnsupportedError (above).
  [[nodiscard]] static SharedLibrary open(const LibrarySpec& spec);
  // Loads exactly `path` (for callers that name the library themselves); the same error.
  [[nodiscard]] static SharedLibrary open_path(const LibrarySpec& spec, const std::string& path);

  SharedLibrary(SharedLibrary&& other) noexcept;
  SharedLibrary& operator=(SharedLibrary&& other) noexcept;
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;
  ~SharedLibrary();  // dlclose() unless released

  // The path or name that loaded.
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  // Fills every slot of `table`; throws UnsupportedError naming the library and the first
  // missing symbol (slots before it are filled, the rest left alone).
  void bind(std::initializer_list<SymbolSlot> table) const;
  // The address of `symbol`, or null when the library has none.
  [[nodiscard]] void* find(const char* symbol) const noexcept;

  // Keeps the library loaded for the rest of the process; returns the dlopen handle.
  void* release() noexcept;

 private:
  SharedLibrary(std::string path, void* handle, const LibrarySpec& spec);

  std::string path_;
  void* handle_ = nullptr;
  std::string what_;
  std::string symbol_hint_;
};

}  // namespace warpload::detail
