#include "storage/object_client.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>

#include "storage/aws_credentials.hpp"
#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

using Clock = std::chrono::steady_clock;

// SHA-256 of the empty body: what a GET's x-amz-content-sha256 header states.
constexpr const char* kEmptyPayloadSha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::size_t kMaxErrorBody = 8192;
constexpr long kCurlBufferSize = 512L << 10;
constexpr int kPollMs = 50;  // the longest a cancel waits
constexpr unsigned kMaxBackoffMs = 5'000;
constexpr unsigned kConnectAttempts = 4;
constexpr std::uint64_t kMaxListingPage = 64ULL << 20;
constexpr unsigned kMaxListingPages = 100'000;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    // curl_global_init is not thread safe: once per process, before any handle.
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw UnsupportedError("libcurl: curl_global_init failed");
    }
  });
}

std::string to_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())) != 0) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())) != 0) {
    text.remove_suffix(1);
  }
  return std::string(text);
}

// The unescaped text of the first <tag>...</tag> in `xml`, or "".
std::string xml_element(std::string_view xml, std::string_view tag) {
  // Built by appending: GCC 12 misreports '"x" + string' (-Wrestrict).
  std::string open = "<";
  open.append(tag).append(">");
  std::string close = "</";
  close.append(tag).append(">");
  const auto a = xml.find(open);
  const auto b = a == std::string_view::npos ? a : xml.find(close, a + open.size());
  if (b == std::string_view::npos) return {};
  return xml_unescape(xml.substr(a + open.size(), b - a - open.size()));
}

// TOTAL of a Content-Range "bytes FIRST-LAST/TOTAL" (or "bytes */TOTAL"); max() when absent.
std::uint64_t content_range_total(std::string_view range) noexcept {
  const auto slash = range.rfind('/');
  if (slash == std::string_view::npos) return std::numeric_limits<std::uint64_t>::max();
  const std::string_view tail = range.substr(slash + 1);
  if (tail.empty() || tail.size() > 19) return std::numeric_limits<std::uint64_t>::max();
  std::uint64_t total = 0;
  for (const char c : tail) {
    if (c < '0' || c > '9') return std::numeric_limits<std::uint64_t>::max();
    total = total * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return total;
}

std::string at_offset(const ObjectUrl& url, std::uint64_t offset) {
  return url.text + ": offset " + std::to_string(offset) + ": ";
}

bool is_tls_error(CURLcode code) noexcept {
  switch (code) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
      return true;
    default:
      return false;
  }
}

bool is_transient(CURLcode code) noexcept {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
      return true;
    default:
      return false;
  }
}

// One GET in progress: a piece of a range (data mode) or a whole body (body mode).
struct Transfer {
  const ObjectUrl* url = nullptr;
  std::string request_url;
  std::string etag;             // required when not empty
  std::uint64_t offset = 0;     // object offset of the piece
  std::uint64_t length = 0;     // bytes of the piece
  std::byte* dest = nullptr;    // data mode: where byte `offset` lands; null in body mode
  std::string* body = nullptr;  // body mode: the whole response, at most max_body bytes
  std::uint64_t max_body = 0;
  bool stop_when_full = false;  // a prefix fetch: a 200 carrying the whole object is fine
  ReadControl* control = nullptr;

  std::uint64_t done = 0;  // bytes landed by finished attempts
  unsigned attempts = 0;   // attempts that failed
  Clock::time_point ready_at{};
  std::string last_problem;  // why the last attempt failed, for the final message

  // The current attempt.
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::uint64_t got = 0;  // bytes landed by this attempt
  long status = 0;        // 0 until the first body byte
  bool full = false;      // a prefix fetch got what it asked for and stopped
  std::string fatal;      // the write callback refused the response: not retried
  std::string seen_etag;
  std::string content_range;
  std::string bucket_region;
  std::string error_body;
  char error_buffer[CURL_ERROR_SIZE] = {};

  [[nodiscard]] std::uint64_t start() const noexcept { return offset + done; }
  [[nodiscard]] std::uint64_t missing() const noexcept { return length - done - got; }
};

