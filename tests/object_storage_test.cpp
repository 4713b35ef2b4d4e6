// The "http" backend against real servers on 127.0.0.1: nginx (HTTP, HTTPS + HTTP/2), s3rver
// (S3: SigV4, ListObjectsV2) and our fault server, all started by the ctest fixture
// object_store_servers (tests/object_store/servers.py), which exports their addresses in
// <build>/tests/object-store/state.json. Every load is compared byte for byte with the
// independent reader over the local files the servers serve. URL parsing and the credential
// chain are tested without a server.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "storage/aws_credentials.hpp"
#include "storage/object_client.hpp"
#include "storage/object_store.hpp"
#include "storage/object_url.hpp"
#include "support/cli_process.hpp"
#include "support/reference_reader.hpp"
#include "support/sanitizers.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"
#include "support/thread_collective.hpp"
#include "warpload/config.hpp"
#include "warpload/distributed.hpp"
#include "warpload/error.hpp"
#include "warpload/loader.hpp"
#include "warpload/storage.hpp"

namespace warpload {
namespace {

namespace fs = std::filesystem;
using testing::read_reference_header;
using testing::read_reference_tensor;
using testing::TempDir;

using testing::ScopedEnv;

struct Servers {
  std::string skip;  // non-empty: why the servers are not there
  fs::path data;
  std::string http, https, ca, s3_endpoint, bucket, key_id, secret, faults;
};

const Servers& servers() {
  static const Servers s = [] {
    Servers out;
    // Where ctest's fixture writes it; WARPLOAD_OBJECT_STORE_STATE overrides (servers started
    // by hand with servers.py start DIR).
    const char* state = std::getenv("WARPLOAD_OBJECT_STORE_STATE");
    if (state == nullptr) state = WARPLOAD_OBJECT_STORE_STATE_DIR;
    const fs::path file = fs::path(state) / "state.json";
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.load(file.string()).get(root) != simdjson::SUCCESS) {
      out.skip = "!" + file.string() + " is missing or not JSON: the fixture failed";
      return out;
    }
    const auto get = [&](const char* key) {
      std::string_view v;
      return root[key].get_string().get(v) == simdjson::SUCCESS ? std::string(v) : std::string();
    };
    out.skip = get("skip");
    out.data = get("data");
    out.http = get("http");
    out.https = get("https");
    out.ca = get("ca");
    out.s3_endpoint = get("s3_endpoint");
    out.bucket = get("bucket");
    out.key_id = get("key_id");
    out.secret = get("secret");
    out.faults = get("faults");
    return out;
  }();
  return s;
}

// Skips with the fixture's reason (only WARPLOAD_OBJECT_STORE_SKIP=1 produces one); a state
// the fixture should have written and did not is a failure.
#define REQUIRE_SERVERS()                                            \
  do {                                                               \
    const std::string& why = servers().skip;                         \
    if (!why.empty() && why.front() == '!') FAIL() << why.substr(1); \
    if (!why.empty()) GTEST_SKIP() << why;                           \
  } while (0)

// S3 settings for s3rver, for one test.
class S3Env {
 public:
  S3Env()
      : endpoint_("AWS_ENDPOINT_URL", servers().s3_endpoint.c_str()),
        id_("AWS_ACCESS_KEY_ID", servers().key_id.c_str()),
        secret_("AWS_SECRET_ACCESS_KEY", servers().secret.c_str()),
        token_("AWS_SESSION_TOKEN", nullptr),
        region_("AWS_REGION", "us-east-1") {}

