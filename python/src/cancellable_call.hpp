// Running a blocking C++ call (a load, a read) from Python without holding the GIL, while
// staying responsive to Ctrl-C.
//
// Python runs signal handlers only on the main thread, between bytecodes; a thread blocked in
// C++ never reaches one, so a plain "release the GIL and call load()" would ignore Ctrl-C
// until the load ends. Instead the job runs on a worker thread and the calling thread waits
// with the GIL released, waking every 100 ms to run pending signal handlers
// (PyErr_CheckSignals) and the caller's tick (progress). When a handler or the tick raises
// (KeyboardInterrupt, or any exception from a progress callback), the job's cancel flag is
// set, the worker is joined — the loader stops its reads and frees what it allocated — and
// the Python exception propagates.
//
// Thread safety: call with the GIL held. The job must not touch Python objects except by
// taking the GIL itself (PythonAllocator does).
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <functional>

namespace warpload::python {

// Runs `job` as described above. `on_tick` (may be empty) runs with the GIL held every
// 100 ms while the job runs. `on_interrupted` (may be empty) runs, with the GIL held, when
// Python interrupted the call but the job had already finished successfully (so its results
// can be dropped). Rethrows the job's exception, or the Python exception that interrupted it.
void call_cancellable(const std::function<void()>& job, std::atomic<bool>& cancel,
                      const std::function<void()>& on_tick,
                      const std::function<void()>& on_interrupted);

}  // namespace warpload::python