std::size_t on_header(char* buffer, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  const std::string_view line(buffer, n);
  if (line.starts_with("HTTP/")) {  // a new response (after a 100 Continue or a redirect)
    t->seen_etag.clear();
    t->content_range.clear();
    t->bucket_region.clear();
    return n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  const std::string name = to_lower(trim(line.substr(0, colon)));
  std::string value = trim(line.substr(colon + 1));
  if (name == "etag") {
    t->seen_etag = std::move(value);
  } else if (name == "content-range") {
    t->content_range = std::move(value);
  } else if (name == "x-amz-bucket-region") {
    t->bucket_region = std::move(value);
  }
  return n;
}

// Checks a successful response before its first byte is written; "" when it may be written.
std::string check_response(Transfer& t) {
  if (!t.etag.empty() && !t.seen_etag.empty() && t.seen_etag != t.etag) {
    return "the object was replaced during the load (ETag " + t.seen_etag + ", pinned " + t.etag +
           " when its header was read)";
  }
  if (t.body != nullptr) return {};
  if (t.status == 206) {
    // "bytes FIRST-LAST/TOTAL": FIRST must be what was asked for.
    const std::string expected = "bytes " + std::to_string(t.start()) + "-";
    if (!t.content_range.starts_with(expected)) {
      return "the server answered the range from " + std::to_string(t.start()) +
             " with Content-Range '" + t.content_range + "'";
    }
    return {};
  }
  if (!t.stop_when_full) {
    return "the server ignored the Range header (HTTP " + std::to_string(t.status) +
           " instead of 206)";
  }
  return {};
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (t->status == 0) {
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
    if (t->status >= 200 && t->status < 300) {
      t->fatal = check_response(*t);
      if (!t->fatal.empty()) return 0;
    }
  }
  if (t->status < 200 || t->status >= 300) {
    const std::size_t keep =
        std::min(n, kMaxErrorBody - std::min(kMaxErrorBody, t->error_body.size()));
    t->error_body.append(data, keep);
    return n;
  }
  if (t->body != nullptr) {
    if (t->body->size() + n > t->max_body) {
      t->fatal = "the response is larger than " + std::to_string(t->max_body) + " bytes";
      return 0;
    }
    t->body->append(data, n);
    return n;
  }
  const std::uint64_t room = t->missing();
  if (n > room) {
    if (!t->stop_when_full) {
      t->fatal = "the server sent more bytes than the " + std::to_string(t->length) + " asked for";
      return 0;
    }
    std::memcpy(t->dest + t->done + t->got, data, room);
    t->got += room;
    t->full = true;
    return 0;  // ends the transfer: the rest of the object is not wanted
  }
  std::memcpy(t->dest + t->done + t->got, data, n);
  t->got += n;
  if (t->control != nullptr) t->control->bytes_done.fetch_add(n, std::memory_order_relaxed);
  return n;
}

// Settings that hold for every request of one engine run.
struct RequestContext {
  HttpSettings settings;
  bool s3 = false;
  AwsCredentials credentials;
  std::string sigv4;  // "aws:amz:REGION:s3"
  std::string ca_bundle;
};

std::string ca_bundle_from_env() {
  for (const char* name : {"AWS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"}) {
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') return value;
  }
  return {};
}

RequestContext make_context(const ObjectUrl& any, const HttpSettings& settings, bool s3) {
  global_init();
  RequestContext c;
  c.settings = settings;
  c.s3 = s3;
  if (s3) {
    c.credentials = aws_credentials();
    c.sigv4 = "aws:amz:" + any.region + ":s3";
  }
  c.ca_bundle = ca_bundle_from_env();
  return c;
}

// Sets up `t` for its next attempt on `easy`.
void arm(Transfer& t, CURL* easy, const RequestContext& c) {
  t.easy = easy;
  t.got = 0;
  t.status = 0;
  t.full = false;
  t.fatal.clear();
  t.seen_etag.clear();
  t.content_range.clear();
  t.bucket_region.clear();
  t.error_body.clear();
  t.error_buffer[0] = '\0';
  if (t.body != nullptr) t.body->clear();
  curl_slist_free_all(t.headers);
  t.headers = nullptr;
  const auto add_header = [&t](const std::string& header) {
    curl_slist* grown = curl_slist_append(t.headers, header.c_str());
    if (grown == nullptr) throw OutOfMemoryError("libcurl: cannot build request headers");
    t.headers = grown;
  };
  if (t.body == nullptr) {
    add_header("Range: bytes=" + std::to_string(t.start()) + "-" +
               std::to_string(t.offset + t.length - 1));
  }
  if (!t.etag.empty()) add_header("If-Match: " + t.etag);
  if (c.s3) {
    add_header(std::string("x-amz-content-sha256: ") + kEmptyPayloadSha256);
    if (!c.credentials.session_token.empty()) {
      add_header("x-amz-security-token: " + c.credentials.session_token);
    }
  }
  curl_easy_reset(easy);
  curl_easy_setopt(easy, CURLOPT_URL, t.request_url.c_str());
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t.headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t.error_buffer);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &t);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, kCurlBufferSize);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(c.settings.stall_timeout_ms));
  // A stall: fewer than 1 byte/s for the whole stall timeout.
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME,
                   static_cast<long>(std::max(1U, c.settings.stall_timeout_ms / 1000)));
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  if (!c.ca_bundle.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, c.ca_bundle.c_str());
  if (c.s3) {
    curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, c.sigv4.c_str());
    curl_easy_setopt(easy, CURLOPT_USERNAME, c.credentials.access_key_id.c_str());
    curl_easy_setopt(easy, CURLOPT_PASSWORD, c.credentials.secret_access_key.c_str());
  } else {
    // Plain HTTP(S) may redirect (a CDN); signed S3 requests must not be re-sent elsewhere.
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  }
}

