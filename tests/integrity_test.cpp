// The integrity options: LoadOptions::verify (re-read every tensor on a path of its own and
// compare) against a storage that silently corrupts a byte, and the CLI's manifest round trip
// (`warpload hash` then `warpload load --manifest`) against a byte corrupted at rest.
// Expected bytes come from the test's own random data.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/fault_storage.hpp"
#include "support/random_checkpoint.hpp"
#include "support/temp_dir.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::Fault;
using testing::FaultInjectingStorage;
using testing::TempDir;
using testing::TensorBytes;

const std::vector<testing::TensorSpec> kSpecs = {
    {"embed", DType::kBF16, {64, 32}},
    {"norm", DType::kF32, {32}},
    {"mlp.weight", DType::kF8_E4M3, {48, 32}},
    {"mlp.scale", DType::kF32, {1, 1}},
    {"empty", DType::kF16, {0, 8}},
};

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

class IntegrityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_ / "model.safetensors";
    testing::write_random_file(path_, kSpecs, 42, bytes_);
    header_ = read_header(path_);
  }

  // File offset of byte `index` of tensor `name`.
  std::uint64_t offset_of(const std::string& name, std::uint64_t index) const {
    return header_.data_offset() + header_.find(name)->begin + index;
  }

  LoadOptions faulty(const std::string& backend, std::uint64_t offset, bool verify) const {
    LoadOptions options;
    options.custom_storage = std::make_shared<FaultInjectingStorage>(
        make_storage(backend), testing::FaultPlan{Fault::kCorrupt, offset});
    options.verify = verify;
    return options;
  }

  TempDir dir_;
  fs::path path_;
  TensorBytes bytes_;
  Header header_;
};

TEST_F(IntegrityTest, VerifyPassesForEveryBackendAndRealignedTensors) {
  const fs::path unpadded = dir_ / "unpadded.safetensors";
  TensorBytes unpadded_bytes;
  testing::write_random_file(unpadded, kSpecs, 43, unpadded_bytes, /*header_alignment=*/1);
  for (const std::string& backend : available_storage_names()) {
    if (backend == "3fs") continue;  // needs a 3FS mount (usrbio_test covers it)
    for (const fs::path& file : {path_, unpadded}) {
      SCOPED_TRACE(backend + " " + file.string());
      LoadOptions options;
      options.backend = backend;
      options.use_config = false;
      options.verify = true;
      Loader loader(options);
      loader.add(file);
      const LoadStats stats = loader.load();
      EXPECT_GT(stats.verify_seconds, 0.0);
      const TensorBytes& expected = file == path_ ? bytes_ : unpadded_bytes;
      for (const auto& [name, data] : expected) {
        const TensorView view = loader.tensor(name);
        ASSERT_EQ(view.nbytes, data.size());
        EXPECT_TRUE(data.empty() || std::memcmp(view.data, data.data(), data.size()) == 0);
      }
    }
  }
  Loader plain(LoadOptions{});
  plain.add(path_);
  EXPECT_EQ(plain.load().verify_seconds, 0.0);
}

TEST_F(IntegrityTest, VerifyCatchesAStorageThatReturnsWrongBytes) {
  const std::uint64_t bad = offset_of("mlp.weight", 777);
  const std::vector<std::string> available = available_storage_names();
  for (const std::string backend : {"posix", "uring", "mmap"}) {
    if (std::find(available.begin(), available.end(), backend) == available.end()) continue;
    SCOPED_TRACE(backend);
    // Without verify the corruption goes unnoticed: the fault is real.
    {
      Loader loader(faulty(backend, bad, /*verify=*/false));
      loader.add(path_);
      (void)loader.load();
      const TensorView view = loader.tensor("mlp.weight");
      EXPECT_EQ(view.data[777], bytes_.at("mlp.weight")[777] ^ std::byte{0xff});
    }
    Loader loader(faulty(backend, bad, /*verify=*/true));
    loader.add(path_);
    try {
      (void)loader.load();
      FAIL() << "verify accepted a corrupted byte";
    } catch (const IoError& e) {
      const std::string message = e.what();
      EXPECT_TRUE(message.starts_with(path_.string() + ": tensor 'mlp.weight': verify: "))
          << message;
      EXPECT_TRUE(contains(
          message, "loaded byte 777 of the tensor (file offset " + std::to_string(bad) + ")"))
          << message;
      EXPECT_EQ(e.offset(), bad);
      EXPECT_EQ(e.error_number(), EIO);
    }
    // Nothing of the failed load is handed out.
    EXPECT_FALSE(loader.loaded());
    EXPECT_THROW((void)loader.tensor("embed"), UnsupportedError);
  }
}

