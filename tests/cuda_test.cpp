// The CUDA shim, devices and allocators, against the fake driver (tests/fake_cuda/).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "device/cuda_shim.hpp"
#include "fake_cuda/fake_cuda_api.h"
#include "warpload/device.hpp"
#include "warpload/error.hpp"
#include "warpload/warpload.hpp"

namespace warpload {
namespace {

// The shim reads $WARPLOAD_CUDA_LIB once, at first use: set it before any test runs.
const bool kDriverSelected = [] {
  setenv("WARPLOAD_CUDA_LIB", WARPLOAD_FAKE_CUDA, 1);
  unsetenv("FAKE_CUDA_DEVICES");
  unsetenv("FAKE_CUDA_FAIL_ALLOC_AFTER");
  unsetenv("FAKE_CUDA_FAIL_COPY_AFTER");
  unsetenv("FAKE_CUDA_COPY_DELAY_US");
  return true;
}();

// The fake's test-only entry points, from the library the shim loaded.
struct FakeDriver {
  fake_cuda_live_allocations_fn live_allocations;
  fake_cuda_live_device_bytes_fn live_device_bytes;
  fake_cuda_live_pinned_allocations_fn live_pinned_allocations;
  fake_cuda_live_pinned_bytes_fn live_pinned_bytes;
  fake_cuda_live_registrations_fn live_registrations;
  fake_cuda_live_streams_fn live_streams;
  fake_cuda_live_events_fn live_events;
  fake_cuda_primary_ctx_refcount_fn primary_ctx_refcount;
  fake_cuda_async_copies_fn async_copies;
  fake_cuda_pageable_async_copies_fn pageable_async_copies;
  fake_cuda_reset_fn reset;
};

template <typename Fn>
Fn symbol(void* handle, const char* name) {
  void* address = dlsym(handle, name);
  if (address == nullptr) throw std::runtime_error(std::string("fake driver lacks ") + name);
  return reinterpret_cast<Fn>(address);
}

const FakeDriver& fake() {
  static const FakeDriver driver = [] {
    static_cast<void>(detail::cuda_api());  // load it the way warpload does
    void* handle = dlopen(WARPLOAD_FAKE_CUDA, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) throw std::runtime_error(dlerror());
    return FakeDriver{
        symbol<fake_cuda_live_allocations_fn>(handle, "fake_cuda_live_allocations"),
        symbol<fake_cuda_live_device_bytes_fn>(handle, "fake_cuda_live_device_bytes"),
        symbol<fake_cuda_live_pinned_allocations_fn>(handle, "fake_cuda_live_pinned_allocations"),
        symbol<fake_cuda_live_pinned_bytes_fn>(handle, "fake_cuda_live_pinned_bytes"),
        symbol<fake_cuda_live_registrations_fn>(handle, "fake_cuda_live_registrations"),
        symbol<fake_cuda_live_streams_fn>(handle, "fake_cuda_live_streams"),
        symbol<fake_cuda_live_events_fn>(handle, "fake_cuda_live_events"),
        symbol<fake_cuda_primary_ctx_refcount_fn>(handle, "fake_cuda_primary_ctx_refcount"),
        symbol<fake_cuda_async_copies_fn>(handle, "fake_cuda_async_copies"),
        symbol<fake_cuda_pageable_async_copies_fn>(handle, "fake_cuda_pageable_async_copies"),
        symbol<fake_cuda_reset_fn>(handle, "fake_cuda_reset"),
    };
  }();
  return driver;
}

// Sets a fake-driver knob for one test and applies it; undone (and the driver reset) on exit.
class ScopedFakeEnv {
 public:
  ScopedFakeEnv(const char* name, const std::string& value) : name_(name) {
    setenv(name, value.c_str(), 1);
    fake().reset();
  }
  ~ScopedFakeEnv() {
    unsetenv(name_);
    fake().reset();
  }
  ScopedFakeEnv(const ScopedFakeEnv&) = delete;
  ScopedFakeEnv& operator=(const ScopedFakeEnv&) = delete;

