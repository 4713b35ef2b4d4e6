// Loader: resolving files, planning, loading through every backend, views and shards.
// Expected bytes come from the test's own random data, never from warpload's readers.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "support/fault_storage.hpp"
#include "support/random_checkpoint.hpp"
#include "support/temp_dir.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

using testing::spec_bytes;
using testing::TensorSpec;

// Writes a file with random contents and remembers each tensor's bytes.
struct WrittenFile {
  fs::path path;
  std::map<std::string, std::vector<std::byte>> bytes;
};

WrittenFile write_file(const fs::path& path, const std::vector<TensorSpec>& specs,
                       std::uint32_t seed, std::size_t header_alignment = 8,
                       std::map<std::string, std::string> metadata = {}) {
  WrittenFile out{path, {}};
  testing::write_random_file(path, specs, seed, out.bytes, header_alignment, std::move(metadata));
  return out;
}

void expect_loaded(const Loader& loader, const WrittenFile& file) {
  for (const auto& [name, expected] : file.bytes) {
    SCOPED_TRACE(name);
    TensorView v = loader.tensor(name);
    ASSERT_EQ(v.nbytes, expected.size());
    if (!expected.empty()) {
      EXPECT_EQ(std::memcmp(v.data, expected.data(), expected.size()), 0);
    }
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.data) % dtype_alignment(v.dtype), 0u);
    EXPECT_TRUE(v.contiguous);
  }
}

std::vector<TensorSpec> llm_like_specs() {
  return {
      {"model.embed_tokens.weight", DType::kBF16, {512, 96}},
      {"model.layers.0.self_attn.q_proj.weight", DType::kBF16, {96, 96}},
      {"model.layers.0.mlp.up_proj.weight", DType::kF8_E4M3, {256, 96}},
      {"model.layers.0.mlp.up_proj.weight_scale_inv", DType::kF32, {2, 1}},
      {"model.layers.0.input_layernorm.weight", DType::kF32, {96}},
      {"model.norm.weight", DType::kF32, {96}},
      {"step", DType::kI64, {}},
      {"empty", DType::kF16, {0, 7}},
  };
}

struct BackendCase {
  std::string backend;
  bool direct;
};

class LoaderBackendTest : public ::testing::TestWithParam<BackendCase> {};

TEST_P(LoaderBackendTest, LoadsEveryTensorByteExact) {
  TempDir dir;
  const auto& param = GetParam();
  // Header alignment 1 with names of different lengths gives data offsets of every residue
  // mod 8, so direct reads must place the data section inside an aligned superset.
  std::vector<WrittenFile> files;
  for (std::uint32_t i = 0; i < 8; ++i) {
    auto specs = llm_like_specs();
    for (auto& s : specs) s.name += std::string(i, 'x');
    files.push_back(write_file(dir / ("shard" + std::to_string(i) + ".safetensors"), specs, 100 + i,
                               i % 2 == 0 ? 8 : 1));
  }
  // "3fs" reads through the USRBIO emulator, which takes a folder holding 3fs-virt/ for a mount.
  if (param.backend == "3fs") fs::create_directory(dir / "3fs-virt");
  LoadOptions options;
  options.backend = param.backend;
  options.storage.direct = param.direct;
  options.storage.block_size = 8192;  // many operations per file
  Loader loader(options);
  loader.add(dir.path());
  ASSERT_EQ(loader.files().size(), files.size());
  LoadStats stats = loader.load();
  EXPECT_EQ(stats.bytes, loader.total_bytes());
  EXPECT_EQ(stats.files, files.size());
  for (const auto& f : files) expect_loaded(loader, f);
}

