// libFuzzer target: the whole load path, on a file in a tmpfs directory.
//
// Each input is written once to a scratch file (in /dev/shm when it is writable, so no disk
// I/O), then loaded through Loader with each backend that reads plain files: posix, uring
// (when the kernel has it), mmap, auto and 3fs (through the USRBIO emulator, built alongside),
// with LoadOptions::verify on. For each one either
// add()/load() throws a warpload::Error naming the file, or:
//   - every backend loads it (a header read_header() accepts is a file every backend can load);
//   - every tensor view and shard lies inside the buffer that owns it, is aligned to its
//     element size and holds exactly the file's bytes for that tensor (tensor() may refuse
//     only an empty tensor whose shape does not fit a view's int64 shape and strides).
// Anything else (another exception, a sanitizer report, a leak, a hang) is a crash.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "fuzz_checks.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"
#include "warpload/loader.hpp"
#include "warpload/storage.hpp"

namespace {

namespace fs = std::filesystem;
using warpload::fuzz::check;

// The scratch directory: created on the first input, removed at exit.
const fs::path& scratch_file() {
  static const fs::path file = [] {
    std::string pattern;
    if (::access("/dev/shm", W_OK) == 0) {
      pattern = "/dev/shm/warpload-fuzz-XXXXXX";
    } else {
      const char* tmp = std::getenv("TMPDIR");
      pattern = std::string(tmp != nullptr ? tmp : "/tmp") + "/warpload-fuzz-XXXXXX";
    }
    if (::mkdtemp(pattern.data()) == nullptr) {
      warpload::fuzz::invariant_broken("cannot create a scratch directory " + pattern + ": " +
                                       std::strerror(errno));
    }
    static const fs::path dir = pattern;
    // A 3FS "mount" for the emulator: any directory holding 3fs-virt/.
    std::error_code made;
    fs::create_directory(dir / "3fs-virt", made);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(dir, ec);
    });
    return dir / "input.safetensors";
  }();
  return file;
}

void write_input(const fs::path& path, const std::uint8_t* data, std::size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  check(fd >= 0, "cannot create " + path.string() + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < size) {
    const ssize_t wrote = ::write(fd, data + done, size - done);
    if (wrote < 0 && errno == EINTR) continue;
    check(wrote > 0, "cannot write " + path.string() + ": " + std::strerror(errno));
    done += static_cast<std::size_t>(wrote);
  }
  ::close(fd);
}

// `view` spans [data, data + nbytes) inside its owner and is aligned to its element size.
void check_view(const warpload::TensorView& view, const std::string& what) {
  check(view.owner != nullptr, what + ": view without an owner");
  check(view.memory == warpload::MemoryKind::kHost, what + ": host load gave non-host memory");
  if (view.nbytes == 0) return;
  const std::byte* begin = view.owner->data();
  const std::byte* end = begin + view.owner->size();
  check(view.data >= begin && view.data <= end && view.nbytes <= std::size_t(end - view.data),
        what + ": view lies outside its buffer");
  check(reinterpret_cast<std::uintptr_t>(view.data) % warpload::dtype_alignment(view.dtype) == 0,
        what + ": view is not aligned to its element size");
}

void load_with(const std::string& backend, const fs::path& path,
               std::span<const std::uint8_t> input, bool header_valid) {
  warpload::LoadOptions options;
  options.backend = backend;
  options.use_config = false;
  options.verify = true;
  warpload::Loader loader(options);
  try {
    loader.add(path);
    (void)loader.load();
  } catch (const warpload::Error& e) {
    warpload::fuzz::check_names_file(e.what(), path.string());
    check(!header_valid, backend + ": a file read_header() accepts failed to load: " + e.what());
    return;
  }
  check(header_valid, backend + ": loaded a file read_header() refuses");
  const warpload::PlannedFile& file = loader.files().front();
  for (const warpload::TensorInfo& info : file.header.tensors) {
    const std::string what = backend + ": tensor '" + info.name + "'";
    warpload::TensorView view;
    try {
      view = loader.tensor(info.name);
    } catch (const warpload::UnsupportedError& e) {
      // Only an empty tensor can have dims or strides past int64 (see Loader::tensor).
      check(info.nbytes() == 0, what + ": tensor() refused a non-empty tensor: " + e.what());
      warpload::fuzz::check_names_file(e.what(), path.string());
      continue;
    }
    check(view.nbytes == info.nbytes(), what + ": view size differs from the header's");
    check_view(view, what);
    const std::uint64_t at = file.header.data_offset() + info.begin;
    check(at + info.nbytes() <= input.size(), what + ": tensor past the end of the input");
    check(info.nbytes() == 0 || std::memcmp(view.data, input.data() + at, info.nbytes()) == 0,
          what + ": loaded bytes differ from the file's");
    if (view.shape.empty()) continue;
    for (const auto& [rank, world, dim] : {std::tuple{1, 2, 0}, std::tuple{0, 3, -1}}) {
      try {
        check_view(loader.shard(info.name, rank, world, dim), what + " shard");
      } catch (const warpload::UnsupportedError&) {
        // A sub-byte shard that does not fall on whole bytes: refused, which is right.
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<std::string> backends = [] {
    std::vector<std::string> names;
#ifdef WARPLOAD_USRBIO_EMULATOR
    ::setenv("WARPLOAD_HF3FS_LIB", WARPLOAD_USRBIO_EMULATOR, 0);  // a caller's choice wins
#endif
    for (const std::string& name : warpload::available_storage_names()) {
      if (name == "posix" || name == "uring" || name == "mmap" || name == "auto" || name == "3fs") {
        names.push_back(name);
      }
    }
    return names;
  }();
  const fs::path& path = scratch_file();
  write_input(path, data, size);
  bool header_valid = true;
  try {
    warpload::fuzz::check_header(warpload::read_header(path), size);
  } catch (const warpload::InvalidFileError& e) {
    warpload::fuzz::check_names_file(e.what(), path.string());
    header_valid = false;
  }
  for (const std::string& backend : backends) {
    load_with(backend, path, {data, size}, header_valid);
  }
  return 0;
}
