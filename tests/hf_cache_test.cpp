// Hugging Face model ids resolved from the local hub cache (core/file_set.hpp): the layout
// huggingface_hub writes (models--org--name/{refs,snapshots,blobs}, snapshot files as
// symlinks into blobs), the environment variables that choose the cache, and the errors.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>

#include "core/file_set.hpp"
#include "support/random_checkpoint.hpp"
#include "support/temp_dir.hpp"
#include "warpload/error.hpp"
#include "warpload/loader.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr const char* kCommit = "0123456789abcdef0123456789abcdef01234567";
constexpr const char* kOtherCommit = "89abcdef0123456789abcdef0123456789abcdef";

// Sets (or unsets, with nullopt) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// One snapshot of `org/name` at `commit` holding one shard (a symlink into blobs/), with
// refs/<ref> naming the commit.
void add_snapshot(const fs::path& hub, const std::string& folder, const std::string& commit,
                  const std::string& ref, const std::string& tensor) {
  const fs::path repo = hub / folder;
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "snapshots" / commit);
  fs::create_directories((repo / "refs" / ref).parent_path());
  testing::TensorBytes bytes;
  const fs::path blob = repo / "blobs" / (commit + "-shard");
  testing::write_random_file(blob, {{tensor, DType::kF32, {4}}}, 1, bytes);
  fs::create_symlink(blob, repo / "snapshots" / commit / "model.safetensors");
  std::ofstream(repo / "refs" / ref) << commit;  // no newline, as huggingface_hub writes
}

TEST(HfCache, RecognisesModelIds) {
  EXPECT_TRUE(detail::looks_like_model_id("org/name"));
  EXPECT_TRUE(detail::looks_like_model_id("Qwen/Qwen2.5-0.5B"));
  EXPECT_TRUE(detail::looks_like_model_id("org/name@main"));
  EXPECT_TRUE(detail::looks_like_model_id("org/name@refs/pr/1"));
  EXPECT_FALSE(detail::looks_like_model_id("name"));
  EXPECT_FALSE(detail::looks_like_model_id("/abs/name"));
  EXPECT_FALSE(detail::looks_like_model_id("./org/name"));
  EXPECT_FALSE(detail::looks_like_model_id("../name"));
  EXPECT_FALSE(detail::looks_like_model_id("a/b/c"));
  EXPECT_FALSE(detail::looks_like_model_id("org/name@"));
  EXPECT_FALSE(detail::looks_like_model_id("dir/model.safetensors"));
  EXPECT_FALSE(detail::looks_like_model_id("dir/model.safetensors.index.json"));
}