 private:
  ScopedEnv endpoint_, id_, secret_, token_, region_;
};

// Every tensor of the loader equals the reference reader's bytes of the local file `local`
// maps the loader's file to.
void expect_matches_local(const Loader& loader, const std::string& url_base,
                          const fs::path& local_base) {
  std::size_t tensors = 0;
  for (const PlannedFile& f : loader.files()) {
    const std::string url = f.path.string();
    ASSERT_EQ(url.rfind(url_base, 0), 0U) << url;
    const fs::path local = local_base / url.substr(url_base.size() + 1);
    const auto reference = read_reference_header(local);
    ASSERT_EQ(reference.tensors.size(), f.header.tensors.size()) << url;
    for (const auto& [name, tensor] : reference.tensors) {
      const TensorView view = loader.tensor(name);
      const std::string expected = read_reference_tensor(local, reference, name);
      ASSERT_EQ(view.nbytes, expected.size()) << name;
      ASSERT_EQ(std::memcmp(view.data, expected.data(), expected.size()), 0)
          << url << ": tensor " << name << " differs";
      ++tensors;
    }
  }
  EXPECT_GT(tensors, 0U);
}

LoadOptions http_options(unsigned connections = 0, std::uint64_t request_size = 0) {
  LoadOptions o;
  o.use_config = false;
  o.storage.http.connections = connections;
  o.storage.http.request_size = request_size;
  o.storage.http.backoff_ms = 5;  // fault tests retry quickly
  return o;
}

// The message of what `f` throws as E, or "" (and a failure) when it does not.
template <typename E, typename F>
std::string thrown(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw another type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "did not throw";
  return {};
}

// ---- without a server ----------------------------------------------------------------------

TEST(ObjectUrlTest, RecognisesUrlsAndNothingElse) {
  EXPECT_TRUE(detail::is_object_url("s3://b/k"));
  EXPECT_TRUE(detail::is_object_url("HTTPS://h/x"));
  EXPECT_TRUE(detail::is_object_url("http://h"));
  EXPECT_FALSE(detail::is_object_url("/tmp/s3://x"));
  EXPECT_FALSE(detail::is_object_url("model.safetensors"));
  EXPECT_FALSE(detail::is_object_url("s3:/b/k"));
  EXPECT_FALSE(detail::is_object_url("org/name"));
}

TEST(ObjectUrlTest, S3AddressingVirtualHostedAndPathStyle) {
  {
    const ScopedEnv endpoint("AWS_ENDPOINT_URL", nullptr);
    const ScopedEnv region("AWS_REGION", "eu-west-3");
    const auto u = detail::parse_object_url("s3://my-bucket/dir/a b+c.safetensors");
    EXPECT_TRUE(u.s3);
    EXPECT_EQ(u.bucket, "my-bucket");
    EXPECT_EQ(u.key, "dir/a b+c.safetensors");
    EXPECT_EQ(u.region, "eu-west-3");
    EXPECT_FALSE(u.path_style);
    EXPECT_EQ(u.request_url,
              "https://my-bucket.s3.eu-west-3.amazonaws.com/dir/a%20b%2Bc.safetensors");
    EXPECT_EQ(u.bucket_url(), "https://my-bucket.s3.eu-west-3.amazonaws.com/");
  }
  {
    const ScopedEnv endpoint("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/");
    const auto u = detail::parse_object_url("s3://b/k.json");
    EXPECT_TRUE(u.path_style);
    EXPECT_EQ(u.request_url, "http://127.0.0.1:9000/b/k.json");
    EXPECT_EQ(u.bucket_url(), "http://127.0.0.1:9000/b/");
  }
  {
    const ScopedEnv endpoint("AWS_ENDPOINT_URL", "ftp://x");
    EXPECT_THROW((void)detail::parse_object_url("s3://b/k"), std::invalid_argument);
  }
  EXPECT_THROW((void)detail::parse_object_url("s3:///k"), std::invalid_argument);
  EXPECT_THROW((void)detail::parse_object_url("s3://b@d/k"), std::invalid_argument);
  EXPECT_THROW((void)detail::parse_object_url("http:///x"), std::invalid_argument);
  EXPECT_THROW((void)detail::parse_object_url("http://h/a b"), std::invalid_argument);
  EXPECT_THROW((void)detail::parse_object_url("ftp://h/x"), std::invalid_argument);
  EXPECT_EQ(detail::parse_object_url("http://h:1/a%20b?x=1").request_url, "http://h:1/a%20b?x=1");
}

TEST(ObjectUrlTest, XmlUnescape) {
  EXPECT_EQ(detail::xml_unescape("a&amp;b&lt;&gt;&quot;&apos;&#65;&#x42;&#x20AC;"),
            "a&b<>\"'AB\xE2\x82\xAC");
  EXPECT_EQ(detail::xml_unescape("&bogus; &#; &#xZZ; &"), "&bogus; &#; &#xZZ; &");
}

TEST(AwsCredentialsTest, EnvironmentThenProfileFilesThenAClearError) {
  const TempDir dir;
  const fs::path credentials = dir.path() / "credentials";
  const fs::path config = dir.path() / "config";
  std::ofstream(credentials) << "[default]\naws_access_key_id = DEF\naws_secret_access_key = d\n"
                                "[work]\n aws_access_key_id=WORK \naws_secret_access_key=w\n"
                                "aws_session_token = tok\n";
  std::ofstream(config) << "[profile work]\nregion = ap-south-1\n"
                           "[profile cfgonly]\naws_access_key_id = C\naws_secret_access_key = c\n"
                           "[profile half]\naws_access_key_id = H\n";
  const ScopedEnv files("AWS_SHARED_CREDENTIALS_FILE", credentials.c_str());
  const ScopedEnv config_file("AWS_CONFIG_FILE", config.c_str());
  const ScopedEnv region("AWS_REGION", nullptr);
  const ScopedEnv default_region("AWS_DEFAULT_REGION", nullptr);
  {
    const ScopedEnv id("AWS_ACCESS_KEY_ID", "ENV");
    const ScopedEnv secret("AWS_SECRET_ACCESS_KEY", "e");
    const ScopedEnv token("AWS_SESSION_TOKEN", "t");
    const ScopedEnv profile("AWS_PROFILE", "work");
    const auto c = detail::aws_credentials();
    EXPECT_EQ(c.access_key_id, "ENV");
    EXPECT_EQ(c.session_token, "t");
  }
  const ScopedEnv id("AWS_ACCESS_KEY_ID", nullptr);
  const ScopedEnv secret("AWS_SECRET_ACCESS_KEY", nullptr);
  const ScopedEnv token("AWS_SESSION_TOKEN", nullptr);
  {
    const ScopedEnv profile("AWS_PROFILE", nullptr);
    EXPECT_EQ(detail::aws_credentials().access_key_id, "DEF");
    EXPECT_EQ(detail::aws_region(), "us-east-1");
  }
  {
    const ScopedEnv profile("AWS_PROFILE", "work");
    const auto c = detail::aws_credentials();
    EXPECT_EQ(c.access_key_id, "WORK");
    EXPECT_EQ(c.secret_access_key, "w");
    EXPECT_EQ(c.session_token, "tok");
    EXPECT_EQ(detail::aws_region(), "ap-south-1");
    const ScopedEnv env_region("AWS_REGION", "us-west-2");
    EXPECT_EQ(detail::aws_region(), "us-west-2");
  }
  {
    const ScopedEnv profile("AWS_PROFILE", "cfgonly");
    EXPECT_EQ(detail::aws_credentials().access_key_id, "C");
  }
  {
    const ScopedEnv profile("AWS_PROFILE", "half");
    const std::string m = thrown<UnsupportedError>([] { (void)detail::aws_credentials(); });
    EXPECT_NE(m.find("half"), std::string::npos) << m;
  }
  {
    const ScopedEnv profile("AWS_PROFILE", "nobody");
    const std::string m = thrown<UnsupportedError>([] { (void)detail::aws_credentials(); });
    EXPECT_NE(m.find("AWS_ACCESS_KEY_ID"), std::string::npos) << m;
    EXPECT_NE(m.find(credentials.string()), std::string::npos) << m;
  }
  {
    const ScopedEnv only_id("AWS_ACCESS_KEY_ID", "X");
    EXPECT_THROW((void)detail::aws_credentials(), UnsupportedError);
  }
}

TEST(HttpSettingsTest, TheConfigFileCarriesThemAndAnyBackendTakesThem) {
  const TempDir dir;
  const fs::path path = dir.path() / "config.json";
  std::ofstream(path) << R"({"version": 1, "backend": "uring",
                             "http": {"connections": 24, "request_size": 4194304}})";
  const TunedSettings read = read_config(path);
  EXPECT_EQ(read.storage.http.connections, 24U);
  EXPECT_EQ(read.storage.http.request_size, 4194304U);
  const fs::path copy = dir.path() / "copy.json";
  write_config(copy, read);
  EXPECT_EQ(read_config(copy).storage.http.connections, 24U);
  // Applied whatever backend a load names: they are for URLs only.
  const ResolvedSettings r = apply_config("posix", {}, &read);
  EXPECT_EQ(r.storage.http.connections, 24U);
  StorageOptions explicit_options;
  explicit_options.http.request_size = 1 << 20;
  EXPECT_EQ(apply_config("", explicit_options, &read).storage.http.request_size, 1U << 20);
  std::ofstream(path) << R"({"http": {"connections": -1}})";
  EXPECT_THROW((void)read_config(path), InvalidFileError);
}

