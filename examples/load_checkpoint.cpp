// Loads a checkpoint (file, directory of shards, or index.json) into host memory and
// prints each tensor with its first bytes.
//
//   example_load /models/llama [backend]
#include <cstdio>
#include <exception>

#include "warpload/warpload.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PATH [backend]\n", argv[0]);
    return 2;
  }
  try {
    warpload::LoadOptions options;
    if (argc > 2) options.backend = argv[2];
    warpload::Loader loader(options);
    loader.add(argv[1]);
    const warpload::LoadStats stats = loader.load();
    std::printf("%zu files, %llu bytes in %.3f s (%.2f GB/s, backend %s)\n", stats.files,
                static_cast<unsigned long long>(stats.bytes), stats.seconds, stats.gbps(),
                stats.backend.c_str());
    for (const std::string& name : loader.keys()) {
      const warpload::TensorView t = loader.tensor(name);
      std::printf("%-60s %-8s [", name.c_str(), warpload::dtype_name(t.dtype).data());
      for (std::size_t d = 0; d < t.shape.size(); ++d) {
        std::printf(d ? ", %lld" : "%lld", static_cast<long long>(t.shape[d]));
      }
      std::printf("] %llu bytes\n", static_cast<unsigned long long>(t.nbytes));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