std::vector<BackendCase> backend_cases() {
  std::vector<BackendCase> out;
  // The "3fs" backend joins the matrix when the USRBIO emulator is built (it is listed only
  // when its library loads; the environment is read at each use).
  if (fs::exists(WARPLOAD_USRBIO_EMULATOR)) {
    setenv("WARPLOAD_HF3FS_LIB", WARPLOAD_USRBIO_EMULATOR, 1);
  }
  for (const auto& name : available_storage_names()) {
    out.push_back({name, false});
    if (name == "posix" || name == "uring") out.push_back({name, true});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Backends, LoaderBackendTest, ::testing::ValuesIn(backend_cases()),
                         [](const auto& test) {
                           return test.param.backend + (test.param.direct ? "_direct" : "");
                         });

TEST(Loader, MisalignedTensorsAreMovedToAlignedMemory) {
  TempDir dir;
  // U8[3] puts the F32 and F64 after it at offsets 3 and 19: not element-aligned in the file.
  auto file = write_file(dir / "odd.safetensors",
                         {{"flag", DType::kU8, {3}},
                          {"f32", DType::kF32, {4}},
                          {"f64", DType::kF64, {2}},
                          {"c64", DType::kC64, {1}}},
                         7, /*header_alignment=*/1);
  for (bool direct : {false, true}) {
    LoadOptions options;
    options.backend = "posix";
    options.storage.direct = direct;
    Loader loader(options);
    loader.add(file.path);
    loader.load();
    expect_loaded(loader, file);
  }
}

TEST(Loader, AcceptsFileListDirectoryAndIndex) {
  TempDir dir;
  auto a = write_file(dir / "model-00001-of-00002.safetensors", {{"a", DType::kF32, {4}}}, 1);
  auto b = write_file(dir / "model-00002-of-00002.safetensors", {{"b", DType::kF16, {3}}}, 2);
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"metadata": {"total_size": 22}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";

  for (const fs::path& p : {dir.path(), dir / "model.safetensors.index.json"}) {
    Loader loader;
    loader.add(p);
    EXPECT_EQ(loader.keys(), (std::vector<std::string>{"a", "b"}));
    loader.load();
    expect_loaded(loader, a);
    expect_loaded(loader, b);
  }
  Loader loader;
  std::vector<fs::path> list{b.path, a.path};
  loader.add(list);
  EXPECT_EQ(loader.keys(), (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(loader.file_of("a").path, a.path);
  EXPECT_EQ(loader.info("b").dtype, DType::kF16);
}

InvalidFileError expect_invalid(const fs::path& p) {
  Loader loader;
  try {
    loader.add(p);
  } catch (const InvalidFileError& e) {
    EXPECT_TRUE(loader.files().empty()) << "a failing add() must leave the plan unchanged";
    return e;
  }
  ADD_FAILURE() << "no InvalidFileError for " << p;
  return InvalidFileError(FormatRule::kInvalidIndex, "");
}

TEST(Loader, RejectsInconsistentIndex) {
  TempDir dir;
  write_file(dir / "one.safetensors", {{"a", DType::kF32, {4}}, {"b", DType::kF32, {1}}}, 1);
  const auto index = dir / "model.safetensors.index.json";
  struct Case {
    const char* json;
    const char* expect_in_message;
  };
  const Case cases[] = {
      {R"({"weight_map": {"a": "one.safetensors"}})", "'b'"},
      {R"({"weight_map": {"a": "one.safetensors", "b": "one.safetensors", "c": "one.safetensors"}})",
       "'c'"},
      {R"({"weight_map": {"a": "../one.safetensors"}})", "relative"},
      {R"({"weight_map": {"a": "/etc/passwd"}})", "relative"},
      {R"({"weight_map": {"a": 3}})", "not a string"},
      {R"({"weight_map": {}})", "no files"},
      {R"({"metadata": {}})", "weight_map"},
      {R"({"weight_map": {"a": "one.safetensors"}} trailing)", "JSON"},
      {R"([1, 2])", "object"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.json);
    std::ofstream(index, std::ios::trunc) << c.json;
    InvalidFileError e = expect_invalid(index);
    EXPECT_EQ(e.rule(), FormatRule::kInvalidIndex);
    EXPECT_NE(std::string(e.what()).find(index.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.expect_in_message), std::string::npos) << e.what();
  }
  std::ofstream(index, std::ios::trunc) << R"({"weight_map": {"a": "missing.safetensors"}})";
  Loader loader;
  EXPECT_THROW(loader.add(index), NotFoundError);
}

TEST(Loader, DuplicateTensorAcrossFilesIsAnError) {
  TempDir dir;
  auto a = write_file(dir / "a.safetensors", {{"w", DType::kF32, {4}}}, 1);
  auto b = write_file(dir / "b.safetensors", {{"x", DType::kF32, {1}}, {"w", DType::kF32, {2}}}, 2);
  Loader loader;
  loader.add(a.path);
  try {
    loader.add(b.path);
    FAIL() << "expected kDuplicateTensor";
  } catch (const InvalidFileError& e) {
    EXPECT_EQ(e.rule(), FormatRule::kDuplicateTensor);
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(a.path.string()), std::string::npos);
  }
  EXPECT_EQ(loader.files().size(), 1u);
  EXPECT_FALSE(loader.contains("x")) << "failed add() must not leave half a file planned";
  EXPECT_THROW(loader.add(a.path), InvalidFileError) << "the same file twice";
  // Both files in one add(): the duplicate is found within the directory too.
  EXPECT_EQ(expect_invalid(dir.path()).rule(), FormatRule::kDuplicateTensor);
}

TEST(Loader, MissingPathsAndUnknownTensors) {
  TempDir dir;
  Loader loader;
  EXPECT_THROW(loader.add(dir / "nope.safetensors"), NotFoundError);
  EXPECT_THROW(loader.add(dir.path()), NotFoundError) << "directory without shards";
  auto a = write_file(dir / "a.safetensors", {{"w", DType::kF32, {4}}}, 1);
  loader.add(a.path);
  EXPECT_THROW((void)loader.tensor("w"), UnsupportedError) << "before load()";
  EXPECT_THROW((void)loader.info("nope"), NotFoundError);
  loader.load();
  EXPECT_THROW((void)loader.tensor("nope"), NotFoundError);
  EXPECT_THROW(loader.load(), UnsupportedError) << "already loaded";
}

TEST(Loader, EmptyAndScalarTensorsAndEmptyFiles) {
  TempDir dir;
  auto f = write_file(dir / "a.safetensors",
                      {{"scalar", DType::kF64, {}}, {"empty", DType::kBF16, {3, 0}}}, 3, 8,
                      {{"format", "pt"}});
  auto none = write_file(dir / "b.safetensors", {}, 4, 8, {{"note", "no tensors"}});
  Loader loader;
  loader.add(f.path);
  loader.add(none.path);
  loader.load();
  expect_loaded(loader, f);
  TensorView s = loader.tensor("scalar");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1u);
  TensorView e = loader.tensor("empty");
  EXPECT_EQ(e.shape, (std::vector<std::int64_t>{3, 0}));
  EXPECT_EQ(e.numel(), 0u);
  auto meta = loader.metadata();
  EXPECT_EQ(meta["format"], "pt");
  EXPECT_EQ(meta["note"], "no tensors");
}

TEST(Loader, ViewsOutliveTheLoader) {
  TempDir dir;
  auto f = write_file(dir / "a.safetensors", {{"w", DType::kI32, {64, 3}}}, 5);
  TensorView view;
  {
    Loader loader;
    loader.add(f.path);
    loader.load();
    view = loader.tensor("w");
    loader.release();
    EXPECT_FALSE(loader.loaded());
  }
  EXPECT_EQ(std::memcmp(view.data, f.bytes["w"].data(), view.nbytes), 0);
  EXPECT_EQ(view.strides, (std::vector<std::int64_t>{3, 1}));
}

// Element (i, j) of a row-major [rows, cols] int32 tensor, read through a view.
std::int32_t element(const TensorView& v, std::int64_t i, std::int64_t j) {
  std::int32_t out;
  std::memcpy(&out, v.data + (i * v.strides[0] + j * v.strides[1]) * 4, 4);
  return out;
}

TEST(Loader, ShardsFollowTheCeilBlockRule) {
  TempDir dir;
  const std::int64_t rows = 10, cols = 6;
  std::vector<std::int32_t> values(rows * cols);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<std::int32_t>(i);
  SafetensorsWriter writer;
  writer.add("w", DType::kI32, {rows, cols}, std::as_bytes(std::span(values)));
  writer.write(dir / "w.safetensors");
  Loader loader;
  loader.add(dir / "w.safetensors");
  loader.load();

  // dim 0, world 4: blocks of ceil(10/4) = 3 rows: 3, 3, 3, 1.
  const std::int64_t expect_rows[] = {3, 3, 3, 1};
  for (int rank = 0; rank < 4; ++rank) {
    TensorView s = loader.shard("w", rank, 4, 0);
    ASSERT_EQ(s.shape, (std::vector<std::int64_t>{expect_rows[rank], cols}));
    EXPECT_TRUE(s.contiguous);
    EXPECT_EQ(s.nbytes, static_cast<std::uint64_t>(expect_rows[rank] * cols * 4));
    for (std::int64_t i = 0; i < s.shape[0]; ++i)
      for (std::int64_t j = 0; j < cols; ++j)
        EXPECT_EQ(element(s, i, j), (rank * 3 + i) * cols + j);
  }
  // dim 1 (and -1), world 4: ceil(6/4) = 2 columns: 2, 2, 2, 0; strided views.
  for (int dim : {1, -1}) {
    for (int rank = 0; rank < 4; ++rank) {
      TensorView s = loader.shard("w", rank, 4, dim);
      const std::int64_t width = rank < 3 ? 2 : 0;
      ASSERT_EQ(s.shape, (std::vector<std::int64_t>{rows, width}));
      EXPECT_EQ(s.strides, (std::vector<std::int64_t>{cols, 1}));
      if (width == 0) {
        EXPECT_EQ(s.nbytes, 0u);
        continue;
      }
      EXPECT_FALSE(s.contiguous);
      EXPECT_EQ(s.nbytes, static_cast<std::uint64_t>(((rows - 1) * cols + width) * 4));
      for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < width; ++j)
          EXPECT_EQ(element(s, i, j), i * cols + rank * 2 + j);
    }
  }
  // world larger than the dimension: ranks past the end get empty shards.
  EXPECT_EQ(loader.shard("w", 9, 16, 0).shape[0], 1);
  EXPECT_EQ(loader.shard("w", 10, 16, 0).shape[0], 0);
  EXPECT_EQ(loader.shard("w", 0, 1, 1).shape, (std::vector<std::int64_t>{rows, cols}));
  EXPECT_TRUE(loader.shard("w", 0, 1, 1).contiguous);

  EXPECT_THROW((void)loader.shard("w", 4, 4, 0), std::invalid_argument);
  EXPECT_THROW((void)loader.shard("w", -1, 4, 0), std::invalid_argument);
  EXPECT_THROW((void)loader.shard("w", 0, 0, 0), std::invalid_argument);
  EXPECT_THROW((void)loader.shard("w", 0, 2, 2), std::invalid_argument);
  EXPECT_THROW((void)loader.shard("w", 0, 2, -3), std::invalid_argument);
  EXPECT_THROW((void)loader.shard("nope", 0, 2, 0), NotFoundError);
}

