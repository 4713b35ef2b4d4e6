// The settings file (warpload/config.hpp): reading, writing, finding, and how a Loader
// applies it. Every test points XDG_CONFIG_HOME at a scratch directory and clears
// WARPLOAD_CONFIG, so a developer's own config never takes part.

#include "warpload/config.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <array>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"
#include "warpload/loader.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    save("XDG_CONFIG_HOME");
    save("WARPLOAD_CONFIG");
    ::setenv("XDG_CONFIG_HOME", (dir_ / "xdg").c_str(), 1);
    ::unsetenv("WARPLOAD_CONFIG");

    // A tiny checkpoint: two small tensors.
    for (std::size_t i = 0; i < bytes_.size(); ++i) bytes_[i] = static_cast<std::byte>(i);
    SafetensorsWriter writer;
    writer.add("a", DType::kF32, {16}, std::span<const std::byte>(bytes_.data(), 64));
    writer.add("b", DType::kU8, {64}, std::span<const std::byte>(bytes_.data() + 64, 64));
    writer.write(checkpoint());
  }
  void TearDown() override {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

  [[nodiscard]] fs::path checkpoint() const { return dir_ / "tiny.safetensors"; }
  [[nodiscard]] fs::path default_location() const {
    return dir_ / "xdg" / "warpload" / "config.json";
  }
  [[nodiscard]] const TempDir& dir() const { return dir_; }

  LoadStats load(LoadOptions options) const {
    Loader loader(std::move(options));
    loader.add(checkpoint());
    LoadStats stats = loader.load();
    EXPECT_EQ(loader.tensor("b").data[0], std::byte{64});
    return stats;
  }

 private:
  void save(const std::string& name) {
    const char* value = std::getenv(name.c_str());
    saved_.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
  }

  TempDir dir_;
  std::array<std::byte, 128> bytes_{};
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TunedSettings posix_settings() {
  TunedSettings s;
  s.backend = "posix";
  s.storage.threads = 3;
  s.storage.block_size = 256 * 1024;
  return s;
}

TEST_F(ConfigTest, WriteThenReadRoundTrips) {
  TunedSettings s;
  s.backend = "uring";
  s.storage.direct = true;
  s.storage.threads = 2;
  s.storage.block_size = 1 << 20;
  s.storage.queue_depth = 64;
  s.storage.usrbio.rings = 4;
  s.storage.usrbio.entries = 256;
  s.storage.usrbio.io_depth = -8;
  s.storage.usrbio.staging_bytes = std::uint64_t{5} << 30;
  s.storage.usrbio.iov_block_size = 8 << 20;
  s.storage.usrbio.target = UsrbioTarget::kStaging;
  s.tuned_on = TunedOn{{"/models/a \"quoted\"", "/models/b"}, 2147496640, 1.8125, "2026-11-26"};

  const fs::path path = dir() / "new" / "nested" / "config.json";  // parents created
  write_config(path, s);
  const TunedSettings r = read_config(path);
  EXPECT_EQ(r.backend, "uring");
  EXPECT_TRUE(r.storage.direct);
  EXPECT_EQ(r.storage.threads, 2U);
  EXPECT_EQ(r.storage.block_size, 1U << 20);
  EXPECT_EQ(r.storage.queue_depth, 64U);
  EXPECT_EQ(r.storage.usrbio.rings, 4U);
  EXPECT_EQ(r.storage.usrbio.entries, 256);
  EXPECT_EQ(r.storage.usrbio.io_depth, -8);
  EXPECT_EQ(r.storage.usrbio.staging_bytes, std::uint64_t{5} << 30);
  EXPECT_EQ(r.storage.usrbio.iov_block_size, 8U << 20);
  EXPECT_EQ(r.storage.usrbio.target, UsrbioTarget::kStaging);
  ASSERT_TRUE(r.tuned_on.has_value());
  EXPECT_EQ(r.tuned_on->paths, s.tuned_on->paths);
  EXPECT_EQ(r.tuned_on->bytes, 2147496640U);
  EXPECT_DOUBLE_EQ(r.tuned_on->gbps, 1.8125);
  EXPECT_EQ(r.tuned_on->date, "2026-11-26");

  // Overwriting replaces the file and leaves no temporary behind.
  write_config(path, posix_settings());
  EXPECT_EQ(read_config(path).backend, "posix");
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(path.parent_path())) ++entries;
  EXPECT_EQ(entries, 1U);
}

