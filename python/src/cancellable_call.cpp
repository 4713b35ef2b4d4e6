#include "cancellable_call.hpp"

#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

namespace py = pybind11;

namespace warpload::python {

void call_cancellable(const std::function<void()>& job, std::atomic<bool>& cancel,
                      const std::function<void()>& on_tick,
                      const std::function<void()>& on_interrupted) {
  struct Outcome {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    std::exception_ptr error;
  };
  auto outcome = std::make_shared<Outcome>();
  std::thread worker([&job, outcome] {
    std::exception_ptr error;
    try {
      job();
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard lock(outcome->mutex);
    outcome->error = error;
    outcome->done = true;
    outcome->finished.notify_all();
  });

  std::optional<py::error_already_set> interruption;
  try {
    for (;;) {
      bool done = false;
      {
        py::gil_scoped_release release;
        std::unique_lock lock(outcome->mutex);
        done = outcome->finished.wait_for(lock, std::chrono::milliseconds(100),
                                          [&] { return outcome->done; });
      }
      if (done) break;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (on_tick) on_tick();
    }
  } catch (py::error_already_set& e) {
    interruption.emplace(std::move(e));
  } catch (...) {
    cancel.store(true);
    py::gil_scoped_release release;
    worker.join();
    throw;
  }
  if (interruption) cancel.store(true);
  {
    py::gil_scoped_release release;
    worker.join();
  }
  if (interruption) {
    if (!outcome->error && on_interrupted) on_interrupted();
    throw std::move(*interruption);
  }
  if (outcome->error) std::rethrow_exception(outcome->error);
}

}  // namespace warpload::python