// The sentence for a response that is not a success and not retried.
std::string http_failure(const Transfer& t, const RequestContext& c) {
  std::string what = "HTTP " + std::to_string(t.status);
  const std::string code = xml_element(t.error_body, "Code");
  const std::string message = xml_element(t.error_body, "Message");
  if (!code.empty()) what += " " + code;
  if (!message.empty()) what += ": " + message;
  std::string region = t.bucket_region;
  if (region.empty()) region = xml_element(t.error_body, "Region");
  if (c.s3 && !region.empty() && region != t.url->region) {
    what += " (the bucket is in region " + region + ", requests were signed for " + t.url->region +
            ": set AWS_REGION=" + region + ")";
  } else if (c.s3 && (code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" ||
                      code == "ExpiredToken" || code == "InvalidToken")) {
    what += " (credentials from " + c.credentials.source + ")";
  } else if (t.status == 403) {
    what += c.s3 ? " (access denied for credentials from " + c.credentials.source + ")"
                 : " (forbidden)";
  }
  return what;
}

[[noreturn]] void throw_failure(const Transfer& t, const std::string& what, int error_number,
                                bool not_found) {
  const std::string message = at_offset(*t.url, t.start()) + what;
  if (not_found) throw NotFoundError(message);
  throw IoError(message, error_number, t.start());
}