TEST_F(IntegrityTest, VerifyNamesTheFirstTensorAndByteOfManyFiles) {
  // The first byte of a later file's only tensor corrupted, among several files. The fault
  // plan's offset applies to every file; in the first file it falls in the header, which a
  // load does not read again, so only the second file is corrupted.
  const fs::path second = dir_ / "second.safetensors";
  TensorBytes second_bytes;
  testing::write_random_file(second, {{"lm_head", DType::kBF16, {16, 16}}}, 7, second_bytes);
  const std::uint64_t bad = read_header(second).data_offset();
  ASSERT_LT(bad, header_.data_offset());
  LoadOptions options;
  options.custom_storage = std::make_shared<FaultInjectingStorage>(
      make_storage("posix"), testing::FaultPlan{Fault::kCorrupt, bad});
  options.verify = true;
  Loader loader(options);
  loader.add(std::vector<fs::path>{path_, second});
  try {
    (void)loader.load();
    FAIL() << "verify accepted a corrupted byte";
  } catch (const IoError& e) {
    EXPECT_TRUE(std::string_view(e.what()).starts_with(
        second.string() + ": tensor 'lm_head': verify: loaded byte 0 of the tensor"))
        << e.what();
    EXPECT_EQ(e.offset(), bad);
  }
}

// ---- CLI: hash, load --manifest, load --verify
// ----------------------------------------------------

struct CliRun {
  int status = -1;
  std::string out;
  std::string err;
};

CliRun run_cli(const std::string& args, const fs::path& scratch) {
  const fs::path out = scratch / "stdout.txt";
  const fs::path err = scratch / "stderr.txt";
  const std::string command = std::string("XDG_CONFIG_HOME=") + scratch.string() +
                              " WARPLOAD_CONFIG= " + WARPLOAD_CLI_PATH + " " + args + " >" +
                              out.string() + " 2>" + err.string();
  const int raw = std::system(command.c_str());
  const auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, slurp(out), slurp(err)};
}

TEST_F(IntegrityTest, ManifestRoundTripAndCorruptionAtRest) {
  const CliRun hash = run_cli("hash " + path_.string(), dir_.path());
  ASSERT_EQ(hash.status, 0) << hash.err;
  EXPECT_TRUE(hash.out.starts_with(
      "{\"format\":\"warpload-manifest\",\"version\":1,\"algorithm\":\"xxh3_64\",\"tensors\":{"))
      << hash.out;
  EXPECT_TRUE(contains(hash.out, "\"norm\":{\"file\":\"model.safetensors\",\"nbytes\":128,"))
      << hash.out;
  const fs::path manifest = dir_ / "manifest.json";
  std::ofstream(manifest) << hash.out;

  const CliRun ok = run_cli(
      "load " + path_.string() + " --manifest " + manifest.string() + " --verify", dir_.path());
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_TRUE(contains(ok.out, "manifest: 5 tensors match " + manifest.string())) << ok.out;
  EXPECT_TRUE(contains(ok.out, "verify: every tensor re-read from its file and identical"))
      << ok.out;

  // One byte flipped on disk: --verify cannot see it (both reads agree), the manifest does.
  const std::uint64_t at = offset_of("norm", 5);
  {
    std::fstream file(path_, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    file.get(c);
    file.seekp(static_cast<std::streamoff>(at));
    file.put(static_cast<char>(c ^ 0x20));
  }
  EXPECT_EQ(run_cli("load " + path_.string() + " --verify", dir_.path()).status, 0);
  const CliRun bad =
      run_cli("load " + path_.string() + " --manifest " + manifest.string(), dir_.path());
  EXPECT_EQ(bad.status, 3) << bad.err;
  EXPECT_TRUE(bad.err.starts_with("warpload: " + path_.string() + ": tensor 'norm': XXH3-64 "))
      << bad.err;
  EXPECT_TRUE(contains(bad.err, "(checksum_mismatch)")) << bad.err;
  EXPECT_TRUE(bad.out.empty()) << bad.out;

  // A manifest for other files: the tensors it names and the load lacks are reported.
  const fs::path other = dir_ / "other.safetensors";
  TensorBytes other_bytes;
  testing::write_random_file(other, {{"solo", DType::kU8, {3}}}, 1, other_bytes);
  const CliRun missing =
      run_cli("load " + other.string() + " --manifest " + manifest.string(), dir_.path());
  EXPECT_EQ(missing.status, 3);
  EXPECT_TRUE(contains(missing.err, other.string() + ": tensor 'solo': is not in the manifest"))
      << missing.err;

  // Malformed manifests name themselves.
  const fs::path broken = dir_ / "broken.json";
  std::ofstream(broken) << "{\"format\":\"warpload-manifest\",\"version\":1,\"algorithm\":"
                           "\"xxh3_64\",\"tensors\":{\"norm\":{\"file\":\"m\",\"nbytes\":128,"
                           "\"xxh3_64\":\"xyz\"}}}";
  const CliRun malformed =
      run_cli("load " + path_.string() + " --manifest " + broken.string(), dir_.path());
  EXPECT_EQ(malformed.status, 3);
  EXPECT_TRUE(contains(malformed.err, broken.string() + ": tensor 'norm': \"xxh3_64\" must be"))
      << malformed.err;
  EXPECT_TRUE(contains(malformed.err, "(invalid_manifest)")) << malformed.err;
  EXPECT_EQ(run_cli("load " + path_.string() + " --manifest " + (dir_ / "none.json").string(),
                    dir_.path())
                .status,
            4);
}

}  // namespace
}  // namespace warpload
