/* Test-only entry points of the fake cuFile library (tests/fake_cufile/fake_cufile.cpp), besides
 * the cuFile subset of src/device/cufile_abi.h. Tests reach them with dlopen(WARPLOAD_FAKE_CUFILE)
 * + dlsym (the same handle the shim loaded, so the same state). See README.md. */
#ifndef WARPLOAD_FAKE_CUFILE_API_H_
#define WARPLOAD_FAKE_CUFILE_API_H_

#ifdef __cplusplus
extern "C" {
#endif

typedef long long (*fake_cufile_live_handles_fn)(void);   /* registered, not deregistered */
typedef long long (*fake_cufile_live_buffers_fn)(void);   /* cuFileBufRegister'ed ranges */
typedef long long (*fake_cufile_driver_opens_fn)(void);   /* successful cuFileDriverOpen calls */
typedef long long (*fake_cufile_reads_fn)(void);          /* cuFileRead calls */
typedef long long (*fake_cufile_read_bytes_fn)(void);     /* bytes cuFileRead returned */
typedef long long (*fake_cufile_max_concurrent_reads_fn)(void);
typedef long long (*fake_cufile_buffer_reads_fn)(void);   /* reads into a registered buffer */
/* Re-reads the FAKE_CUFILE_* variables and zeroes the counters that are not "live". */
typedef void (*fake_cufile_reset_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* WARPLOAD_FAKE_CUFILE_API_H_ */