// Runs every transfer to completion, `settings.connections` at a time.
class Engine {
 public:
  // `stop`, when not null, is shared by the engines of one fetch: set when one of them fails,
  // the others return with their transfers dropped.
  Engine(RequestContext context, std::deque<Transfer>& transfers, ReadControl* control,
         const std::atomic<bool>* stop = nullptr)
      : c_(std::move(context)), transfers_(transfers), control_(control), stop_(stop) {
    multi_ = curl_multi_init();
    if (multi_ == nullptr) throw OutOfMemoryError("libcurl: curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS,
                      static_cast<long>(c_.settings.connections));
    curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      static_cast<long>(c_.settings.connections));
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
  }
  ~Engine() {
    for (Transfer* t : active_) {
      curl_multi_remove_handle(multi_, t->easy);
    }
    for (Transfer& t : transfers_) {
      curl_slist_free_all(t.headers);
      t.headers = nullptr;
    }
    for (CURL* easy : idle_) curl_easy_cleanup(easy);
    for (Transfer* t : active_) curl_easy_cleanup(t->easy);
    curl_multi_cleanup(multi_);
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void run() {
    for (Transfer& t : transfers_) {
      t.control = control_;
      waiting_.push_back(&t);
    }
    std::random_device seed;
    rng_.seed(seed());
    while (!waiting_.empty() || !active_.empty()) {
      if (stop_ != nullptr && stop_->load()) return;
      if (control_ != nullptr && control_->cancel.load()) {
        throw CancelledError(transfers_.front().url->text + ": load cancelled");
      }
      start_ready();
      int running = 0;
      if (const CURLMcode m = curl_multi_perform(multi_, &running); m != CURLM_OK) {
        throw IoError(std::string("libcurl: ") + curl_multi_strerror(m), EIO, 0);
      }
      collect();
      if (active_.empty() && waiting_.empty()) break;
      int timeout = kPollMs;
      if (active_.empty()) {
        // Only retries waiting for their backoff: sleep until the first is due.
        const auto next = std::min_element(
            waiting_.begin(), waiting_.end(),
            [](const Transfer* a, const Transfer* b) { return a->ready_at < b->ready_at; });
        const auto wait =
            std::chrono::duration_cast<std::chrono::milliseconds>((*next)->ready_at - Clock::now());
        timeout = static_cast<int>(std::clamp<long long>(wait.count(), 0, kPollMs));
      }
      curl_multi_poll(multi_, nullptr, 0, timeout, nullptr);
    }
  }

 private:
  void start_ready() {
    const auto now = Clock::now();
    for (auto it = waiting_.begin();
         it != waiting_.end() && active_.size() < c_.settings.connections;) {
      Transfer* t = *it;
      if (t->ready_at > now) {
        ++it;
        continue;
      }
      CURL* easy = nullptr;
      if (!idle_.empty()) {
        easy = idle_.back();
        idle_.pop_back();
      } else {
        easy = curl_easy_init();
        if (easy == nullptr) throw OutOfMemoryError("libcurl: curl_easy_init failed");
      }
      try {
        arm(*t, easy, c_);
      } catch (...) {
        curl_easy_cleanup(easy);
        throw;
      }
      if (curl_multi_add_handle(multi_, easy) != CURLM_OK) {
        curl_easy_cleanup(easy);
        throw IoError(at_offset(*t->url, t->start()) + "libcurl cannot start the transfer", EIO,
                      t->start());
      }
      active_.push_back(t);
      it = waiting_.erase(it);
    }
  }

  void collect() {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      const CURLcode result = msg->data.result;
      Transfer* t = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, reinterpret_cast<char**>(&t));
      if (t->status == 0) curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &t->status);
      curl_multi_remove_handle(multi_, easy);
      active_.erase(std::find(active_.begin(), active_.end(), t));
      idle_.push_back(easy);
      t->easy = nullptr;
      finish(*t, result);
    }
  }

  // `max_attempts` caps the tries for failures that rarely heal (a refused connection).
  void retry(Transfer& t, std::string problem, unsigned max_attempts = ~0U) {
    t.last_problem = std::move(problem);
    ++t.attempts;
    if (t.attempts >= std::min(c_.settings.attempts, max_attempts)) {
      throw_failure(t,
                    t.last_problem + " (gave up after " + std::to_string(t.attempts) + " attempts)",
                    EIO, false);
    }
    // Exponential backoff with jitter: half the step fixed, half random.
    const unsigned shift = std::min(t.attempts - 1, 16U);
    const std::uint64_t step = std::min<std::uint64_t>(
        static_cast<std::uint64_t>(c_.settings.backoff_ms) << shift, kMaxBackoffMs);
    std::uniform_int_distribution<std::uint64_t> jitter(0, step / 2);
    t.ready_at = Clock::now() + std::chrono::milliseconds(step - step / 2 + jitter(rng_));
    waiting_.push_back(&t);
  }

  void finish(Transfer& t, CURLcode result) {
    t.done += t.got;
    t.got = 0;
    if (t.full) return;  // a prefix fetch that has its bytes
    if (!t.fatal.empty()) throw_failure(t, t.fatal, EIO, false);
    const bool success = t.status >= 200 && t.status < 300;
    if (result == CURLE_OK && success) {
      if (t.body != nullptr || t.done == t.length) return;
      if (t.stop_when_full && t.status == 200) return;  // the whole (short) object
      if (t.stop_when_full && t.done >= content_range_total(t.content_range)) return;
      retry(t, "the body ended after " + std::to_string(t.done) + " of " +
                   std::to_string(t.length) + " bytes asked for");
      return;
    }
    if (result == CURLE_OK || (result == CURLE_WRITE_ERROR && t.status != 0 && !success)) {
      if (t.stop_when_full && t.status == 416) return;  // an empty object: no byte 0
      if (t.status == 412) {
        throw_failure(t,
                      "the object was replaced during the load (If-Match on ETag " + t.etag +
                          " failed: HTTP 412)",
                      EIO, false);
      }
      if (t.status >= 500 || t.status == 408 || t.status == 429) {
        retry(t, http_failure(t, c_));
        return;
      }
      throw_failure(t, http_failure(t, c_), t.status == 403 ? EACCES : EIO, t.status == 404);
    }
    const std::string detail =
        t.error_buffer[0] != '\0' ? std::string(t.error_buffer) : curl_easy_strerror(result);
    if (is_tls_error(result)) {
      throw_failure(t,
                    "TLS failure: " + detail +
                        " (a private CA can be given with AWS_CA_BUNDLE or CURL_CA_BUNDLE)",
                    EPROTO, false);
    }
    if (is_transient(result)) {
      // Nothing listening: a server restarting heals in a second or two, a wrong port never.
      retry(t, detail, result == CURLE_COULDNT_CONNECT ? kConnectAttempts : ~0U);
      return;
    }
    throw_failure(t, detail, EIO, false);
  }

  RequestContext c_;
  std::deque<Transfer>& transfers_;
  ReadControl* control_;
  const std::atomic<bool>* stop_;
  CURLM* multi_ = nullptr;
  std::deque<Transfer*> waiting_;
  std::vector<Transfer*> active_;
  std::vector<CURL*> idle_;
  std::mt19937_64 rng_;
};