TEST(HttpBackendTest, RegisteredForUrlsOnlyAndChosenByAuto) {
  const BackendInfo* info = find_backend("http");
  ASSERT_NE(info, nullptr);
  EXPECT_TRUE(info->reads_urls);
  EXPECT_TRUE(info->host_destinations);
  const auto names = available_storage_names();
  EXPECT_EQ(std::find(names.begin(), names.end(), "http"), names.end());

  std::vector<PlannedFile> urls(1);
  urls[0].path = "http://127.0.0.1:1/a.safetensors";
  std::vector<PlannedFile> local(1);
  local[0].path = "/tmp/a.safetensors";
  EXPECT_EQ(detail::backend_for_files("auto", urls), "http");
  EXPECT_EQ(detail::backend_for_files("http", urls), "http");
  EXPECT_EQ(detail::backend_for_files("uring", local), "uring");
  std::string m = thrown<UnsupportedError>([&] { (void)detail::backend_for_files("posix", urls); });
  EXPECT_NE(m.find("http://127.0.0.1:1/a.safetensors"), std::string::npos) << m;
  EXPECT_NE(m.find("posix"), std::string::npos) << m;
  m = thrown<UnsupportedError>([&] { (void)detail::backend_for_files("http", local); });
  EXPECT_NE(m.find("/tmp/a.safetensors"), std::string::npos) << m;
  std::vector<PlannedFile> mixed = {urls[0], local[0]};
  EXPECT_THROW((void)detail::backend_for_files("auto", mixed), UnsupportedError);
}

// ---- nginx: plain HTTP, HTTPS, HTTP/2 --------------------------------------------------------

