// Writes a tiny checkpoint, loads it back through the installed library, checks the bytes.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include <warpload/warpload.hpp>

int main() {
  const auto path = std::filesystem::temp_directory_path() / "warpload-consumer.safetensors";
  std::vector<float> values{1.5f, -2.0f, 3.25f};
  warpload::SafetensorsWriter writer;
  writer.add("w", warpload::DType::kF32, {3}, std::as_bytes(std::span(values)));
  writer.write(path);

  warpload::Loader loader;
  loader.add(path);
  loader.load();
  const warpload::TensorView w = loader.tensor("w");
  const bool ok = w.nbytes == sizeof(float) * 3 && std::memcmp(w.data, values.data(), w.nbytes) == 0;
  std::filesystem::remove(path);
  std::printf("consumer: warpload %s, tensor 'w' %s\n", warpload::kVersionString,
              ok ? "matches" : "DIFFERS");
  return ok ? 0 : 1;
}