std::mutex& pins_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<std::string, PinnedObject>& pins() {
  static std::unordered_map<std::string, PinnedObject> table;
  return table;
}

}  // namespace

HttpSettings resolve_http_settings(const HttpOptions& options, unsigned threads) noexcept {
  HttpSettings s;
  s.connections = options.connections != 0 ? options.connections : kDefaultHttpConnections;
  s.request_size = options.request_size != 0 ? options.request_size : kDefaultHttpRequestSize;
  s.stall_timeout_ms =
      options.stall_timeout_ms != 0 ? options.stall_timeout_ms : kDefaultHttpStallTimeoutMs;
  s.attempts = options.attempts != 0 ? options.attempts : kDefaultHttpAttempts;
  s.backoff_ms = options.backoff_ms != 0 ? options.backoff_ms : kDefaultHttpBackoffMs;
  s.threads = threads != 0
                  ? threads
                  : std::clamp(std::thread::hardware_concurrency(), 1U, kMaxDefaultThreads);
  return s;
}

void fetch_ranges(std::span<const ObjectRange> ranges, const HttpSettings& settings,
                  ReadControl* control) {
  std::deque<Transfer> transfers;
  bool s3 = false;
  const ObjectUrl* first = nullptr;
  for (const ObjectRange& r : ranges) {
    if (r.length == 0) continue;
    if (first == nullptr) first = r.url;
    s3 = s3 || r.url->s3;
    for (std::uint64_t at = 0; at < r.length; at += settings.request_size) {
      Transfer& t = transfers.emplace_back();
      t.url = r.url;
      t.request_url = r.url->request_url;
      t.etag = r.etag;
      t.offset = r.offset + at;
      t.length = std::min(settings.request_size, r.length - at);
      t.dest = r.dest + at;
    }
  }
  if (transfers.empty()) return;
  RequestContext context = make_context(*first, settings, s3);
  const auto threads = static_cast<unsigned>(std::min<std::size_t>(
      {std::max(settings.threads, 1U), settings.connections, transfers.size()}));
  if (threads == 1) {
    Engine engine(std::move(context), transfers, control);
    engine.run();
    return;
  }
  // One engine (multi handle) per thread: one thread cannot receive and copy at the rate of
  // many connections. Pieces are dealt round-robin so every thread spans every file.
  std::vector<std::deque<Transfer>> parts(threads);
  for (std::size_t i = 0; i < transfers.size(); ++i) {
    parts[i % threads].push_back(std::move(transfers[i]));
  }
  context.settings.connections = (settings.connections + threads - 1) / threads;
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::exception_ptr first_error;
  const auto work = [&](std::deque<Transfer>& part) {
    try {
      Engine engine(context, part, control, &stop);
      engine.run();
    } catch (...) {
      const std::lock_guard lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
      stop.store(true);
    }
  };
  std::vector<std::thread> pool;
  try {
    for (unsigned k = 1; k < threads; ++k) pool.emplace_back(work, std::ref(parts[k]));
  } catch (...) {
    stop.store(true);
    for (std::thread& t : pool) t.join();
    throw;
  }
  work(parts[0]);
  for (std::thread& t : pool) t.join();
  if (first_error) std::rethrow_exception(first_error);
}