TEST(Loader, SubByteShardsMustBeWholeBytes) {
  TempDir dir;
  std::vector<std::byte> bytes(6 * 4 / 2);  // F4 [6, 4]: 12 bytes
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i);
  SafetensorsWriter writer;
  writer.add("q", DType::kF4, {6, 4}, bytes);
  writer.add("odd", DType::kF4, {2, 3}, std::span(bytes).first(3));
  writer.write(dir / "q.safetensors");
  Loader loader;
  loader.add(dir / "q.safetensors");
  loader.load();
  TensorView s = loader.shard("q", 1, 2, 0);  // rows 3..5: bytes 6..11
  EXPECT_EQ(s.shape, (std::vector<std::int64_t>{3, 4}));
  EXPECT_EQ(s.nbytes, 6u);
  EXPECT_EQ(s.data[0], std::byte{6});
  EXPECT_THROW((void)loader.shard("q", 0, 2, 1), UnsupportedError) << "strided F4";
  EXPECT_THROW((void)loader.shard("odd", 1, 2, 0), UnsupportedError) << "starts mid-byte";
}

TEST(Loader, FailedReadHandsOutNothing) {
  TempDir dir;
  auto f = write_file(dir / "a.safetensors", {{"w", DType::kF32, {4096}}}, 9);
  Loader loader;
  loader.add(f.path);
  // A Storage cannot be injected through LoadOptions by name, so corrupt the file instead:
  // truncating it after add() must fail the load, not hand out a half-filled tensor.
  ASSERT_EQ(::truncate(f.path.c_str(), 1000), 0);
  try {
    loader.load();
    FAIL() << "expected an error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(f.path.string()), std::string::npos) << e.what();
  }
  EXPECT_FALSE(loader.loaded());
  EXPECT_THROW((void)loader.tensor("w"), UnsupportedError);
}