TEST_F(ConfigTest, UnknownKeysAreIgnoredAndMissingKeysAreDefaults) {
  const fs::path path = dir() / "c.json";
  write_text(path, R"({"backend":"posix","future":{"x":[1,2]},"usrbio":{"new":true}})");
  const TunedSettings r = read_config(path);
  EXPECT_EQ(r.backend, "posix");
  EXPECT_FALSE(r.storage.direct);
  EXPECT_EQ(r.storage.threads, 0U);
  EXPECT_FALSE(r.tuned_on.has_value());
}

TEST_F(ConfigTest, ExplicitSettingsBeatTheConfigWhichBeatsDefaults) {
  const fs::path path = dir() / "c.json";
  write_config(path, posix_settings());

  {  // backend "" takes the config's backend and settings
    LoadOptions o;
    o.config = path;
    const LoadStats stats = load(o);
    EXPECT_EQ(stats.backend, "posix");
    EXPECT_EQ(stats.config, path);
    EXPECT_EQ(stats.storage.threads, 3U);
    EXPECT_EQ(stats.storage.block_size, 256U * 1024);
  }
  {  // an explicit field wins; the others still come from the config
    LoadOptions o;
    o.config = path;
    o.storage.threads = 2;
    const LoadStats stats = load(o);
    EXPECT_EQ(stats.backend, "posix");
    EXPECT_EQ(stats.storage.threads, 2U);
    EXPECT_EQ(stats.storage.block_size, 256U * 1024);
  }
  {  // the same backend named explicitly still takes the config's settings
    LoadOptions o;
    o.config = path;
    o.backend = "posix";
    const LoadStats stats = load(o);
    EXPECT_EQ(stats.storage.threads, 3U);
    EXPECT_EQ(stats.config, path);
  }
  {  // another backend: the config does not apply
    LoadOptions o;
    o.config = path;
    o.backend = "mmap";
    const LoadStats stats = load(o);
    EXPECT_EQ(stats.backend, "mmap");
    EXPECT_EQ(stats.storage.threads, 0U);
    EXPECT_TRUE(stats.config.empty());
  }
  {  // use_config = false: built-in defaults
    LoadOptions o;
    o.config = path;
    o.use_config = false;
    const LoadStats stats = load(o);
    EXPECT_EQ(stats.backend, "auto");
    EXPECT_EQ(stats.storage.threads, 0U);
    EXPECT_TRUE(stats.config.empty());
  }
  {  // no config anywhere: auto
    const LoadStats stats = load(LoadOptions());
    EXPECT_EQ(stats.backend, "auto");
    EXPECT_TRUE(stats.config.empty());
  }
}

TEST_F(ConfigTest, ConfigDirectAppliesOnlyWhenNoBackendIsNamed) {
  TunedSettings s;
  s.backend = "posix";
  s.storage.direct = true;
  s.storage.block_size = 4096;
  const fs::path path = dir() / "c.json";
  write_config(path, s);

  LoadOptions chosen;
  chosen.config = path;
  EXPECT_TRUE(load(chosen).storage.direct);

  LoadOptions named;
  named.config = path;
  named.backend = "posix";
  const LoadStats stats = load(named);
  EXPECT_FALSE(stats.storage.direct);
  EXPECT_EQ(stats.direct_files, 0U);
  EXPECT_EQ(stats.storage.block_size, 4096U);

  // apply_config directly: explicit direct stays on whatever the config says.
  TunedSettings buffered = s;
  buffered.storage.direct = false;
  StorageOptions explicit_options;
  explicit_options.direct = true;
  EXPECT_TRUE(apply_config("", explicit_options, &buffered).storage.direct);
  EXPECT_EQ(apply_config("", {}, nullptr).backend, "auto");
  EXPECT_FALSE(apply_config("uring", {}, &s).from_config);
}