TEST(HttpLoadTest, IndexFromNginxIsByteExactAcrossConnectionsAndRequestSizes) {
  REQUIRE_SERVERS();
  const std::string base = servers().http;
  for (const auto& [connections, request] :
       std::vector<std::pair<unsigned, std::uint64_t>>{{0, 0}, {1, 65536}, {3, 1000003}}) {
    SCOPED_TRACE(std::to_string(connections) + " connections, " + std::to_string(request));
    Loader loader(http_options(connections, request));
    loader.add(base + "/model/model.safetensors.index.json");
    ASSERT_EQ(loader.files().size(), 3U);
    LoadStats stats = loader.load();
    EXPECT_EQ(stats.backend, "http");
    EXPECT_EQ(stats.bytes, loader.total_bytes());
    expect_matches_local(loader, base, servers().data);
  }
}

TEST(HttpLoadTest, ManyRequestsPerFileReportProgressToTheTotal) {
  REQUIRE_SERVERS();
  LoadOptions o = http_options(4, 1 << 20);
  std::uint64_t seen = 0;
  std::uint64_t total_seen = 0;
  o.on_progress = [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_GE(done, seen);
    seen = done;
    total_seen = total;
  };
  Loader loader(o);
  loader.add(servers().http + "/single.safetensors");
  loader.load();
  EXPECT_EQ(seen, loader.total_bytes());
  EXPECT_EQ(total_seen, loader.total_bytes());
  expect_matches_local(loader, servers().http, servers().data);
}

TEST(HttpLoadTest, HeaderLongerThanTheSpeculativeGetIsFetchedInFull) {
  REQUIRE_SERVERS();
  Loader loader(http_options());
  loader.add(servers().http + "/bigheader.safetensors");
  ASSERT_GT(loader.files()[0].header.data_offset(), detail::kSpeculativeHeaderBytes);
  EXPECT_EQ(loader.keys().size(), 9000U);
  loader.load();
  expect_matches_local(loader, servers().http, servers().data);
}

TEST(HttpLoadTest, HttpsWithAPrivateCaOverHttp2AndTlsFailuresNamed) {
  REQUIRE_SERVERS();
  const std::string url = servers().https + "/single.safetensors";
  {
    const ScopedEnv ca("AWS_CA_BUNDLE", servers().ca.c_str());
    Loader loader(http_options(2, 4 << 20));
    loader.add(url);
    loader.load();
    expect_matches_local(loader, servers().https, servers().data);
  }
  const ScopedEnv system_ca("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt");
  const ScopedEnv curl_ca("CURL_CA_BUNDLE", nullptr);
  const std::string m = thrown<IoError>([&] {
    Loader loader(http_options());
    loader.add(url);
  });
  EXPECT_NE(m.find(url), std::string::npos) << m;
  EXPECT_NE(m.find("TLS"), std::string::npos) << m;
}

TEST(HttpLoadTest, MissingObjectsAndBadFilesAreNamedErrors) {
  REQUIRE_SERVERS();
  const std::string missing = servers().http + "/nothere.safetensors";
  std::string m = thrown<NotFoundError>([&] {
    Loader loader(http_options());
    loader.add(missing);
  });
  EXPECT_NE(m.find(missing), std::string::npos) << m;
  EXPECT_NE(m.find("404"), std::string::npos) << m;

  for (const char* name : {"/empty.safetensors", "/notes.safetensors"}) {
    const std::string url = servers().http + name;
    m = thrown<InvalidFileError>([&] {
      Loader loader(http_options());
      loader.add(url);
    });
    EXPECT_NE(m.find(url), std::string::npos) << m;
  }
  // Plain HTTP cannot list a "directory".
  m = thrown<UnsupportedError>([&] {
    Loader loader(http_options());
    loader.add(servers().http + "/model");
  });
  EXPECT_NE(m.find("list"), std::string::npos) << m;
}

TEST(HttpLoadTest, LocalOnlyBackendRefusesAUrlNamingIt) {
  REQUIRE_SERVERS();
  const std::string url = servers().http + "/single.safetensors";
  LoadOptions o = http_options();
  o.backend = "uring";
  Loader loader(o);
  loader.add(url);
  const std::string m = thrown<UnsupportedError>([&] { loader.load(); });
  EXPECT_NE(m.find(url), std::string::npos) << m;
  EXPECT_FALSE(loader.loaded());
}

// ---- faults ----------------------------------------------------------------------------------

TEST(HttpFaultTest, TransientFaultsAreRetriedAndTheBytesAreExact) {
  REQUIRE_SERVERS();
  // Each fault hits the first requests of its own path; the header GET is one of them.
  for (const char* fault : {"503x4", "drop3", "short3", "ok"}) {
    SCOPED_TRACE(fault);
    const std::string base = servers().faults + "/" + fault;
    Loader loader(http_options(3, 4 << 20));
    loader.add(base + "/single.safetensors");
    loader.load();
    expect_matches_local(loader, base, servers().data);
  }
}