 private:
  const char* name_;
};

CUcontext current_context() {
  CUcontext context = nullptr;
  detail::cuda_check(detail::cuda_api().ctx_get_current(&context), "cuCtxGetCurrent");
  return context;
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> bytes(n);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((i * 131 + seed) & 0xFF);
  return bytes;
}

std::vector<std::byte> read_back(const Buffer& buffer, std::size_t n, int device) {
  std::vector<std::byte> out(n);
  detail::copy_to_host(out.data(), buffer.data(), n, device);
  return out;
}

// Every test must leave the driver as it found it: nothing live, no context retained.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override { fake().reset(); }
  void TearDown() override {
    const FakeDriver& f = fake();
    EXPECT_EQ(f.live_allocations(), 0);
    EXPECT_EQ(f.live_device_bytes(), 0);
    EXPECT_EQ(f.live_pinned_allocations(), 0);
    EXPECT_EQ(f.live_pinned_bytes(), 0);
    EXPECT_EQ(f.live_registrations(), 0);
    EXPECT_EQ(f.live_streams(), 0);
    EXPECT_EQ(f.live_events(), 0);
    EXPECT_EQ(f.primary_ctx_refcount(0), 0);
    EXPECT_EQ(f.primary_ctx_refcount(1), 0);
    EXPECT_EQ(current_context(), nullptr);
  }
};

TEST(DeviceTest, ParsesCanonicalNames) {
  EXPECT_EQ(Device::parse("cpu").kind, Device::Kind::kCpu);
  EXPECT_FALSE(Device::parse("cpu").is_cuda());
  const Device cuda = Device::parse("cuda");
  EXPECT_TRUE(cuda.is_cuda());
  EXPECT_EQ(cuda.index, 0);
  EXPECT_EQ(Device::parse("cuda:0").index, 0);
  EXPECT_EQ(Device::parse("cuda:7").index, 7);
  EXPECT_EQ(Device::parse("cuda:123").index, 123);
  EXPECT_EQ(Device::parse("cpu").name(), "cpu");
  EXPECT_EQ(Device::parse("cuda").name(), "cuda:0");
  EXPECT_EQ(Device::parse("cuda:3").name(), "cuda:3");
}

TEST(DeviceTest, RejectsEverythingElse) {
  for (const char* bad :
       {"", "gpu", "CPU", "CUDA", "cuda:", "cuda:-1", "cuda:+1", "cuda: 1", "cuda:1 ", " cuda:1",
        "cuda:01", "cuda:1x", "cuda:0x1", "cuda0", "cuda:99999999999", "cpu:0", "cuda::1"}) {
    EXPECT_THROW(static_cast<void>(Device::parse(bad)), std::invalid_argument) << bad;
  }
  try {
    static_cast<void>(Device::parse("tpu:0"));
    FAIL() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tpu:0"), std::string::npos) << e.what();
  }
}

TEST_F(CudaTest, DriverIsAvailable) {
  EXPECT_TRUE(cuda_available());
  EXPECT_EQ(detail::cuda_device_count(), 2);
  EXPECT_EQ(detail::cuda_api().library, WARPLOAD_FAKE_CUDA);
  char name[64] = {};
  detail::cuda_check(detail::cuda_api().device_get_name(name, sizeof name, 1), "name");
  EXPECT_STREQ(name, "Fake CUDA Device 1");
}

TEST(CudaShimTest, MissingLibraryNamesThePath) {
  const std::string path = "/nonexistent/warpload/libcuda.so.1";
  try {
    static_cast<void>(detail::load_cuda_api(path));
    FAIL() << "no throw";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("WARPLOAD_CUDA_LIB"), std::string::npos) << e.what();
  }
}

TEST(CudaShimTest, MissingSymbolNamesLibraryAndSymbol) {
  // Any real library without the driver API: libm is always there.
  try {
    static_cast<void>(detail::load_cuda_api("libm.so.6"));
    FAIL() << "no throw";
  } catch (const UnsupportedError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("libm.so.6"), std::string::npos) << message;
    EXPECT_NE(message.find("'cuInit'"), std::string::npos) << message;
  }
}

TEST(CudaShimTest, CheckMapsResultsToErrors) {
  EXPECT_NO_THROW(detail::cuda_check(WARPLOAD_CUDA_SUCCESS, "ok"));
  try {
    detail::cuda_check(WARPLOAD_CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc of 5 bytes");
    FAIL() << "no throw";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(std::string(e.what()), "cuMemAlloc of 5 bytes: out of memory (CUDA error 2)");
  }
  try {
    detail::cuda_check(WARPLOAD_CUDA_ERROR_INVALID_VALUE, "cuThing");
    FAIL() << "no throw";
  } catch (const UnsupportedError& e) {
    EXPECT_EQ(std::string(e.what()), "cuThing: invalid argument (CUDA error 1)");
  }
  try {
    detail::cuda_check(9999, "cuThing");
    FAIL() << "no throw";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("9999"), std::string::npos) << e.what();
  }
}