TEST_F(ConfigTest, FoundThroughEnvironmentAndDefaultLocation) {
  EXPECT_FALSE(find_config_file().has_value());  // nothing at the default location
  EXPECT_EQ(default_config_path(), default_location());
  EXPECT_EQ(config_write_path(), default_location());

  write_config(default_location(), posix_settings());
  EXPECT_EQ(find_config_file(), default_location());
  EXPECT_EQ(load(LoadOptions()).config, default_location());

  const fs::path from_env = dir() / "env.json";
  TunedSettings mmap;
  mmap.backend = "mmap";
  write_config(from_env, mmap);
  ::setenv("WARPLOAD_CONFIG", from_env.c_str(), 1);
  EXPECT_EQ(find_config_file(), from_env);
  EXPECT_EQ(config_write_path(), from_env);
  EXPECT_EQ(load(LoadOptions()).backend, "mmap");

  // An explicit path beats the environment.
  const fs::path explicit_path = dir() / "explicit.json";
  write_config(explicit_path, posix_settings());
  EXPECT_EQ(find_config_file(explicit_path), explicit_path);
  LoadOptions o;
  o.config = explicit_path;
  EXPECT_EQ(load(o).backend, "posix");
  EXPECT_EQ(config_write_path(explicit_path), explicit_path);
}

TEST_F(ConfigTest, MissingExplicitOrEnvironmentPathIsNotFound) {
  const fs::path missing = dir() / "nope.json";
  EXPECT_THROW((void)find_config_file(missing), NotFoundError);
  LoadOptions o;
  o.config = missing;
  Loader loader(o);
  loader.add(checkpoint());
  try {
    (void)loader.load();
    FAIL() << "expected NotFoundError";
  } catch (const NotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
  }
  EXPECT_FALSE(loader.loaded());

  ::setenv("WARPLOAD_CONFIG", missing.c_str(), 1);
  EXPECT_THROW((void)find_config_file(), NotFoundError);
  EXPECT_THROW((void)load(LoadOptions()), NotFoundError);
  LoadOptions ignore;
  ignore.use_config = false;
  EXPECT_EQ(load(ignore).backend, "auto");
}

TEST_F(ConfigTest, MalformedOrMistypedIsInvalidConfigNamingTheFile) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "{\"backend\": "},
      {"not an object", "[1, 2]"},
      {"backend type", R"({"backend": 3})"},
      {"direct type", R"({"direct": 1})"},
      {"threads type", R"({"threads": "two"})"},
      {"threads negative", R"({"threads": -1})"},
      {"threads fraction", R"({"threads": 1.5})"},
      {"block size type", R"({"block_size": true})"},
      {"usrbio type", R"({"usrbio": 4})"},
      {"usrbio entries type", R"({"usrbio": {"entries": "many"}})"},
      {"usrbio target name", R"({"usrbio": {"target": "dram"}})"},
      {"usrbio target type", R"({"usrbio": {"target": 1}})"},
      {"tuned_on paths", R"({"tuned_on": {"paths": [1]}})"},
      {"newer version", R"({"version": 99})"},
  };
  for (const auto& [what, text] : cases) {
    SCOPED_TRACE(what);
    const fs::path path = dir() / "bad.json";
    write_text(path, text);
    try {
      (void)read_config(path);
      ADD_FAILURE() << "expected InvalidFileError";
    } catch (const InvalidFileError& e) {
      EXPECT_EQ(e.rule(), FormatRule::kInvalidConfig);
      EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    }
    LoadOptions o;
    o.config = path;
    EXPECT_THROW((void)load(o), InvalidFileError);
  }
  EXPECT_EQ(format_rule_name(FormatRule::kInvalidConfig), "invalid_config");
}

TEST_F(ConfigTest, UnavailableConfigBackendNamesTheConfig) {
  const fs::path path = dir() / "c.json";
  write_text(path, R"({"backend": "floppy"})");
  LoadOptions o;
  o.config = path;
  try {
    (void)load(o);
    FAIL() << "expected UnsupportedError";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace warpload
