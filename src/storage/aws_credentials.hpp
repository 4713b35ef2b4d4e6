// AWS credentials and region for signing S3 requests (SigV4, done by libcurl).
//
// The chain, first match wins:
//   1. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) from the environment;
//   2. the profile AWS_PROFILE (else "default") in the shared credentials file
//      (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials), then in the config file
//      (AWS_CONFIG_FILE, else ~/.aws/config, section "[profile NAME]" or "[default]").
// Region: AWS_REGION, else AWS_DEFAULT_REGION, else the profile's `region` in the config file,
// else us-east-1.
// Thread safety: reads the environment and files on every call; no shared state.
#pragma once

#include <string>

namespace warpload::detail {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // empty unless temporary credentials
  std::string source;         // where they came from, for messages ("environment", a file)
};

// The first credentials of the chain. Throws UnsupportedError naming every place looked in
// when there are none, or when one is half set (a key id without its secret).
[[nodiscard]] AwsCredentials aws_credentials();

// The region requests are signed for (see the top of this file).
[[nodiscard]] std::string aws_region();

}  // namespace warpload::detail