TEST_F(CudaTest, ContextScopeRestoresThePreviousContext) {
  ASSERT_EQ(current_context(), nullptr);
  {
    const detail::CudaContextScope outer(1);
    const CUcontext one = current_context();
    EXPECT_NE(one, nullptr);
    EXPECT_EQ(fake().primary_ctx_refcount(1), 1);
    EXPECT_EQ(fake().primary_ctx_refcount(0), 0);  // never touched
    {
      const detail::CudaContextScope inner(0);
      EXPECT_NE(current_context(), one);
      EXPECT_EQ(fake().primary_ctx_refcount(0), 1);
    }
    EXPECT_EQ(current_context(), one);
    EXPECT_EQ(fake().primary_ctx_refcount(0), 0);
  }
  EXPECT_THROW(detail::CudaContextScope(2), UnsupportedError);
  EXPECT_THROW(detail::CudaContextScope(-1), UnsupportedError);
}

TEST_F(CudaTest, DeviceAllocatorHonoursAlignment) {
  const auto allocator = make_cuda_allocator(Device::parse("cuda:1"));
  EXPECT_EQ(allocator->kind(), MemoryKind::kDevice);
  EXPECT_EQ(fake().primary_ctx_refcount(0), 0);  // only cuda:1 is touched
  std::vector<std::shared_ptr<Buffer>> buffers;
  for (const std::size_t alignment : {std::size_t{1}, std::size_t{64}, std::size_t{256},
                                      std::size_t{4096}, std::size_t{1} << 16}) {
    for (const std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{1000}}) {
      auto buffer = allocator->allocate(size, alignment);
      ASSERT_NE(buffer, nullptr);
      EXPECT_EQ(buffer->kind(), MemoryKind::kDevice);
      EXPECT_EQ(buffer->size(), size);
      const auto address = reinterpret_cast<std::uintptr_t>(buffer->data());
      EXPECT_EQ(address % 256, 0U) << "alignment " << alignment;
      EXPECT_EQ(address % alignment, 0U) << "alignment " << alignment;
      buffers.push_back(std::move(buffer));
    }
  }
  EXPECT_EQ(fake().live_allocations(), static_cast<long long>(buffers.size()));
  EXPECT_THROW(static_cast<void>(allocator->allocate(16, 3)), std::invalid_argument);
}

TEST_F(CudaTest, BuffersOutliveTheirAllocator) {
  std::shared_ptr<Buffer> buffer;
  {
    const auto allocator = make_cuda_allocator(Device::parse("cuda:0"));
    buffer = allocator->allocate(4096, 256);
  }
  EXPECT_EQ(fake().primary_ctx_refcount(0), 1);  // the buffer keeps the context
  const detail::CudaStream stream(0);
  const auto bytes = pattern(4096, 7);
  detail::copy_to_device_async(buffer->data(), bytes.data(), bytes.size(), stream);
  stream.synchronize();
  EXPECT_EQ(read_back(*buffer, bytes.size(), 0), bytes);
  buffer.reset();
}

TEST_F(CudaTest, OutOfRangeDeviceNamesDeviceAndCount) {
  for (const auto& make : {make_cuda_allocator, make_pinned_allocator}) {
    try {
      static_cast<void>(make(Device::parse("cuda:5")));
      FAIL() << "no throw";
    } catch (const UnsupportedError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("cuda:5"), std::string::npos) << message;
      EXPECT_NE(message.find("2 devices"), std::string::npos) << message;
    }
    EXPECT_THROW(static_cast<void>(make(Device::parse("cpu"))), UnsupportedError);
  }
}

