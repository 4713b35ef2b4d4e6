// End-to-end tests of the warpload CLI: each test spawns the binary (WARPLOAD_CLI_PATH) and
// checks its exit status, stdout and stderr against files read independently of warpload
// (tests/support/reference_reader.hpp, simdjson for the CLI's JSON, xxHash for tensor bytes).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "support/cli_process.hpp"
#include "support/reference_reader.hpp"
#include "support/sanitizers.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "warpload/config.hpp"
#include "warpload/error.hpp"
#include "warpload/storage.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

using testing::CliResult;
using testing::read_whole_file;

// Runs the CLI with `args`; stdout and stderr go to files so that neither can block it.
CliResult run_cli(const std::vector<std::string>& args) {
  CliResult result = testing::run_process(WARPLOAD_CLI_PATH, args);
  if (result.status == -1) ADD_FAILURE() << "cannot run " << WARPLOAD_CLI_PATH;
  return result;
}

std::string describe(const CliResult& r) {
  return "exit " + std::to_string(r.status) + "\n--- stdout:\n" + r.out.substr(0, 2000) +
         "\n--- stderr:\n" + r.err.substr(0, 2000);
}

// A failure: the expected status, exactly one "warpload: ..." line on stderr, nothing on stdout.
void expect_failure(const CliResult& r, int status, std::string_view must_mention) {
  EXPECT_EQ(r.status, status) << describe(r);
  EXPECT_TRUE(r.out.empty()) << describe(r);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << describe(r);
  EXPECT_EQ(r.err.rfind("warpload: ", 0), 0U) << describe(r);
  EXPECT_NE(r.err.find(must_mention), std::string::npos)
      << "stderr should mention '" << must_mention << "'\n"
      << describe(r);
}

std::string hex64(std::uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016" PRIx64, value);
  return text;
}

std::vector<fs::path> shard_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

bool backend_available(const std::string& name) {
  const std::vector<std::string> names = available_storage_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string json_string(simdjson::dom::element e) { return std::string(std::string_view(e)); }

std::vector<std::uint64_t> json_numbers(simdjson::dom::element e) {
  std::vector<std::uint64_t> out;
  for (simdjson::dom::element n : simdjson::dom::array(e)) {
    out.push_back(std::uint64_t(n));
  }
  return out;
}

// A parsed JSON document together with the parser that owns its memory.
struct Json {
  std::unique_ptr<simdjson::dom::parser> parser = std::make_unique<simdjson::dom::parser>();
  simdjson::dom::element root;
};

Json parse_json(const std::string& text) {
  Json json;
  const simdjson::error_code error = json.parser->parse(text).get(json.root);
  EXPECT_EQ(error, simdjson::SUCCESS) << simdjson::error_message(error) << "\n" << text;
  return json;
}

// One checkpoint for the whole suite (tests run as separate processes under ctest, so each
// generates its own; 4 MiB takes milliseconds).
class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new TempDir;
    // A developer's own settings file must not change what the CLI does under test.
    ::setenv("XDG_CONFIG_HOME", (scratch_->path() / "xdg").c_str(), 1);
    ::unsetenv("WARPLOAD_CONFIG");
    checkpoint_ = new fs::path(scratch_->path() / "ckpt");
    const CliResult r =
        run_cli({"gen", checkpoint_->string(), "--size", "4MiB", "--shards", "3", "--seed", "7"});
    ASSERT_EQ(r.status, 0) << describe(r);
  }
  static void TearDownTestSuite() {
    delete checkpoint_;
    delete scratch_;
  }

  static const fs::path& checkpoint() { return *checkpoint_; }
  static const fs::path& scratch() { return scratch_->path(); }

  // Every tensor of the checkpoint, read independently: name -> (file, header).
  static std::map<std::string, std::pair<fs::path, testing::ReferenceFile>> reference_tensors(
      const fs::path& dir) {
    std::map<std::string, std::pair<fs::path, testing::ReferenceFile>> tensors;
    for (const fs::path& file : shard_files(dir)) {
      const testing::ReferenceFile header = testing::read_reference_header(file);
      for (const auto& [name, info] : header.tensors) {
        tensors[name] = {file, header};
      }
    }
    return tensors;
  }

 private:
  static inline TempDir* scratch_ = nullptr;
  static inline fs::path* checkpoint_ = nullptr;
};

// ---- gen ----

TEST_F(CliTest, GenIsDeterministicPerSeed) {
  const fs::path a = scratch() / "a";
  const fs::path b = scratch() / "b";
  const fs::path c = scratch() / "c";
  for (const auto& [dir, seed] : {std::pair{a, "11"}, {b, "11"}, {c, "12"}}) {
    const CliResult r =
        run_cli({"gen", dir.string(), "--size", "2MiB", "--shards", "2", "--seed", seed});
    ASSERT_EQ(r.status, 0) << describe(r);
  }
  const std::vector<fs::path> files = shard_files(a);
  ASSERT_EQ(files.size(), 2U);
  for (const fs::path& file : files) {
    const std::string bytes_a = read_whole_file(file);
    EXPECT_EQ(bytes_a, read_whole_file(b / file.filename())) << file.filename();
    EXPECT_NE(bytes_a, read_whole_file(c / file.filename())) << file.filename();
  }
  EXPECT_EQ(read_whole_file(a / "model.safetensors.index.json"),
            read_whole_file(b / "model.safetensors.index.json"));

  // Another seed changes every tensor, not just some bytes.
  const auto tensors_a = reference_tensors(a);
  for (const auto& [name, where] : reference_tensors(c)) {
    const auto& [file_a, header_a] = tensors_a.at(name);
    EXPECT_NE(testing::read_reference_tensor(file_a, header_a, name),
              testing::read_reference_tensor(where.first, where.second, name))
        << name;
  }
}