TEST(Loader, InjectedReadErrorFailsTheWholeLoad) {
  TempDir dir;
  auto f = write_file(dir / "a.safetensors", {{"w", DType::kF32, {1 << 16}}}, 9);
  for (const char* backend : {"posix", "uring"}) {
    SCOPED_TRACE(backend);
    auto faulty = std::make_shared<testing::FaultInjectingStorage>(
        make_storage(backend), testing::FaultPlan{testing::Fault::kIoError, 100'000});
    LoadOptions options;
    options.custom_storage = faulty;
    Loader loader(options);
    loader.add(f.path);
    try {
      loader.load();
      FAIL() << "expected an IoError";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(f.path.string()), std::string::npos) << e.what();
      EXPECT_LE(e.offset(), 100'000u);
    }
    EXPECT_GE(faulty->counters().injected.load(), 1u);
    EXPECT_FALSE(loader.loaded());
    EXPECT_THROW((void)loader.tensor("w"), UnsupportedError);
  }
}

// A sparse file whose last tensor lies past 4 GiB: offsets must not be truncated to 32 bits.
TEST(Loader, TensorsPastFourGiB) {
  TempDir dir;
  const std::uint64_t big = (std::uint64_t{1} << 32) + 4096;
  std::vector<std::byte> tail(64);
  for (std::size_t i = 0; i < tail.size(); ++i) tail[i] = static_cast<std::byte>(i * 7 + 1);
  SafetensorsWriter writer;
  writer.add("big", DType::kU8, {big}, [](std::byte*, std::size_t, std::uint64_t) {});
  writer.add("tail", DType::kF32, {16}, tail);
  const std::string header = writer.serialize_header();
  const auto path = dir / "sparse.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
  }
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, tail.data(), tail.size(), static_cast<off_t>(header.size() + big)),
            static_cast<ssize_t>(tail.size()));
  ::close(fd);

  LoadOptions options;
  options.backend = "posix";
  options.storage.direct = true;  // holes read as zeros without filling the page cache
  Loader loader(options);
  loader.add(path);
  EXPECT_EQ(loader.info("tail").begin, big);
  loader.load();
  TensorView t = loader.tensor("tail");
  EXPECT_EQ(std::memcmp(t.data, tail.data(), tail.size()), 0);
  TensorView b = loader.tensor("big");
  EXPECT_EQ(b.nbytes, big);
  EXPECT_EQ(b.data[big - 1], std::byte{0});
}

TEST(Loader, ReportsProgressUpToTheTotal) {
  TempDir dir;
  auto f = write_file(dir / "a.safetensors", {{"w", DType::kU8, {1 << 20}}}, 11);
  std::atomic<std::uint64_t> last{0};
  std::atomic<int> calls{0};
  LoadOptions options;
  options.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_LE(done, total);
    last = done;
    ++calls;
  };
  Loader loader(options);
  loader.add(f.path);
  loader.load();
  EXPECT_GE(calls.load(), 1);
  EXPECT_EQ(last.load(), loader.total_bytes());
}

}  // namespace
}  // namespace warpload