TEST_F(CudaTest, InjectedAllocationFailureIsOutOfMemory) {
  const ScopedFakeEnv fail("FAKE_CUDA_FAIL_ALLOC_AFTER", "2");
  const auto allocator = make_cuda_allocator(Device::parse("cuda:0"));
  auto first = allocator->allocate(100, 256);
  auto second = allocator->allocate(100, 256);
  try {
    static_cast<void>(allocator->allocate(100, 256));
    FAIL() << "no throw";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
    EXPECT_NE(message.find("out of memory"), std::string::npos) << message;
  }
  EXPECT_EQ(fake().live_allocations(), 2);
}

TEST_F(CudaTest, PinnedAllocatorIsPageAlignedHostMemory) {
  const auto allocator = make_pinned_allocator(Device::parse("cuda:1"));
  EXPECT_EQ(allocator->kind(), MemoryKind::kPinnedHost);
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  auto buffer = allocator->allocate(10000, 64);
  EXPECT_EQ(buffer->kind(), MemoryKind::kPinnedHost);
  EXPECT_EQ(buffer->size(), 10000U);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer->data()) % page, 0U);
  std::memset(buffer->data(), 0x5A, buffer->size());  // host-writable
  auto big = allocator->allocate(100, std::size_t{1} << 20);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(big->data()) % (std::size_t{1} << 20), 0U);
  EXPECT_EQ(fake().live_pinned_allocations(), 2);
  EXPECT_GE(fake().live_pinned_bytes(), 10100);
  buffer.reset();
  big.reset();
  EXPECT_EQ(fake().live_pinned_allocations(), 0);
}

TEST_F(CudaTest, AsyncCopyThenEventSynchronize) {
  const ScopedFakeEnv delay("FAKE_CUDA_COPY_DELAY_US", "2000");
  const auto device = make_cuda_allocator(Device::parse("cuda:0"));
  const auto pinned = make_pinned_allocator(Device::parse("cuda:0"));
  constexpr std::size_t kChunk = 1 << 16;
  constexpr int kChunks = 8;
  auto destination = device->allocate(kChunk * kChunks, 4096);
  auto staging = pinned->allocate(kChunk * kChunks, 4096);
  const auto expected = pattern(kChunk * kChunks, 3);
  std::memcpy(staging->data(), expected.data(), expected.size());

  const detail::CudaStream stream(0);
  detail::CudaEvent done(0);
  EXPECT_TRUE(done.query());  // nothing recorded yet
  for (int i = 0; i < kChunks; ++i) {
    detail::copy_to_device_async(destination->data() + i * kChunk, staging->data() + i * kChunk,
                                 kChunk, stream);
  }
  done.record(stream);
  // Whether query() is still false here is timing-dependent; only completion is asserted.
  static_cast<void>(done.query());
  done.synchronize();
  EXPECT_TRUE(done.query());
  EXPECT_EQ(read_back(*destination, expected.size(), 0), expected);
  EXPECT_EQ(fake().pageable_async_copies(), 0);  // all from pinned memory
  EXPECT_EQ(fake().async_copies(), kChunks);
}

TEST_F(CudaTest, CopiesReadTheSourceWhenTheyRunNotWhenQueued) {
  // The fake's core promise to pipeline tests: reusing a staging buffer before the copy has
  // run lands the new bytes on the device. A 300 ms delay makes the overwrite win.
  const ScopedFakeEnv delay("FAKE_CUDA_COPY_DELAY_US", "300000");
  const auto device = make_cuda_allocator(Device::parse("cuda:0"));
  auto destination = device->allocate(4096, 256);
  std::vector<std::byte> source(4096, std::byte{1});
  const detail::CudaStream stream(0);
  detail::copy_to_device_async(destination->data(), source.data(), source.size(), stream);
  std::fill(source.begin(), source.end(), std::byte{2});  // a missing synchronisation
  stream.synchronize();
  EXPECT_EQ(read_back(*destination, 4096, 0), std::vector<std::byte>(4096, std::byte{2}));
  EXPECT_EQ(fake().pageable_async_copies(), 1);
}

TEST_F(CudaTest, StreamRunsCopiesInOrder) {
  const auto device = make_cuda_allocator(Device::parse("cuda:1"));
  auto destination = device->allocate(256, 256);
  std::vector<std::vector<std::byte>> sources;
  for (int i = 0; i < 20; ++i) sources.emplace_back(256, static_cast<std::byte>(i));
  const detail::CudaStream stream(1);
  for (const auto& source : sources) {
    detail::copy_to_device_async(destination->data(), source.data(), source.size(), stream);
  }
  stream.synchronize();
  EXPECT_EQ(read_back(*destination, 256, 1), sources.back());
}