TEST(HttpFaultTest, StalledTransferIsRetriedAfterTheStallTimeout) {
  REQUIRE_SERVERS();
  // The first GET of this path sends a few bytes and then nothing for 30 s.
  const std::string url = servers().faults + "/stall1/single.safetensors";
  StorageOptions o;
  o.http.stall_timeout_ms = 1000;
  o.http.backoff_ms = 5;
  o.http.request_size = 8 << 20;
  auto storage = make_storage("http", o);
  const auto start = std::chrono::steady_clock::now();
  auto file = storage->open(url);  // no plan pinned it: one small GET, the stalled one
  std::vector<std::byte> dest(file->size());
  const ReadRequest request{file.get(), 0, dest.size(), dest.data()};
  storage->read({&request, 1}, nullptr);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
  const auto reference =
      testing::read_file_range(servers().data / "single.safetensors", 0, dest.size());
  EXPECT_EQ(std::memcmp(dest.data(), reference.data(), dest.size()), 0);
}

TEST(HttpFaultTest, PersistentFailuresGiveUpNamingUrlAndOffset) {
  REQUIRE_SERVERS();
  StorageOptions o;
  o.http.attempts = 3;
  o.http.backoff_ms = 5;
  auto storage = make_storage("http", o);
  const std::string bad_url = servers().faults + "/always503/single.safetensors";
  // Opened without a plan: the open's own GET fails, at offset 0.
  std::string m = thrown<IoError>([&] { (void)storage->open(bad_url); });
  EXPECT_NE(m.find(bad_url + ": offset 0"), std::string::npos) << m;
  EXPECT_NE(m.find("503 SlowDown"), std::string::npos) << m;
  EXPECT_NE(m.find("3 attempts"), std::string::npos) << m;
  // A range from the middle: its offset is in the message.
  detail::pin_object_version(bad_url, {25178361, ""});
  auto file = storage->open(bad_url);
  std::vector<std::byte> dest(1000);
  const ReadRequest request{file.get(), 5'000'000, dest.size(), dest.data()};
  m = thrown<IoError>([&] { storage->read({&request, 1}, nullptr); });
  EXPECT_NE(m.find(bad_url + ": offset 5000000"), std::string::npos) << m;

  // A body always shorter than asked: retried for the missing bytes, then reported.
  const std::string short_url = servers().faults + "/short1000/single.safetensors";
  detail::pin_object_version(short_url, {25178361, ""});
  auto cut = storage->open(short_url);
  std::vector<std::byte> big(1 << 20);
  const ReadRequest cut_request{cut.get(), 4096, big.size(), big.data()};
  m = thrown<IoError>([&] { storage->read({&cut_request, 1}, nullptr); });
  EXPECT_NE(m.find(short_url + ": offset "), std::string::npos) << m;
  EXPECT_NE(m.find("the body ended after"), std::string::npos) << m;
  EXPECT_NE(m.find("3 attempts"), std::string::npos) << m;

  // The same range of a healthy path lands byte for byte.
  auto good = storage->open(servers().faults + "/ok/single.safetensors");
  const ReadRequest ok{good.get(), 5'000'000, dest.size(), dest.data()};
  storage->read({&ok, 1}, nullptr);
  const auto reference =
      testing::read_file_range(servers().data / "single.safetensors", 5'000'000, dest.size());
  EXPECT_EQ(std::memcmp(dest.data(), reference.data(), dest.size()), 0);
}

TEST(HttpFaultTest, ObjectReplacedMidLoadIsRefusedAndNothingIsHandedOut) {
  REQUIRE_SERVERS();
  // After 2 requests (the header and one range) the object has a new ETag.
  const std::string url = servers().faults + "/replace2-gtest/single.safetensors";
  Loader loader(http_options(1, 4 << 20));
  loader.add(url);
  const std::string m = thrown<IoError>([&] { loader.load(); });
  EXPECT_NE(m.find(url), std::string::npos) << m;
  EXPECT_NE(m.find("replaced"), std::string::npos) << m;
  EXPECT_NE(m.find("offset "), std::string::npos) << m;
  EXPECT_FALSE(loader.loaded());
  EXPECT_THROW((void)loader.tensor("big"), std::exception);
}

TEST(HttpFaultTest, ServerIgnoringRangesIsRefused) {
  REQUIRE_SERVERS();
  const std::string url = servers().faults + "/norange/single.safetensors";
  const std::string m = thrown<IoError>([&] {
    Loader loader(http_options());
    loader.add(url);
  });
  EXPECT_NE(m.find(url), std::string::npos) << m;
  EXPECT_NE(m.find("Range"), std::string::npos) << m;
}

