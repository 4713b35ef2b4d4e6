/* Test-only entry points of the fake CUDA driver (tests/fake_cuda/fake_cuda.cpp), besides the
 * driver API subset of src/device/cuda_abi.h. Tests reach them with dlopen(WARPLOAD_FAKE_CUDA)
 * + dlsym (the same handle the shim loaded, so the same state). See README.md. */
#ifndef WARPLOAD_FAKE_CUDA_API_H_
#define WARPLOAD_FAKE_CUDA_API_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Live objects, over all devices. */
typedef long long (*fake_cuda_live_allocations_fn)(void); /* cuMemAlloc not yet freed */
typedef long long (*fake_cuda_live_device_bytes_fn)(void);
typedef long long (*fake_cuda_live_pinned_allocations_fn)(void); /* cuMemHostAlloc */
typedef long long (*fake_cuda_live_pinned_bytes_fn)(void);
typedef long long (*fake_cuda_live_registrations_fn)(void); /* cuMemHostRegister */
typedef long long (*fake_cuda_live_streams_fn)(void);
typedef long long (*fake_cuda_live_events_fn)(void);
/* Retain count of a device's primary context (0 = inactive). */
typedef int (*fake_cuda_primary_ctx_refcount_fn)(int device);
/* Async copies executed since the last reset, and how many read pageable (not pinned or
 * registered) host memory. */
typedef long long (*fake_cuda_async_copies_fn)(void);
typedef long long (*fake_cuda_pageable_async_copies_fn)(void);
/* Async copies whose source lies inside a cuMemHostRegister'ed range (not cuMemHostAlloc), and
 * successful cuMemHostRegister calls, since the last reset. */
typedef long long (*fake_cuda_registered_async_copies_fn)(void);
typedef long long (*fake_cuda_registration_calls_fn)(void);
/* 1 when [p, p + bytes) lies inside one live cuMemHostRegister'ed range, else 0. */
typedef int (*fake_cuda_host_registered_fn)(const void* p, size_t bytes);
/* Calls `observer` (null: none) with the source of every counted cuMemcpyHtoDAsync, on the
 * calling thread, after the state lock is released. */
typedef void (*fake_cuda_set_copy_observer_fn)(void (*observer)(const void* src, size_t bytes));
/* 1 when [p, p + bytes) lies inside one live cuMemAlloc allocation, else 0 (the fake cuFile,
 * tests/fake_cufile/, checks its destinations with it). */
typedef int (*fake_cuda_device_range_fn)(unsigned long long p, size_t bytes);
/* The device whose primary context is current on the calling thread, or -1 for none. */
typedef int (*fake_cuda_current_device_fn)(void);
/* Re-reads FAKE_CUDA_FAIL_ALLOC_AFTER / FAKE_CUDA_FAIL_COPY_AFTER / FAKE_CUDA_COPY_DELAY_US,
 * restarts the injection counters and clears sticky errors. Does not touch live objects. */
typedef void (*fake_cuda_reset_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* WARPLOAD_FAKE_CUDA_API_H_ */