ObjectPrefix fetch_prefix(const ObjectUrl& url, std::uint64_t bytes, const HttpSettings& settings) {
  ObjectPrefix prefix;
  prefix.bytes.resize(bytes);
  std::deque<Transfer> transfers(1);
  Transfer& t = transfers.front();
  t.url = &url;
  t.request_url = url.request_url;
  t.offset = 0;
  t.length = bytes;
  t.dest = prefix.bytes.data();
  t.stop_when_full = true;
  // A range past the end of a short object is answered with the whole object (206 with a
  // shorter Content-Range, or 200): both are accepted below.
  HttpSettings one = settings;
  one.connections = 1;
  std::string etag;
  std::string content_range;
  {
    Engine engine(make_context(url, one, url.s3), transfers, nullptr);
    // The response fields are cleared per attempt; keep the last successful one's.
    engine.run();
  }
  etag = t.seen_etag;
  content_range = t.content_range;
  if (t.status == 206) {
    prefix.size = content_range_total(content_range);
    if (prefix.size == std::numeric_limits<std::uint64_t>::max()) {
      throw IoError(url.text + ": offset 0: the server's Content-Range '" + content_range +
                        "' gives no object size",
                    EIO, 0);
    }
  } else {
    // A 200: the server sent the whole object, and it was no longer than `bytes` unless the
    // transfer stopped when full; then the size is Content-Length.
    prefix.size = t.done;
    if (t.full) {
      throw IoError(url.text +
                        ": offset 0: the server ignores Range requests (HTTP 200 for a "
                        "range); warpload needs ranged reads",
                    EIO, 0);
    }
  }
  prefix.bytes.resize(std::min<std::uint64_t>(t.done, prefix.size));
  if (prefix.bytes.size() < std::min(bytes, prefix.size)) {
    throw IoError(url.text + ": offset 0: the body ended after " +
                      std::to_string(prefix.bytes.size()) + " bytes",
                  EIO, 0);
  }
  prefix.etag = etag;
  return prefix;
}

std::string fetch_body(const ObjectUrl& url, const std::string& request_url,
                       std::uint64_t max_bytes, const HttpSettings& settings) {
  std::string body;
  std::deque<Transfer> transfers(1);
  Transfer& t = transfers.front();
  t.url = &url;
  t.request_url = request_url;
  t.body = &body;
  t.max_body = max_bytes;
  HttpSettings one = settings;
  one.connections = 1;
  Engine engine(make_context(url, one, url.s3), transfers, nullptr);
  engine.run();
  return body;
}