TEST(HttpFaultTest, CancelStopsTransfersInFlight) {
  REQUIRE_SERVERS();
  // Every data GET of this path stalls for 30 s after a few bytes; the cancel must not wait.
  const std::string url = servers().faults + "/stall100/single.safetensors";
  StorageOptions o;
  o.http.connections = 2;
  o.http.request_size = 4 << 20;
  auto storage = make_storage("http", o);
  detail::pin_object_version(url, {25178361, ""});
  auto file = storage->open(url);
  std::vector<std::byte> dest(8 << 20);
  ReadControl control;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    control.cancel.store(true);
  });
  const auto start = std::chrono::steady_clock::now();
  const ReadRequest request{file.get(), 0, dest.size(), dest.data()};
  EXPECT_THROW(storage->read({&request, 1}, &control), CancelledError);
  canceller.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// ---- multi-rank ---------------------------------------------------------------------------------

TEST(HttpLoadTest, RanksReadOnlyTheirSliceAndAllGetEveryByte) {
  REQUIRE_SERVERS();
  constexpr int kWorld = 3;
  const std::string index = servers().http + "/model/model.safetensors.index.json";
  std::vector<std::uint64_t> read(kWorld);
  std::uint64_t total = 0;
  const auto errors =
      testing::run_ranks(kWorld, std::chrono::seconds(60), [&](int r, auto collective) {
        DistributedOptions d;
        d.round_bytes = 1 << 20;  // several all-gather rounds
        DistributedLoader loader(collective, http_options(2, 256 << 10), d);
        loader.add(index);
        (void)loader.load(Delivery::kAll);
        read[static_cast<std::size_t>(r)] = loader.stats().bytes_read;
        if (r == 0) total = loader.total_bytes();
        for (const PlannedFile& f : loader.files()) {
          const fs::path local = servers().data / f.path.string().substr(servers().http.size() + 1);
          const auto reference = read_reference_header(local);
          for (const auto& [name, tensor] : reference.tensors) {
            const TensorView v = loader.tensor(name);
            const std::string expected = read_reference_tensor(local, reference, name);
            ASSERT_EQ(v.nbytes, expected.size()) << name;
            ASSERT_EQ(std::memcmp(v.data, expected.data(), expected.size()), 0) << name;
          }
        }
      });
  EXPECT_EQ(testing::first_rank_error(errors), "");
  // Each byte fetched once: the ranks' slices add up to the data bytes.
  EXPECT_EQ(read[0] + read[1] + read[2], total);
  for (const std::uint64_t bytes : read) EXPECT_LT(bytes, total);
}

// ---- s3rver: SigV4, listing, credentials -------------------------------------------------------

TEST(S3LoadTest, PrefixWithAnIndexAndPrefixWithShardsAreByteExact) {
  REQUIRE_SERVERS();
  const S3Env env;
  const std::string bucket = "s3://" + servers().bucket;
  {
    Loader loader(http_options(4, 1 << 20));
    loader.add(bucket + "/model");  // holds model.safetensors.index.json
    ASSERT_EQ(loader.files().size(), 3U);
    loader.load();
    expect_matches_local(loader, bucket, servers().data);
  }
  {
    Loader loader(http_options());
    loader.add(bucket + "/shards/");
    ASSERT_EQ(loader.files().size(), 2U);  // not shards/nested/
    EXPECT_EQ(loader.files()[0].path.string(), bucket + "/shards/part-0.safetensors");
    loader.load();
    expect_matches_local(loader, bucket, servers().data);
  }
  {
    Loader loader(http_options());
    loader.add(bucket + "/model/model.safetensors.index.json");
    loader.add(bucket + "/single.safetensors");
    loader.load();
    expect_matches_local(loader, bucket, servers().data);
  }
}

TEST(S3LoadTest, ListingFollowsContinuationTokens) {
  REQUIRE_SERVERS();
  const S3Env env;
  const auto url = detail::parse_object_url("s3://" + servers().bucket + "/model/");
  const auto all = detail::list_object_keys(url, detail::resolve_http_settings({}));
  const auto paged = detail::list_object_keys(url, detail::resolve_http_settings({}), 1);
  ASSERT_EQ(all.size(), 4U);
  EXPECT_EQ(paged, all);
  EXPECT_EQ(all.front(), "model/model-00001-of-00003.safetensors");
}

