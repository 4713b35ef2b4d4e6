// Compiled into every gtest binary: no developer settings file steers a test. CTest gives each
// test XDG_CONFIG_HOME=<build>/tests/no-config; WARPLOAD_CONFIG, which would win over it, is
// removed here because gtest_discover_tests can pass only one ENVIRONMENT entry (it splits a
// list into separate arguments, the second becoming a stray property name). Children the tests
// start inherit the cleaned environment.
#include <cstdlib>

namespace {

const bool kHermetic = [] {
  ::unsetenv("WARPLOAD_CONFIG");
  return true;
}();

}  // namespace
