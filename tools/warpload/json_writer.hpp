// A minimal streaming JSON writer for the CLI's --json output.
//
// Emits compact JSON into a std::string; commas are placed automatically. Strings are
// escaped per RFC 8259 and written as UTF-8 (tensor names come from validated headers, so
// they are valid UTF-8). Non-finite doubles are written as null. Misuse (a value where a key
// is due, unbalanced end_*) is a programming error and is not diagnosed.
#pragma once

#include <fmt/core.h>

#include <cmath>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace warpload::cli {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  JsonWriter& begin_object() {
    separate();
    out_.push_back('{');
    first_.push_back(true);
    return *this;
  }
  JsonWriter& end_object() {
    out_.push_back('}');
    first_.pop_back();
    return *this;
  }
  JsonWriter& begin_array() {
    separate();
    out_.push_back('[');
    first_.push_back(true);
    return *this;
  }
  JsonWriter& end_array() {
    out_.push_back(']');
    first_.pop_back();
    return *this;
  }

  JsonWriter& key(std::string_view name) {
    separate();
    write_string(name);
    out_.push_back(':');
    after_key_ = true;
    return *this;
  }

  JsonWriter& value(std::string_view text) {
    separate();
    write_string(text);
    return *this;
  }
  JsonWriter& value(const char* text) { return value(std::string_view(text)); }
  JsonWriter& value(const std::string& text) { return value(std::string_view(text)); }
  JsonWriter& value(bool flag) {
    separate();
    out_ += flag ? "true" : "false";
    return *this;
  }
  JsonWriter& value(std::uint64_t number) {
    separate();
    fmt::format_to(std::back_inserter(out_), "{}", number);
    return *this;
  }
  JsonWriter& value(std::int64_t number) {
    separate();
    fmt::format_to(std::back_inserter(out_), "{}", number);
    return *this;
  }
  JsonWriter& value(unsigned number) { return value(static_cast<std::uint64_t>(number)); }
  JsonWriter& value(int number) { return value(static_cast<std::int64_t>(number)); }
  JsonWriter& value(double number) {
    if (!std::isfinite(number)) {
      return null();
    }
    separate();
    fmt::format_to(std::back_inserter(out_), "{}", number);
    return *this;
  }
  JsonWriter& null() {
    separate();
    out_ += "null";
    return *this;
  }

  // key(name).value(v) in one call.
  template <typename T>
  JsonWriter& field(std::string_view name, const T& v) {
    key(name);
    return value(v);
  }

 private:
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (first_.empty()) {
      return;
    }
    if (!first_.back()) {
      out_.push_back(',');
    }
    first_.back() = false;
  }

  void write_string(std::string_view text) {
    out_.push_back('"');
    for (const char c : text) {
      switch (c) {
        case '"':
          out_ += "\\\"";
          break;
        case '\\':
          out_ += "\\\\";
          break;
        case '\n':
          out_ += "\\n";
          break;
        case '\r':
          out_ += "\\r";
          break;
        case '\t':
          out_ += "\\t";
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            fmt::format_to(std::back_inserter(out_), "\\u{:04x}", static_cast<unsigned>(c));
          } else {
            out_.push_back(c);
          }
      }
    }
    out_.push_back('"');
  }

  std::string& out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

}  // namespace warpload::cli