std::vector<std::string> list_object_keys(const ObjectUrl& prefix, const HttpSettings& settings,
                                          unsigned page_size) {
  std::vector<std::string> keys;
  std::string token;
  for (unsigned page = 0; page < kMaxListingPages; ++page) {
    // Query parameters in sorted order: SigV4's canonical query string is sorted.
    std::string request = prefix.bucket_url() + "?";
    if (!token.empty()) request += "continuation-token=" + percent_encode(token, false) + "&";
    request += "list-type=2&";
    if (page_size > 0) request += "max-keys=" + std::to_string(page_size) + "&";
    request += "prefix=" + percent_encode(prefix.key, false);
    const std::string xml = fetch_body(prefix, request, kMaxListingPage, settings);
    if (xml.find("<ListBucketResult") == std::string::npos) {
      throw IoError(prefix.text + ": the ListObjectsV2 response is not a ListBucketResult", EIO, 0);
    }
    for (std::size_t at = xml.find("<Contents>"); at != std::string::npos;
         at = xml.find("<Contents>", at)) {
      const auto end = xml.find("</Contents>", at);
      if (end == std::string::npos) {
        throw IoError(prefix.text + ": the ListObjectsV2 response is cut short", EIO, 0);
      }
      std::string key = xml_element(std::string_view(xml).substr(at, end - at), "Key");
      if (key.empty()) throw IoError(prefix.text + ": a listed object has no <Key>", EIO, 0);
      keys.push_back(std::move(key));
      at = end;
    }
    if (xml_element(xml, "IsTruncated") != "true") return keys;
    std::string next = xml_element(xml, "NextContinuationToken");
    if (next.empty() || next == token) {
      throw IoError(prefix.text + ": a truncated listing without a new continuation token", EIO, 0);
    }
    token = std::move(next);
  }
  throw IoError(prefix.text + ": more than " + std::to_string(kMaxListingPages) + " listing pages",
                EIO, 0);
}

Header read_object_header(const std::filesystem::path& path) {
  const ObjectUrl url = parse_object_url(path.string());
  const HttpSettings settings = resolve_http_settings({});
  ObjectPrefix prefix = fetch_prefix(url, kSpeculativeHeaderBytes, settings);
  if (prefix.bytes.size() >= 8) {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) {
      n = (n << 8) | std::to_integer<std::uint64_t>(prefix.bytes[static_cast<std::size_t>(i)]);
    }
    // Only a length parse_header() will accept is worth fetching; others fail there.
    if (n <= kMaxHeaderLength && n <= prefix.size - 8 && 8 + n > prefix.bytes.size()) {
      const std::uint64_t have = prefix.bytes.size();
      prefix.bytes.resize(8 + n);
      const ObjectRange rest{&url, prefix.etag, have, 8 + n - have, prefix.bytes.data() + have};
      fetch_ranges({&rest, 1}, settings, nullptr);
    }
  }
  Header header = parse_header(prefix.bytes, prefix.size, url.text);
  pin_object_version(url.text, PinnedObject{prefix.size, prefix.etag});
  return header;
}

void pin_object_version(const std::string& url, PinnedObject pinned) {
  const std::lock_guard lock(pins_mutex());
  pins()[url] = std::move(pinned);
}

bool pinned_object_version(const std::string& url, PinnedObject* out) {
  const std::lock_guard lock(pins_mutex());
  const auto it = pins().find(url);
  if (it == pins().end()) return false;
  *out = it->second;
  return true;
}

std::string xml_unescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '&') {
      out += text[i];
      continue;
    }
    const auto semi = text.find(';', i);
    if (semi == std::string_view::npos || semi - i > 10) {
      out += text[i];
      continue;
    }
    const std::string_view entity = text.substr(i + 1, semi - i - 1);
    std::uint32_t code = 0;
    bool known = true;
    if (entity == "amp") {
      code = '&';
    } else if (entity == "lt") {
      code = '<';
    } else if (entity == "gt") {
      code = '>';
    } else if (entity == "quot") {
      code = '"';
    } else if (entity == "apos") {
      code = '\'';
    } else if (entity.size() > 1 && entity[0] == '#') {
      const bool hex = entity[1] == 'x' || entity[1] == 'X';
      const std::string_view digits = entity.substr(hex ? 2 : 1);
      known = !digits.empty();
      for (const char c : digits) {
        const int v = std::isdigit(static_cast<unsigned char>(c)) != 0 ? c - '0'
                      : hex && std::isxdigit(static_cast<unsigned char>(c)) != 0
                          ? std::tolower(static_cast<unsigned char>(c)) - 'a' + 10
                          : -1;
        if (v < 0 || code > 0x10FFFF) {
          known = false;
          break;
        }
        code = code * (hex ? 16 : 10) + static_cast<std::uint32_t>(v);
      }
      known = known && code <= 0x10FFFF && code != 0;
    } else {
      known = false;
    }
    if (!known) {
      out += text[i];
      continue;
    }
    // UTF-8 encoding of the code point.
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
    i = semi;
  }
  return out;
}

}  // namespace warpload::detail