TEST(S3LoadTest, UnknownKeyAndMissingCredentialsAndMissingObjectsAreNamed) {
  REQUIRE_SERVERS();
  const S3Env env;
  const std::string url = "s3://" + servers().bucket + "/single.safetensors";
  {
    const ScopedEnv id("AWS_ACCESS_KEY_ID", "NOT-A-KEY");
    const std::string m = thrown<IoError>([&] {
      Loader loader(http_options());
      loader.add(url);
    });
    EXPECT_NE(m.find(url), std::string::npos) << m;
    EXPECT_NE(m.find("InvalidAccessKeyId"), std::string::npos) << m;
  }
  {
    const TempDir dir;
    const ScopedEnv id("AWS_ACCESS_KEY_ID", nullptr);
    const ScopedEnv secret("AWS_SECRET_ACCESS_KEY", nullptr);
    const ScopedEnv files("AWS_SHARED_CREDENTIALS_FILE", (dir.path() / "none").c_str());
    const ScopedEnv config("AWS_CONFIG_FILE", (dir.path() / "none2").c_str());
    const std::string m = thrown<UnsupportedError>([&] {
      Loader loader(http_options());
      loader.add(url);
    });
    EXPECT_NE(m.find("credentials"), std::string::npos) << m;
  }
  const std::string missing = "s3://" + servers().bucket + "/nothere.safetensors";
  std::string m = thrown<NotFoundError>([&] {
    Loader loader(http_options());
    loader.add(missing);
  });
  EXPECT_NE(m.find(missing), std::string::npos) << m;
  EXPECT_NE(m.find("NoSuchKey"), std::string::npos) << m;
  m = thrown<NotFoundError>([&] {
    Loader loader(http_options());
    loader.add("s3://" + servers().bucket + "/no-such-prefix/");
  });
  EXPECT_NE(m.find("no-such-prefix"), std::string::npos) << m;
}

// A bucket in another region: S3 answers 301 PermanentRedirect naming it (here the fault server
// plays S3, the bucket "region" behind AWS_ENDPOINT_URL).
TEST(S3LoadTest, WrongRegionNamesTheBucketsRegion) {
  REQUIRE_SERVERS();
  const S3Env env;
  const ScopedEnv endpoint("AWS_ENDPOINT_URL", servers().faults.c_str());
  const std::string url = "s3://region/single.safetensors";
  const std::string m = thrown<IoError>([&] {
    Loader loader(http_options());
    loader.add(url);
  });
  EXPECT_NE(m.find(url), std::string::npos) << m;
  EXPECT_NE(m.find("301 PermanentRedirect"), std::string::npos) << m;
  EXPECT_NE(m.find("AWS_REGION=eu-west-3"), std::string::npos) << m;
}

TEST(S3LoadTest, CredentialsFromAProfileFile) {
  REQUIRE_SERVERS();
  const S3Env env;
  const TempDir dir;
  const fs::path credentials = dir.path() / "credentials";
  std::ofstream(credentials) << "[test]\naws_access_key_id = " << servers().key_id
                             << "\naws_secret_access_key = " << servers().secret << "\n";
  const ScopedEnv id("AWS_ACCESS_KEY_ID", nullptr);
  const ScopedEnv secret("AWS_SECRET_ACCESS_KEY", nullptr);
  const ScopedEnv files("AWS_SHARED_CREDENTIALS_FILE", credentials.c_str());
  const ScopedEnv profile("AWS_PROFILE", "test");
  Loader loader(http_options());
  const std::string bucket = "s3://" + servers().bucket;
  loader.add(bucket + "/single.safetensors");
  loader.load();
  expect_matches_local(loader, bucket, servers().data);
}

// ---- the CLI ----------------------------------------------------------------------------------
#ifdef WARPLOAD_CLI_PATH  // builds without the CLI (WARPLOAD_BUILD_TOOLS=OFF) skip these

using testing::CliResult;

CliResult run_cli(const std::vector<std::string>& args) {
  CliResult result = testing::run_process(WARPLOAD_CLI_PATH, args);
  if (result.status == -1) ADD_FAILURE() << "cannot run " << WARPLOAD_CLI_PATH;
  return result;
}

TEST(ObjectStoreCliTest, HashOfAUrlEqualsHashOfTheLocalFilesAndErrorsExitWithTheirKind) {
  REQUIRE_SERVERS();
  const S3Env env;
  const std::string index = "/model/model.safetensors.index.json";
  const CliResult local = run_cli({"hash", (servers().data / "model").string()});
  ASSERT_EQ(local.status, 0) << local.err;
  for (const std::string& url : {servers().http + index, "s3://" + servers().bucket + "/model/"}) {
    const CliResult remote = run_cli({"hash", url});
    ASSERT_EQ(remote.status, 0) << remote.err;
    EXPECT_EQ(remote.out, local.out) << url;
  }
  const CliResult verified = run_cli({"load", "--verify", servers().http + index});
  EXPECT_EQ(verified.status, 0) << verified.err;
  const CliResult bench =
      run_cli({"bench", servers().http + "/single.safetensors", "--runs", "1", "--json"});
  EXPECT_EQ(bench.status, 0) << bench.err;
  EXPECT_NE(bench.out.find("\"http\""), std::string::npos) << bench.out;
  const CliResult inspect = run_cli({"inspect", "s3://" + servers().bucket + "/shards"});
  EXPECT_EQ(inspect.status, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("p1.b"), std::string::npos) << inspect.out;

  const std::string missing = servers().http + "/nothere.safetensors";
  const CliResult not_found = run_cli({"load", missing});
  EXPECT_EQ(not_found.status, 4) << not_found.err;
  EXPECT_NE(not_found.err.find(missing), std::string::npos) << not_found.err;
  const CliResult local_only =
      run_cli({"load", "--backend", "posix", servers().http + "/single.safetensors"});
  EXPECT_EQ(local_only.status, 6) << local_only.err;
  const CliResult replaced =
      run_cli({"load", servers().faults + "/replace2-cli/single.safetensors"});
  EXPECT_EQ(replaced.status, 5) << replaced.err;
  EXPECT_NE(replaced.err.find("replaced"), std::string::npos) << replaced.err;
}

