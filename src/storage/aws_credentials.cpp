#include "storage/aws_credentials.hpp"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "warpload/error.hpp"

namespace warpload::detail {
namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::string(value) : std::string();
}

std::string trim(std::string text) {
  const auto not_space = [](unsigned char c) { return std::isspace(c) == 0; };
  while (!text.empty() && !not_space(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::size_t first = 0;
  while (first < text.size() && !not_space(static_cast<unsigned char>(text[first]))) ++first;
  return text.substr(first);
}

std::string profile_name() {
  const std::string profile = env("AWS_PROFILE");
  return profile.empty() ? "default" : profile;
}

std::filesystem::path aws_file(const char* variable, const char* name) {
  if (std::string path = env(variable); !path.empty()) return path;
  return std::filesystem::path(env("HOME")) / ".aws" / name;
}

// The key = value pairs of section `section` of an INI file; empty when the file or the
// section is missing.
std::map<std::string, std::string> ini_section(const std::filesystem::path& file,
                                               const std::string& section) {
  std::map<std::string, std::string> values;
  std::ifstream in(file);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      inside = line.back() == ']' && trim(line.substr(1, line.size() - 2)) == section;
      continue;
    }
    const auto eq = line.find('=');
    if (!inside || eq == std::string::npos) continue;
    values[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return values;
}

std::map<std::string, std::string> config_section(const std::string& profile) {
  const auto file = aws_file("AWS_CONFIG_FILE", "config");
  return ini_section(file, profile == "default" ? "default" : "profile " + profile);
}

}  // namespace

AwsCredentials aws_credentials() {
  AwsCredentials c;
  c.access_key_id = env("AWS_ACCESS_KEY_ID");
  c.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
  if (!c.access_key_id.empty() || !c.secret_access_key.empty()) {
    if (c.access_key_id.empty() || c.secret_access_key.empty()) {
      throw UnsupportedError(
          "S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    }
    c.session_token = env("AWS_SESSION_TOKEN");
    c.source = "environment (AWS_ACCESS_KEY_ID)";
    return c;
  }
  const std::string profile = profile_name();
  const auto credentials_file = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
  const auto config_file = aws_file("AWS_CONFIG_FILE", "config");
  for (const auto& [file, values] :
       {std::pair{credentials_file, ini_section(credentials_file, profile)},
        std::pair{config_file, config_section(profile)}}) {
    const auto id = values.find("aws_access_key_id");
    const auto secret = values.find("aws_secret_access_key");
    if (id == values.end() && secret == values.end()) continue;
    if (id == values.end() || secret == values.end() || id->second.empty() ||
        secret->second.empty()) {
      throw UnsupportedError("S3 credentials: profile '" + profile + "' in " + file.string() +
                             " needs both aws_access_key_id and aws_secret_access_key");
    }
    c.access_key_id = id->second;
    c.secret_access_key = secret->second;
    if (const auto token = values.find("aws_session_token"); token != values.end()) {
      c.session_token = token->second;
    }
    c.source = "profile '" + profile + "' in " + file.string();
    return c;
  }
  throw UnsupportedError(
      "S3 credentials: none found: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
      "are not set and profile '" +
      profile + "' has no keys in " + credentials_file.string() + " or " + config_file.string());
}

std::string aws_region() {
  if (std::string region = env("AWS_REGION"); !region.empty()) return region;
  if (std::string region = env("AWS_DEFAULT_REGION"); !region.empty()) return region;
  const auto values = config_section(profile_name());
  if (const auto it = values.find("region"); it != values.end() && !it->second.empty()) {
    return it->second;
  }
  return "us-east-1";
}

}  // namespace warpload::detail
