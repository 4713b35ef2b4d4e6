// WARPLOAD_TEST_SANITIZED: defined when the test is built with AddressSanitizer or
// ThreadSanitizer (GCC's __SANITIZE_*__ or clang's __has_feature). Timing and RSS figures mean
// little there (shadow memory, quarantine, slower syscalls), so tests relax or skip those
// checks, never the ones on bytes and errors.
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WARPLOAD_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define WARPLOAD_TEST_SANITIZED 1
#endif
#endif