// tune over URLs sweeps connections and request size and replaces only the "http" section.
TEST(ObjectStoreCliTest, TuneOverAUrlWritesOnlyTheHttpSettings) {
  REQUIRE_SERVERS();
  const TempDir dir;
  const fs::path config = dir.path() / "config.json";
  std::ofstream(config) << R"({"version": 1, "backend": "posix", "threads": 2})";
  const std::string url = servers().http + "/single.safetensors";
  const CliResult r = run_cli({"tune", url, "--config", config.string(), "--quick", "--runs", "1"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("best: http"), std::string::npos) << r.out;
  const TunedSettings written = read_config(config);
  EXPECT_EQ(written.backend, "posix");
  EXPECT_EQ(written.storage.threads, 2U);
  // The winner's values; 0 where the winner kept the backend's default.
  const std::vector<unsigned> swept_connections = {0, 8, 16};
  const std::vector<std::uint64_t> swept_sizes = {0, 8U << 20, 16U << 20};
  EXPECT_NE(std::find(swept_connections.begin(), swept_connections.end(),
                      written.storage.http.connections),
            swept_connections.end());
  EXPECT_NE(std::find(swept_sizes.begin(), swept_sizes.end(), written.storage.http.request_size),
            swept_sizes.end());
  std::ifstream text(config);
  const std::string json((std::istreambuf_iterator<char>(text)), {});
  EXPECT_NE(json.find("\"http\""), std::string::npos) << json;
  ASSERT_TRUE(written.tuned_on.has_value());
  EXPECT_EQ(written.tuned_on->paths, std::vector<std::string>{url});
  // The config names posix for local files; a URL load with it still reads with http.
  const CliResult load = run_cli({"load", url, "--config", config.string()});
  EXPECT_EQ(load.status, 0) << load.err;
  EXPECT_NE(load.out.find("(http)"), std::string::npos) << load.out;
  const CliResult wrong = run_cli({"tune", url, "--backend", "posix", "--config", config.string()});
  EXPECT_EQ(wrong.status, 2) << wrong.err;
}

// A device load of URLs through the staged pipeline on the fake CUDA driver (its device memory
// is host memory): verified on the device against fresh GETs, and the host RSS growth is the
// tensors (the fake's device memory) plus the ring, within 5%, plus a fixed allowance for
// libcurl's receive buffers and the speculative header GETs (1 MiB per file).
TEST(ObjectStoreCliTest, DeviceLoadOfUrlsThroughTheFakeDriverIsVerifiedWithinTheRingBudget) {
  REQUIRE_SERVERS();
  const ScopedEnv cuda("WARPLOAD_CUDA_LIB", WARPLOAD_FAKE_CUDA);
  const CliResult r = run_cli({"load", servers().http + "/model/model.safetensors.index.json",
                               servers().http + "/single.safetensors", "--device", "cuda:0",
                               "--staging", "4MiB", "--json", "--verify"});
  ASSERT_EQ(r.status, 0) << r.err;
  simdjson::dom::parser parser;
  simdjson::dom::element json;
  ASSERT_EQ(parser.parse(r.out).get(json), simdjson::SUCCESS) << r.out;
  std::string_view backend;
  ASSERT_EQ(json["backend"].get_string().get(backend), simdjson::SUCCESS);
  EXPECT_EQ(backend, "http");
  std::uint64_t bytes = 0;
  std::uint64_t growth = 0;
  std::uint64_t staging = 0;
  ASSERT_EQ(json["bytes"].get_uint64().get(bytes), simdjson::SUCCESS);
  ASSERT_EQ(json["host_rss_growth_bytes"].get_uint64().get(growth), simdjson::SUCCESS);
  ASSERT_EQ(json["staging_bytes"].get_uint64().get(staging), simdjson::SUCCESS);
  EXPECT_EQ(staging, 4U << 20);
#ifndef WARPLOAD_TEST_SANITIZED  // shadow memory and quarantine grow the RSS under ASan
  constexpr std::uint64_t kCurlAllowance = 24ULL << 20;
  EXPECT_LE(growth, (bytes + staging) + (bytes + staging) / 20 + kCurlAllowance)
      << "bytes " << bytes;
#else
  static_cast<void>(growth);
#endif
}

#endif  // WARPLOAD_CLI_PATH

}  // namespace
}  // namespace warpload