TEST_F(CudaTest, StreamsOnManyThreads) {
  const auto device = make_cuda_allocator(Device::parse("cuda:0"));
  constexpr std::size_t kSlice = 8192;
  constexpr int kThreads = 4;
  auto destination = device->allocate(kSlice * kThreads, 256);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const auto bytes = pattern(kSlice, static_cast<unsigned>(t));
      const detail::CudaStream stream(0);
      detail::CudaEvent event(0);
      for (std::size_t off = 0; off < kSlice; off += 1024) {
        detail::copy_to_device_async(destination->data() + t * kSlice + off, bytes.data() + off,
                                     1024, stream);
      }
      event.record(stream);
      while (!event.query()) std::this_thread::yield();
    });
  }
  for (auto& thread : threads) thread.join();
  const auto all = read_back(*destination, kSlice * kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    const auto expected = pattern(kSlice, static_cast<unsigned>(t));
    EXPECT_EQ(0, std::memcmp(all.data() + t * kSlice, expected.data(), kSlice)) << t;
  }
}

TEST_F(CudaTest, InjectedCopyFailureIsReportedAtSynchronizeAndSticks) {
  const ScopedFakeEnv fail("FAKE_CUDA_FAIL_COPY_AFTER", "1");
  {
    const auto device = make_cuda_allocator(Device::parse("cuda:0"));
    auto destination = device->allocate(1024, 256);
    const std::vector<std::byte> source(1024, std::byte{9});
    const detail::CudaStream stream(0);
    detail::CudaEvent event(0);
    detail::copy_to_device_async(destination->data(), source.data(), 512, stream);
    stream.synchronize();  // the first copy is fine
    detail::copy_to_device_async(destination->data() + 512, source.data(), 512, stream);  // fails
    event.record(stream);
    try {
      event.synchronize();
      FAIL() << "no throw";
    } catch (const UnsupportedError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("illegal memory access"), std::string::npos) << message;
      EXPECT_NE(message.find("cuda:0"), std::string::npos) << message;
    }
    EXPECT_THROW(stream.synchronize(), UnsupportedError);  // sticky
    EXPECT_THROW(static_cast<void>(event.query()), UnsupportedError);
    EXPECT_THROW(detail::copy_to_device_async(destination->data(), source.data(), 8, stream),
                 UnsupportedError);
  }
  // The other device's context is unaffected.
  const detail::CudaStream other(1);
  EXPECT_NO_THROW(other.synchronize());
}

TEST_F(CudaTest, BadDevicePointerIsRejected) {
  const detail::CudaStream stream(0);
  const std::vector<std::byte> source(64);
  std::byte* bogus = detail::from_device_ptr(0x1000);
  EXPECT_THROW(detail::copy_to_device_async(bogus, source.data(), source.size(), stream),
               UnsupportedError);
  const auto device = make_cuda_allocator(Device::parse("cuda:0"));
  auto buffer = device->allocate(64, 256);
  // Past the end of the allocation.
  EXPECT_THROW(detail::copy_to_device_async(buffer->data() + 32, source.data(), 64, stream),
               UnsupportedError);
  std::vector<std::byte> out(128);
  EXPECT_THROW(detail::copy_to_host(out.data(), buffer->data(), 128, 0), UnsupportedError);
}

TEST_F(CudaTest, HostRegistrationCountsAsPinned) {
  std::vector<std::byte> host(1 << 16, std::byte{4});
  const auto device = make_cuda_allocator(Device::parse("cuda:1"));
  auto destination = device->allocate(host.size(), 256);
  {
    const detail::CudaHostRegistration registration(1, host.data(), host.size());
    EXPECT_EQ(fake().live_registrations(), 1);
    EXPECT_THROW(detail::CudaHostRegistration(1, host.data() + 16, 16), UnsupportedError);
    const detail::CudaStream stream(1);
    detail::copy_to_device_async(destination->data(), host.data(), host.size(), stream);
    stream.synchronize();
    EXPECT_EQ(fake().pageable_async_copies(), 0);
  }
  EXPECT_EQ(fake().live_registrations(), 0);
  EXPECT_EQ(read_back(*destination, host.size(), 1), host);
}

}  // namespace
}  // namespace warpload