TEST_F(CliTest, GenBytesDoNotDependOnSharding) {
  const fs::path one = scratch() / "one";
  const fs::path five = scratch() / "five";
  ASSERT_EQ(run_cli({"gen", one.string(), "--size", "2MiB", "--shards", "1"}).status, 0);
  ASSERT_EQ(run_cli({"gen", five.string(), "--size", "2MiB", "--shards", "5"}).status, 0);
  const auto tensors_one = reference_tensors(one);
  const auto tensors_five = reference_tensors(five);
  ASSERT_EQ(tensors_one.size(), tensors_five.size());
  for (const auto& [name, where] : tensors_five) {
    const auto& [file_one, header_one] = tensors_one.at(name);
    EXPECT_EQ(testing::read_reference_tensor(file_one, header_one, name),
              testing::read_reference_tensor(where.first, where.second, name))
        << name;
  }
}

TEST_F(CliTest, GenWritesTheShardsAndAConsistentIndex) {
  for (const unsigned shards : {1U, 3U, 6U}) {
    const std::string count = std::to_string(shards);
    SCOPED_TRACE("shards " + count);
    // (Not "s" + std::to_string(): GCC 12 warns falsely about it, -Wrestrict.)
    const fs::path dir = scratch() / ("shards-" + count);
    const CliResult r =
        run_cli({"gen", dir.string(), "--size", "3MiB", "--shards", count, "--seed", "5"});
    ASSERT_EQ(r.status, 0) << describe(r);

    std::vector<std::string> expected_names;
    for (unsigned i = 1; i <= shards; ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05u-of-%05u.safetensors", i, shards);
      expected_names.emplace_back(name);
    }
    std::vector<std::string> names;
    for (const fs::path& file : shard_files(dir)) {
      names.push_back(file.filename().string());
    }
    EXPECT_EQ(names, expected_names);

    const Json index = parse_json(read_whole_file(dir / "model.safetensors.index.json"));
    std::map<std::string, std::string> weight_map;
    for (auto [key, value] : simdjson::dom::object(index.root["weight_map"])) {
      weight_map[std::string(key)] = json_string(value);
    }

    std::uint64_t total = 0;
    std::size_t tensors = 0;
    for (const fs::path& file : shard_files(dir)) {
      const testing::ReferenceFile header = testing::read_reference_header(file);
      EXPECT_FALSE(header.tensors.empty()) << file;
      EXPECT_EQ(header.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
      EXPECT_EQ(header.data_offset % 8, 0U) << "header padded to 8 bytes";
      for (const auto& [name, t] : header.tensors) {
        total += t.end - t.begin;
        ++tensors;
        EXPECT_EQ(weight_map[name], file.filename().string()) << name;
      }
    }
    EXPECT_EQ(weight_map.size(), tensors);
    EXPECT_EQ(std::uint64_t(index.root["metadata"]["total_size"]), total);
  }
}

TEST_F(CliTest, GenLandsWithinFivePercentOfTheSize) {
  for (const auto& [text, bytes] :
       {std::pair<std::string, double>{"1MiB", 1 << 20}, {"8MiB", 8 << 20}, {"5000000", 5e6}}) {
    SCOPED_TRACE(text);
    const fs::path dir = scratch() / ("size-" + text);
    const CliResult r = run_cli({"gen", dir.string(), "--size", text});
    ASSERT_EQ(r.status, 0) << describe(r);
    std::uint64_t total = 0;
    for (const auto& [name, where] : reference_tensors(dir)) {
      const testing::ReferenceTensor& t = where.second.tensors.at(name);
      total += t.end - t.begin;
    }
    EXPECT_NEAR(static_cast<double>(total), bytes, 0.05 * bytes);
  }
  // Large sizes through --dry-run, which plans without writing.
  for (const auto& [text, bytes] : {std::pair<std::string, double>{"2GiB", 2.0 * (1 << 30)},
                                    {"7GiB", 7.0 * (1 << 30)},
                                    {"70GB", 70e9},
                                    {"1TiB", 1024.0 * (1 << 30)}}) {
    SCOPED_TRACE(text);
    const fs::path dir = scratch() / "never-written";
    const CliResult r = run_cli({"gen", dir.string(), "--size", text, "--dry-run"});
    ASSERT_EQ(r.status, 0) << describe(r);
    const std::size_t at = r.out.find("would write ");
    ASSERT_NE(at, std::string::npos) << r.out;
    const double planned = std::stod(r.out.substr(at + 12));
    EXPECT_NEAR(planned, bytes, 0.05 * bytes);
    EXPECT_FALSE(fs::exists(dir));
  }
}

TEST_F(CliTest, GenLayoutIsLlamaShapedWithFp8BlockScales) {
  const auto tensors = reference_tensors(checkpoint());
  auto info = [&](const std::string& name) -> const testing::ReferenceTensor& {
    return tensors.at(name).second.tensors.at(name);
  };
  for (const char* name :
       {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight"}) {
    ASSERT_TRUE(tensors.count(name)) << name;
  }
  const auto& embed = info("model.embed_tokens.weight");
  const auto& q = info("model.layers.0.self_attn.q_proj.weight");
  const auto& k = info("model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(embed.dtype, "BF16");
  EXPECT_EQ(info("lm_head.weight").shape, embed.shape);
  const std::uint64_t hidden = embed.shape[1];
  EXPECT_EQ(q.shape, (std::vector<std::uint64_t>{hidden, hidden}));
  EXPECT_LT(k.shape[0], q.shape[0]) << "grouped-query attention";
  EXPECT_EQ(info("model.norm.weight").shape, (std::vector<std::uint64_t>{hidden}));

  // FP8 MLPs carry F32 block scales of ceil(rows / 128) x ceil(cols / 128).
  int fp8 = 0;
  for (const auto& [name, where] : tensors) {
    const testing::ReferenceTensor& t = where.second.tensors.at(name);
    if (t.dtype != "F8_E4M3") {
      continue;
    }
    ++fp8;
    const std::string scale_name =
        name.substr(0, name.size() - std::string_view(".weight").size()) + ".weight_scale_inv";
    ASSERT_TRUE(tensors.count(scale_name)) << scale_name;
    const testing::ReferenceTensor& scale = info(scale_name);
    EXPECT_EQ(scale.dtype, "F32");
    EXPECT_EQ(scale.shape,
              (std::vector<std::uint64_t>{(t.shape[0] + 127) / 128, (t.shape[1] + 127) / 128}));
  }
  EXPECT_GT(fp8, 0);
}

TEST_F(CliTest, GenRejectsBadArguments) {
  expect_failure(run_cli({"gen", (scratch() / "x").string(), "--size", "1KiB"}), 2, "--size");
  expect_failure(run_cli({"gen", (scratch() / "x").string(), "--size", "1MiB", "--shards", "999"}),
                 2, "--shards");
  expect_failure(run_cli({"gen", (scratch() / "x").string(), "--size", "lots"}), 2, "--size");
  // A directory that cannot be created: below a regular file.
  const fs::path file = scratch() / "regular-file";
  std::ofstream(file) << "x";
  expect_failure(run_cli({"gen", (file / "sub").string(), "--size", "1MiB"}), 5,
                 (file / "sub").string());
}

// ---- inspect ----

TEST_F(CliTest, InspectJsonMatchesTheFiles) {
  const CliResult r = run_cli({"inspect", checkpoint().string(), "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  const Json json = parse_json(r.out);

  const std::vector<fs::path> files = shard_files(checkpoint());
  simdjson::dom::array json_files = json.root["files"];
  ASSERT_EQ(json_files.size(), files.size());
  std::size_t i = 0;
  std::uint64_t total = 0;
  std::size_t count = 0;
  for (simdjson::dom::element f : json_files) {
    const testing::ReferenceFile header = testing::read_reference_header(files[i]);
    EXPECT_EQ(fs::path(json_string(f["path"])).filename(), files[i].filename());
    EXPECT_EQ(std::uint64_t(f["header_length"]), header.header_length);
    EXPECT_EQ(std::uint64_t(f["data_offset"]), header.data_offset);
    EXPECT_EQ(std::uint64_t(f["data_size"]), fs::file_size(files[i]) - header.data_offset);
    EXPECT_EQ(json_string(f["metadata"]["format"]), "pt");
    ++i;
  }

  const auto reference = reference_tensors(checkpoint());
  for (simdjson::dom::element t : simdjson::dom::array(json.root["tensors"])) {
    const std::string name = json_string(t["name"]);
    ASSERT_TRUE(reference.count(name)) << name;
    const auto& [file, header] = reference.at(name);
    const testing::ReferenceTensor& expected = header.tensors.at(name);
    EXPECT_EQ(fs::path(json_string(t["file"])).filename(), file.filename()) << name;
    EXPECT_EQ(json_string(t["dtype"]), expected.dtype) << name;
    EXPECT_EQ(json_numbers(t["shape"]), expected.shape) << name;
    EXPECT_EQ(std::uint64_t(t["nbytes"]), expected.end - expected.begin) << name;
    EXPECT_EQ(json_numbers(t["data_offsets"]),
              (std::vector<std::uint64_t>{expected.begin, expected.end}))
        << name;
    total += expected.end - expected.begin;
    ++count;
  }
  EXPECT_EQ(count, reference.size());
  EXPECT_EQ(std::uint64_t(json.root["total_bytes"]), total);
  EXPECT_EQ(std::uint64_t(json.root["total_tensors"]), count);
  std::uint64_t by_dtype = 0;
  for (auto [dtype, bytes] : simdjson::dom::object(json.root["bytes_by_dtype"])) {
    by_dtype += std::uint64_t(bytes);
  }
  EXPECT_EQ(by_dtype, total);
}

TEST_F(CliTest, InspectAcceptsAFileAndAnIndex) {
  const fs::path first = shard_files(checkpoint()).front();
  const CliResult one = run_cli({"inspect", first.string(), "--json"});
  ASSERT_EQ(one.status, 0) << describe(one);
  const Json one_json = parse_json(one.out);
  EXPECT_EQ(simdjson::dom::array(one_json.root["files"]).size(), 1U);
  EXPECT_EQ(std::uint64_t(one_json.root["total_tensors"]),
            testing::read_reference_header(first).tensors.size());

  const CliResult index =
      run_cli({"inspect", (checkpoint() / "model.safetensors.index.json").string(), "--json"});
  ASSERT_EQ(index.status, 0) << describe(index);
  const Json index_json = parse_json(index.out);
  EXPECT_EQ(std::uint64_t(index_json.root["total_tensors"]),
            reference_tensors(checkpoint()).size());
}

TEST_F(CliTest, InspectTextListsTensorsAndTotals) {
  const CliResult r = run_cli({"inspect", checkpoint().string()});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(r.err.empty()) << r.err;
  const auto reference = reference_tensors(checkpoint());
  std::uint64_t total = 0;
  for (const auto& [name, where] : reference) {
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
    const testing::ReferenceTensor& t = where.second.tensors.at(name);
    total += t.end - t.begin;
  }
  const std::string totals = "total: 3 files, " + std::to_string(reference.size()) + " tensors, " +
                             std::to_string(total) + " bytes";
  EXPECT_NE(r.out.find(totals), std::string::npos) << r.out;
  for (const char* dtype : {"BF16", "F8_E4M3", "F32"}) {
    EXPECT_NE(r.out.find(std::string("\n  ") + dtype), std::string::npos) << dtype;
  }
}

// ---- load ----

struct LoadCase {
  std::string backend;
  std::vector<std::string> extra;
};

void PrintTo(const LoadCase& c, std::ostream* os) {
  *os << "--backend " << c.backend;
  for (const std::string& arg : c.extra) {
    *os << ' ' << arg;
  }
}

class CliLoadTest : public CliTest, public ::testing::WithParamInterface<LoadCase> {};

TEST_P(CliLoadTest, HashesMatchIndependentReads) {
  const LoadCase& c = GetParam();
  if (!backend_available(c.backend)) {
    GTEST_SKIP() << c.backend << " is not available here";
  }
  std::vector<std::string> args = {"load",  checkpoint().string(), "--backend", c.backend, "--json",
                                   "--hash"};
  args.insert(args.end(), c.extra.begin(), c.extra.end());
  const CliResult r = run_cli(args);
  ASSERT_EQ(r.status, 0) << describe(r);
  const Json json = parse_json(r.out);

  const auto reference = reference_tensors(checkpoint());
  std::uint64_t total = 0;
  std::set<std::string> seen;
  for (simdjson::dom::element t : simdjson::dom::array(json.root["tensors"])) {
    const std::string name = json_string(t["name"]);
    ASSERT_TRUE(reference.count(name)) << name;
    const auto& [file, header] = reference.at(name);
    const std::string bytes = testing::read_reference_tensor(file, header, name);
    EXPECT_EQ(json_string(t["xxh3_64"]), hex64(XXH3_64bits(bytes.data(), bytes.size()))) << name;
    EXPECT_EQ(std::uint64_t(t["nbytes"]), bytes.size()) << name;
    EXPECT_EQ(json_string(t["dtype"]), header.tensors.at(name).dtype) << name;
    EXPECT_EQ(json_numbers(t["shape"]), header.tensors.at(name).shape) << name;
    EXPECT_EQ(fs::path(json_string(t["file"])).filename(), file.filename()) << name;
    total += bytes.size();
    seen.insert(name);
  }
  EXPECT_EQ(seen.size(), reference.size());
  EXPECT_EQ(std::uint64_t(json.root["bytes"]), total);
  EXPECT_EQ(std::uint64_t(json.root["files"]), 3U);
  EXPECT_GT(double(json.root["seconds"]), 0.0);
  EXPECT_GT(double(json.root["gbps"]), 0.0);
  EXPECT_FALSE(json_string(json.root["backend"]).empty());
}

INSTANTIATE_TEST_SUITE_P(
    Backends, CliLoadTest,
    ::testing::Values(
        LoadCase{"auto", {}}, LoadCase{"posix", {}}, LoadCase{"posix", {"--direct"}},
        LoadCase{"uring", {}}, LoadCase{"uring", {"--direct"}}, LoadCase{"mmap", {}},
        LoadCase{"posix", {"--threads", "3", "--block-size", "12345"}},
        LoadCase{"posix", {"--direct", "--threads", "5", "--block-size", "192KiB"}},
        LoadCase{"uring", {"--threads", "1", "--queue-depth", "3", "--block-size", "100000"}},
        LoadCase{"uring",
                 {"--direct", "--threads", "3", "--queue-depth", "7", "--block-size", "1M"}}),
    [](const ::testing::TestParamInfo<LoadCase>& param_info) {
      std::string name = param_info.param.backend;
      for (const std::string& arg : param_info.param.extra) {
        for (const char ch : arg) {
          if (std::isalnum(static_cast<unsigned char>(ch))) {
            name += ch;
          }
        }
      }
      return name + "_" + std::to_string(param_info.index);
    });

TEST_F(CliTest, LoadTextPrintsHashTableAndSummary) {
  const CliResult r = run_cli({"load", checkpoint().string(), "--backend", "posix", "--hash"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(r.err.empty()) << "no progress bar when stderr is not a terminal: " << r.err;
  const auto reference = reference_tensors(checkpoint());
  for (const auto& [name, where] : reference) {
    const std::string bytes = testing::read_reference_tensor(where.first, where.second, name);
    const std::string hash = hex64(XXH3_64bits(bytes.data(), bytes.size()));
    const std::size_t line_start = r.out.find(name + " ");
    ASSERT_NE(line_start, std::string::npos) << name;
    const std::string line = r.out.substr(line_start, r.out.find('\n', line_start) - line_start);
    EXPECT_NE(line.find(hash), std::string::npos) << line;
  }
  EXPECT_NE(r.out.find("GB/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loaded "), std::string::npos) << r.out;
}

TEST_F(CliTest, LoadJsonWithoutHashListsTensorsOnly) {
  const CliResult r = run_cli({"load", checkpoint().string(), "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  const Json json = parse_json(r.out);
  simdjson::dom::array tensors = json.root["tensors"];
  EXPECT_EQ(tensors.size(), reference_tensors(checkpoint()).size());
  for (simdjson::dom::element t : tensors) {
    EXPECT_EQ(t["xxh3_64"].error(), simdjson::NO_SUCH_FIELD);
  }
}

// ---- failures ----

// A sparse checkpoint: `count` U8 tensors of `each` bytes whose data section is a hole (reads
// as zeros, no disk used).
void write_sparse_checkpoint(const fs::path& path, int count, std::uint64_t each) {
  std::string header = "{";
  for (int i = 0; i < count; ++i) {
    header += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
              "\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(each) + "],\"data_offsets\":[" +
              std::to_string(each * i) + "," + std::to_string(each * (i + 1)) + "]}";
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out.close();
  fs::resize_file(path, 8 + header.size() + each * static_cast<std::uint64_t>(count));
}

std::uint64_t json_peak_rss(const CliResult& r) {
  const Json json = parse_json(r.out);
  return std::uint64_t(json.root["peak_rss_bytes"]);
}

// --memory-limit: a checkpoint 4x the limit is loaded, hashed, verified and checked against a
// manifest while the process's peak RSS stays under its own baseline + the limit + 24 MiB
// (the read-ahead's bound is the limit; the slack covers the verify buffer and allocator
// rounding). Without the limit the same load holds the whole checkpoint: the check can fail.
TEST_F(CliTest, MemoryLimitBoundsPeakRssWhileHashingAndVerifying) {
  const TempDir dir;
  constexpr std::uint64_t kMiB = 1 << 20;
  const std::uint64_t limit = 64 * kMiB;
  write_sparse_checkpoint(dir / "big.safetensors", 64, 4 * kMiB);  // 256 MiB: 4x the limit
  write_sparse_checkpoint(dir / "tiny.safetensors", 1, 4096);
  const CliResult base =
      run_cli({"load", (dir / "tiny.safetensors").string(), "--json", "--backend", "posix"});
  ASSERT_EQ(base.status, 0) << describe(base);
  const CliResult manifest = run_cli({"hash", (dir / "big.safetensors").string()});
  ASSERT_EQ(manifest.status, 0) << describe(manifest);
  std::ofstream(dir / "manifest.json") << manifest.out;

  const CliResult bounded = run_cli(
      {"load", (dir / "big.safetensors").string(), "--memory-limit", "64MiB", "--hash", "--verify",
       "--manifest", (dir / "manifest.json").string(), "--json", "--backend", "posix"});
  ASSERT_EQ(bounded.status, 0) << describe(bounded);
  const Json json = parse_json(bounded.out);
  EXPECT_EQ(std::uint64_t(json.root["bytes"]), 256 * kMiB);
  EXPECT_EQ(std::uint64_t(json.root["memory_limit"]), limit);
  EXPECT_GE(std::uint64_t(json.root["chunks"]), 12u);
  const std::string zeros(4 * kMiB, '\0');
  std::size_t tensors = 0;
  for (simdjson::dom::element t : simdjson::dom::array(json.root["tensors"])) {
    ++tensors;
    EXPECT_EQ(json_string(t["xxh3_64"]), hex64(XXH3_64bits(zeros.data(), zeros.size())));
  }
  EXPECT_EQ(tensors, 64u);
  const CliResult whole =
      run_cli({"load", (dir / "big.safetensors").string(), "--json", "--backend", "posix"});
  ASSERT_EQ(whole.status, 0) << describe(whole);
#ifndef WARPLOAD_TEST_SANITIZED
  const std::uint64_t peak = json_peak_rss(bounded);
  const std::uint64_t baseline = json_peak_rss(base);
  EXPECT_LE(peak, baseline + limit + 24 * kMiB)
      << "peak " << peak / kMiB << " MiB, baseline " << baseline / kMiB << " MiB";
  EXPECT_GT(json_peak_rss(whole), baseline + 256 * kMiB - 8 * kMiB) << "the check can fail";
#endif

  const CliResult device = run_cli({"load", (dir / "tiny.safetensors").string(), "--memory-limit",
                                    "1MiB", "--device", "cuda:0"});
  EXPECT_EQ(device.status, 2) << describe(device);
}

TEST_F(CliTest, MissingPathIsNotFound) {
  const std::string missing = (scratch() / "no-such-model").string();
  for (const char* command : {"inspect", "load", "bench"}) {
    SCOPED_TRACE(command);
    expect_failure(run_cli({command, missing}), 4, missing);
  }
}

TEST_F(CliTest, CorruptFilesAreInvalid) {
  const fs::path first = shard_files(checkpoint()).front();
  const std::string original = read_whole_file(first);

  const fs::path truncated = scratch() / "truncated.safetensors";
  std::ofstream(truncated, std::ios::binary)
      .write(original.data(), static_cast<std::streamsize>(original.size() - 100));

  const fs::path bad_json = scratch() / "bad-json.safetensors";
  {
    const std::string header = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], oops}}  ";
    std::string file(8, '\0');
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) {
      file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    }
    file += header;
    file += std::string(4, '\0');
    std::ofstream(bad_json, std::ios::binary)
        .write(file.data(), static_cast<std::streamsize>(file.size()));
  }

  for (const fs::path& file : {truncated, bad_json}) {
    for (const char* command : {"inspect", "load"}) {
      SCOPED_TRACE(std::string(command) + " " + file.filename().string());
      expect_failure(run_cli({command, file.string(), "--json"}), 3, file.filename().string());
      expect_failure(run_cli({command, file.string()}), 3, file.filename().string());
    }
  }
}

TEST_F(CliTest, UnknownBackendListsTheAvailableOnes) {
  const CliResult r = run_cli({"load", checkpoint().string(), "--backend", "floppy"});
  expect_failure(r, 2, "floppy");
  for (const std::string& name : available_storage_names()) {
    EXPECT_NE(r.err.find(name), std::string::npos) << name;
  }
  expect_failure(run_cli({"bench", checkpoint().string(), "--backends", "posix,floppy"}), 2,
                 "floppy");
}

TEST_F(CliTest, BadOptionsAreUsageErrors) {
  for (const char* size : {"12XB", "0", "-4", "1.5", "", "4 MiB"}) {
    SCOPED_TRACE(size);
    expect_failure(run_cli({"load", checkpoint().string(), "--block-size", size}), 2,
                   "--block-size");
  }
  expect_failure(run_cli({"load", checkpoint().string(), "--threads", "0"}), 2, "--threads");
  expect_failure(run_cli({"load", checkpoint().string(), "--backend", "mmap", "--direct"}), 2,
                 "--direct");
  expect_failure(run_cli({"load", checkpoint().string(), "--direct"}), 2, "'auto'");
  expect_failure(run_cli({"load", checkpoint().string(), "--no-such-option"}), 2,
                 "--no-such-option");
  expect_failure(run_cli({"load"}), 2, "PATH");
  expect_failure(run_cli({}), 2, "subcommand");
  expect_failure(run_cli({"frobnicate"}), 2, "frobnicate");
}

TEST_F(CliTest, VersionAndHelp) {
  const CliResult version = run_cli({"--version"});
  EXPECT_EQ(version.status, 0);
  EXPECT_NE(version.out.find("warpload 0."), std::string::npos) << version.out;
  const CliResult help = run_cli({"load", "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("--block-size"), std::string::npos) << help.out;
}

// ---- bench ----

TEST_F(CliTest, BenchJsonReportsEveryRow) {
  const CliResult r = run_cli({"bench", checkpoint().string(), "--runs", "1", "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  const Json json = parse_json(r.out);
  const bool cache_dropped = json_string(json.root["cache_drop"]) != "none";
  EXPECT_EQ(std::uint64_t(json.root["files"]), 3U);
  EXPECT_EQ(std::uint64_t(json.root["runs"]), 1U);
  EXPECT_GT(double(json.root["cold_limit_gbps"]), 0.0);
  EXPECT_GT(double(json.root["warm_limit_gbps"]), 0.0);

  std::vector<std::string> expected_labels;
  for (const std::string& name : available_storage_names()) {
    expected_labels.push_back(name);
    if (name != "auto" && name != "mmap") {
      expected_labels.push_back(name + " --direct");
    }
  }
  std::vector<std::string> labels;
  for (simdjson::dom::element row : simdjson::dom::array(json.root["rows"])) {
    const std::string label = json_string(row["label"]);
    labels.push_back(label);
    SCOPED_TRACE(label);
    EXPECT_GT(double(row["warm_gbps"]), 0.0);
    EXPECT_GT(double(row["warm_fraction_of_limit"]), 0.0);
    EXPECT_GT(double(row["warm_vs_mmap"]), 0.0);
    if (cache_dropped || bool(row["direct"])) {
      EXPECT_GT(double(row["cold_gbps"]), 0.0);
      EXPECT_GT(double(row["cold_fraction_of_limit"]), 0.0);
    }
  }
  EXPECT_EQ(labels, expected_labels);
  EXPECT_NE(r.err.find("bench: "), std::string::npos) << "progress lines on stderr";
}

TEST_F(CliTest, BenchTextShowsTableAndLimits) {
  const CliResult r =
      run_cli({"bench", checkpoint().string(), "--runs", "1", "--backends", "posix,mmap"});
  ASSERT_EQ(r.status, 0) << describe(r);
  for (const char* text :
       {"backend", "cold GB/s", "% cold limit", "warm GB/s", "% warm limit", "× mmap (warm)",
        "\nposix ", "\nposix --direct ", "\nmmap ", "cold limit: ", "warm limit: ", "files: 3"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  EXPECT_EQ(r.out.find("uring"), std::string::npos) << r.out;
}

// ---- tune and the config ----

using testing::ScopedEnv;

// A registered backend that cannot run here is refused with the registry's reason (exit 6,
// unsupported), not as an unknown name: for 3fs, the client library path tried and the
// variable to set.
TEST_F(CliTest, UnavailableBackendPrintsTheRegistryReason) {
  const std::string missing = "/nonexistent/libhf3fs_api_shared.so";
  const ScopedEnv library("WARPLOAD_HF3FS_LIB", missing);
  const CliResult r = run_cli({"load", checkpoint().string(), "--backend", "3fs"});
  expect_failure(r, 6, missing);
  EXPECT_NE(r.err.find("WARPLOAD_HF3FS_LIB"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("unknown"), std::string::npos) << r.err;
}

TEST_F(CliTest, TuneWritesAConfigThatLoadUses) {
  const fs::path config = scratch() / "tuned" / "config.json";
  const CliResult tune =
      run_cli({"tune", checkpoint().string(), "--quick", "--config", config.string()});
  ASSERT_EQ(tune.status, 0) << describe(tune);
  for (const char* text : {"rank", "settings", "GB/s", "% of best", "100%", "best: "}) {
    EXPECT_NE(tune.out.find(text), std::string::npos) << text << "\n" << tune.out;
  }
  EXPECT_NE(tune.out.find("wrote config: " + config.string()), std::string::npos) << tune.out;
  EXPECT_NE(tune.err.find("tune: "), std::string::npos) << "progress lines on stderr";
  const TunedSettings tuned = read_config(config);
  ASSERT_FALSE(tuned.backend.empty());
  ASSERT_TRUE(tuned.tuned_on.has_value());
  EXPECT_GT(tuned.tuned_on->gbps, 0.0);
  EXPECT_GT(tuned.tuned_on->bytes, 0U);

  const CliResult text = run_cli({"load", checkpoint().string(), "--config", config.string()});
  ASSERT_EQ(text.status, 0) << describe(text);
  EXPECT_NE(text.out.find("\nconfig: " + config.string() + "\n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("(" + tuned.backend), std::string::npos) << text.out;

  const CliResult json =
      run_cli({"load", checkpoint().string(), "--config", config.string(), "--json"});
  ASSERT_EQ(json.status, 0) << describe(json);
  const Json parsed = parse_json(json.out);
  EXPECT_EQ(json_string(parsed.root["config"]), config.string());
  EXPECT_EQ(json_string(parsed.root["backend"]), tuned.backend);
  EXPECT_EQ(bool(parsed.root["direct"]), tuned.storage.direct);
  EXPECT_EQ(std::uint64_t(parsed.root["options"]["block_size"]), tuned.storage.block_size);

  {  // WARPLOAD_CONFIG finds it too; an explicit other backend does not use it.
    const ScopedEnv env("WARPLOAD_CONFIG", config.string());
    const CliResult from_env = run_cli({"load", checkpoint().string(), "--json"});
    ASSERT_EQ(from_env.status, 0) << describe(from_env);
    EXPECT_EQ(json_string(parse_json(from_env.out).root["config"]), config.string());
    const CliResult other = run_cli({"load", checkpoint().string(), "--backend", "mmap", "--json"});
    ASSERT_EQ(other.status, 0) << describe(other);
    EXPECT_TRUE(parse_json(other.out).root["config"].is_null()) << other.out;
  }
  // Without a config, nothing is reported.
  const CliResult plain = run_cli({"load", checkpoint().string()});
  ASSERT_EQ(plain.status, 0) << describe(plain);
  EXPECT_EQ(plain.out.find("config: "), std::string::npos) << plain.out;
  EXPECT_TRUE(
      parse_json(run_cli({"load", checkpoint().string(), "--json"}).out).root["config"].is_null());
}

TEST_F(CliTest, TuneWritesTheDefaultLocationForOneBackend) {
  const TempDir xdg;
  const ScopedEnv env("XDG_CONFIG_HOME", xdg.path().string());
  const CliResult tune = run_cli({"tune", checkpoint().string(), "--quick", "--backend", "posix"});
  ASSERT_EQ(tune.status, 0) << describe(tune);
  const fs::path expected = xdg.path() / "warpload" / "config.json";
  EXPECT_NE(tune.out.find("wrote config: " + expected.string()), std::string::npos) << tune.out;
  EXPECT_EQ(tune.out.find("uring"), std::string::npos) << tune.out;
  EXPECT_EQ(read_config(expected).backend, "posix");
  const CliResult load = run_cli({"load", checkpoint().string()});
  ASSERT_EQ(load.status, 0) << describe(load);
  EXPECT_NE(load.out.find("config: " + expected.string()), std::string::npos) << load.out;
  // bench ignores it and says so.
  const CliResult bench =
      run_cli({"bench", checkpoint().string(), "--runs", "1", "--backends", "posix"});
  ASSERT_EQ(bench.status, 0) << describe(bench);
  EXPECT_NE(bench.out.find("built-in defaults"), std::string::npos) << bench.out;
}

TEST_F(CliTest, BadConfigsAndTuneArgumentsFail) {
  const fs::path missing = scratch() / "no-such-config.json";
  expect_failure(run_cli({"load", checkpoint().string(), "--config", missing.string()}), 4,
                 missing.string());
  {
    const ScopedEnv env("WARPLOAD_CONFIG", missing.string());
    expect_failure(run_cli({"load", checkpoint().string()}), 4, "WARPLOAD_CONFIG");
  }
  const fs::path bad = scratch() / "bad-config.json";
  std::ofstream(bad) << R"({"threads": "many"})";
  expect_failure(run_cli({"load", checkpoint().string(), "--config", bad.string()}), 3,
                 bad.string());
  expect_failure(run_cli({"load", checkpoint().string(), "--config", bad.string()}), 3,
                 "invalid_config");
  expect_failure(run_cli({"tune", checkpoint().string(), "--backend", "floppy"}), 2, "floppy");
  expect_failure(run_cli({"tune", checkpoint().string(), "--runs", "0"}), 2, "--runs");
  expect_failure(run_cli({"tune"}), 2, "PATH");
  expect_failure(run_cli({"tune", (scratch() / "missing").string(), "--config",
                          (scratch() / "x.json").string()}),
                 4, "missing");
}

// ---- device loads and bench --device, on the fake CUDA driver and the fake cuFile ----

// The fakes for the CLI processes this test starts (children inherit the environment).
class FakeGpu {
 public:
  FakeGpu()
      : cuda_("WARPLOAD_CUDA_LIB", WARPLOAD_FAKE_CUDA),
        cufile_("WARPLOAD_CUFILE_LIB", WARPLOAD_FAKE_CUFILE),
        cufile_cuda_("FAKE_CUFILE_CUDA_LIB", WARPLOAD_FAKE_CUDA) {}

 private:
  ScopedEnv cuda_;
  ScopedEnv cufile_;
  ScopedEnv cufile_cuda_;
};

TEST_F(CliTest, BenchOnDeviceShowsTheCopyLimitAndGds) {
  const FakeGpu gpu;
  const CliResult r = run_cli({"bench", checkpoint().string(), "--runs", "1", "--device", "cuda:0",
                               "--backends", "posix,gds"});
  ASSERT_EQ(r.status, 0) << describe(r);
  for (const char* text :
       {"backend", "% warm limit", "% H2D (warm)", "\nposix ", "\nposix --direct ", "\ngds ",
        "H2D limit: ", "device: cuda:0", "cold limit: ", "warm limit: "}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  EXPECT_NE(r.err.find("bench: H2D limit"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("note: gds"), std::string::npos) << "gds fell back\n" << r.out;
}

TEST_F(CliTest, BenchOnDeviceJsonHasRatiosToEveryLimit) {
  const FakeGpu gpu;
  const CliResult r = run_cli({"bench", checkpoint().string(), "--runs", "1", "--device", "cuda:1",
                               "--backends", "mmap,gds", "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  const Json json = parse_json(r.out);
  EXPECT_EQ(json_string(json.root["device"]), "cuda:1");
  EXPECT_GT(double(json.root["h2d_limit_gbps"]), 0.0);
  std::vector<std::string> labels;
  for (simdjson::dom::element row : simdjson::dom::array(json.root["rows"])) {
    labels.push_back(json_string(row["label"]));
    SCOPED_TRACE(labels.back());
    EXPECT_GT(double(row["warm_gbps"]), 0.0);
    EXPECT_GT(double(row["warm_fraction_of_h2d"]), 0.0);
    EXPECT_GT(double(row["warm_fraction_of_limit"]), 0.0);
  }
  EXPECT_EQ(labels, (std::vector<std::string>{"mmap", "gds"}));
}

TEST_F(CliTest, DeviceLoadThroughGdsHashesLikeTheFiles) {
  const FakeGpu gpu;
  const CliResult r =
      run_cli({"load", checkpoint().string(), "--device", "cuda:0", "--backend", "gds", "--hash"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("(gds)"), std::string::npos) << r.out;
  for (const auto& [name, where] : reference_tensors(checkpoint())) {
    const std::string bytes = testing::read_reference_tensor(where.first, where.second, name);
    const std::size_t line_start = r.out.find(name + " ");
    ASSERT_NE(line_start, std::string::npos) << name;
    const std::string line = r.out.substr(line_start, r.out.find('\n', line_start) - line_start);
    EXPECT_NE(line.find(hex64(XXH3_64bits(bytes.data(), bytes.size()))), std::string::npos) << line;
  }
}

TEST_F(CliTest, GdsWithoutCuFileFallsBackWithOneLine) {
  const FakeGpu gpu;
  const ScopedEnv missing("WARPLOAD_CUFILE_LIB", "/nonexistent/libcufile.so.0");
  const CliResult r =
      run_cli({"load", checkpoint().string(), "--device", "cuda:0", "--backend", "gds", "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("warpload: gds not used for cuda:0", 0), 0U) << r.err;
  const Json json = parse_json(r.out);
  EXPECT_EQ(json_string(json.root["backend"]), "auto");
  EXPECT_NE(json_string(json.root["gds_fallback"]).find("libcufile.so.0"), std::string::npos);
}

// A device load reports what it cost: wall time with allocation, device memory used (the drop
// in cuMemGetInfo's free memory) and host RSS growth, next to the ring budget it was given.
TEST_F(CliTest, DeviceLoadJsonReportsMemoryAndTakesAStagingBudget) {
  const FakeGpu gpu;
  const CliResult r = run_cli({"load", checkpoint().string(), "--device", "cuda:0", "--backend",
                               "posix", "--staging", "1MiB", "--json"});
  ASSERT_EQ(r.status, 0) << describe(r);
  const Json json = parse_json(r.out);
  const auto bytes = std::uint64_t(json.root["bytes"]);
  EXPECT_EQ(std::uint64_t(json.root["staging_bytes"]), std::uint64_t{1} << 20);
  const auto used = std::uint64_t(json.root["device_memory_used_bytes"]);
  EXPECT_GE(used, bytes);
  EXPECT_LE(used, bytes + bytes / 100 + (std::uint64_t{1} << 20));
  // The fake's device memory is host memory: the growth holds the tensors once, plus the ring.
  EXPECT_GE(std::uint64_t(json.root["host_rss_growth_bytes"]), bytes / 2);
  EXPECT_GE(double(json.root["wall_seconds"]), double(json.root["seconds"]));

  const CliResult text = run_cli({"load", checkpoint().string(), "--device", "cuda:0"});
  ASSERT_EQ(text.status, 0) << describe(text);
  EXPECT_NE(text.out.find("device memory used"), std::string::npos) << text.out;
  expect_failure(
      run_cli({"load", checkpoint().string(), "--device", "cuda:0", "--staging", "lots"}), 2,
      "--staging");
}

TEST_F(CliTest, GdsIsForDevicesOnly) {
  expect_failure(run_cli({"load", checkpoint().string(), "--backend", "gds"}), 2, "'gds'");
  expect_failure(run_cli({"bench", checkpoint().string(), "--backends", "gds"}), 2, "'gds'");
  expect_failure(run_cli({"bench", checkpoint().string(), "--device", "gpu0"}), 2, "--device");
}

}  // namespace
}  // namespace warpload