TEST(HfCache, CacheDirectoryFollowsHuggingfaceHubOrder) {
  ScopedEnv hub("HF_HUB_CACHE", std::nullopt);
  ScopedEnv legacy("HUGGINGFACE_HUB_CACHE", std::nullopt);
  ScopedEnv home_hf("HF_HOME", std::nullopt);
  ScopedEnv xdg("XDG_CACHE_HOME", std::nullopt);
  ScopedEnv home("HOME", "/home/u");
  EXPECT_EQ(detail::hf_hub_cache_dir(), fs::path("/home/u/.cache/huggingface/hub"));
  {
    ScopedEnv x("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(detail::hf_hub_cache_dir(), fs::path("/xdg/huggingface/hub"));
    ScopedEnv h("HF_HOME", "/hf");
    EXPECT_EQ(detail::hf_hub_cache_dir(), fs::path("/hf/hub"));
    ScopedEnv c("HF_HUB_CACHE", "/cache");
    EXPECT_EQ(detail::hf_hub_cache_dir(), fs::path("/cache"));
  }
}

TEST(HfCache, ResolvesMainBranchTagAndCommit) {
  const TempDir hub;
  ScopedEnv env("HF_HUB_CACHE", hub.path().string());
  add_snapshot(hub.path(), "models--org--tiny", kCommit, "main", "w_main");
  add_snapshot(hub.path(), "models--org--tiny", kOtherCommit, "v1.0", "w_tag");

  const auto main_files = detail::resolve_checkpoint("org/tiny");
  ASSERT_EQ(main_files.files.size(), 1u);
  EXPECT_EQ(main_files.files[0],
            hub / "models--org--tiny/snapshots" / kCommit / "model.safetensors");
  EXPECT_EQ(detail::resolve_checkpoint("org/tiny@main").files, main_files.files);
  EXPECT_EQ(detail::resolve_checkpoint("org/tiny@v1.0").files[0].parent_path().filename(),
            kOtherCommit);
  EXPECT_EQ(detail::resolve_checkpoint(std::string("org/tiny@") + kOtherCommit)
                .files[0]
                .parent_path()
                .filename(),
            kOtherCommit);

  // Through the public Loader: the snapshot's symlinked shard loads.
  Loader loader;
  loader.add(fs::path("org/tiny@v1.0"));
  EXPECT_EQ(loader.keys(), std::vector<std::string>{"w_tag"});
}

TEST(HfCache, HfHomeSelectsItsHubFolder) {
  const TempDir home;
  ScopedEnv hub("HF_HUB_CACHE", std::nullopt);
  ScopedEnv legacy("HUGGINGFACE_HUB_CACHE", std::nullopt);
  ScopedEnv env("HF_HOME", home.path().string());
  add_snapshot(home / "hub", "models--org--tiny", kCommit, "main", "w");
  EXPECT_EQ(detail::resolve_checkpoint("org/tiny").files.size(), 1u);
}

TEST(HfCache, MissingModelOrRevisionSaysWhereItLooked) {
  const TempDir hub;
  ScopedEnv env("HF_HUB_CACHE", hub.path().string());
  try {
    (void)detail::resolve_checkpoint("org/absent");
    FAIL() << "expected NotFoundError";
  } catch (const NotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find((hub / "models--org--absent").string()), std::string::npos)
        << e.what();
  }
  add_snapshot(hub.path(), "models--org--tiny", kCommit, "main", "w");
  try {
    (void)detail::resolve_checkpoint("org/tiny@nope");
    FAIL() << "expected NotFoundError";
  } catch (const NotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find("refs/nope"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)detail::resolve_checkpoint("org/tiny@../../x"), NotFoundError);
}

TEST(HfCache, ExistingPathWinsOverTheCache) {
  const TempDir hub;
  ScopedEnv env("HF_HUB_CACHE", hub.path().string());
  add_snapshot(hub.path(), "models--org--tiny", kCommit, "main", "from_cache");
  const TempDir work;
  fs::create_directories(work / "org/tiny");
  testing::TensorBytes bytes;
  testing::write_random_file(work / "org/tiny/local.safetensors", {{"local", DType::kU8, {2}}}, 2,
                             bytes);
  const fs::path old = fs::current_path();
  fs::current_path(work.path());
  const auto files = detail::resolve_checkpoint("org/tiny");
  fs::current_path(old);
  ASSERT_EQ(files.files.size(), 1u);
  EXPECT_EQ(files.files[0].filename(), "local.safetensors");
}

#ifdef WARPLOAD_CLI_PATH
// stdout and stderr of `HF_HUB_CACHE=<hub> warpload <args>`, and its exit status.
std::pair<int, std::string> run_cli_with_cache(const fs::path& hub, const std::string& args) {
  const std::string command =
      "HF_HUB_CACHE='" + hub.string() + "' '" WARPLOAD_CLI_PATH "' " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char chunk[4096];
  while (std::size_t n = fread(chunk, 1, sizeof chunk, pipe)) out.append(chunk, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(HfCache, CliTakesModelIds) {
  const TempDir hub;
  add_snapshot(hub.path(), "models--org--tiny", kCommit, "main", "cli_tensor");
  const auto [status, out] = run_cli_with_cache(hub.path(), "inspect org/tiny");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("cli_tensor"), std::string::npos) << out;
  const auto [missing_status, missing] = run_cli_with_cache(hub.path(), "inspect org/absent");
  EXPECT_NE(missing_status, 0) << missing;
  EXPECT_NE(missing.find((hub / "models--org--absent").string()), std::string::npos) << missing;
}
#endif

}  // namespace
}  // namespace warpload
