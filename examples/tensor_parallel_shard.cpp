// Tensor parallelism: each rank takes its block of a weight, zero-copy, the way
// fastsafetensors' get_sharded splits (blocks of ceil(size / world)).
//
//   example_shard PATH TENSOR WORLD [DIM]
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "warpload/warpload.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s PATH TENSOR WORLD [DIM]\n", argv[0]);
    return 2;
  }
  try {
    const int world = std::atoi(argv[3]);
    const int dim = argc > 4 ? std::atoi(argv[4]) : 0;
    warpload::Loader loader;
    loader.add(argv[1]);
    loader.load();
    for (int rank = 0; rank < world; ++rank) {
      const warpload::TensorView shard = loader.shard(argv[2], rank, world, dim);
      std::printf("rank %d:", rank);
      for (auto d : shard.shape) std::printf(" %lld", static_cast<long long>(d));
      std::printf("  (%s, %llu bytes spanned)\n", shard.contiguous ? "contiguous" : "strided",
                  static_cast<unsigned long long>(shard.nbytes));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
