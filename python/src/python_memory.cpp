#include "python_memory.hpp"

#include <atomic>
#include <string>

#include "warpload/error.hpp"

namespace py = pybind11;

namespace warpload::python {
namespace {

bool python_is_gone() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() == 0 || Py_IsFinalizing() != 0;
#else
  return Py_IsInitialized() == 0 || _Py_IsFinalizing() != 0;
#endif
}

std::atomic<std::uint64_t> g_live_host_bytes{0};

class CountedBuffer final : public Buffer {
 public:
  explicit CountedBuffer(std::shared_ptr<Buffer> inner)
      : Buffer(inner->data(), inner->size(), inner->kind()), inner_(std::move(inner)) {
    g_live_host_bytes.fetch_add(size(), std::memory_order_relaxed);
  }
  ~CountedBuffer() override { g_live_host_bytes.fetch_sub(size(), std::memory_order_relaxed); }

 private:
  std::shared_ptr<Buffer> inner_;
};

class CountedAllocator final : public Allocator {
 public:
  explicit CountedAllocator(std::shared_ptr<Allocator> inner) : inner_(std::move(inner)) {}
  [[nodiscard]] MemoryKind kind() const noexcept override { return inner_->kind(); }
  [[nodiscard]] std::shared_ptr<Buffer> allocate(std::size_t size,
                                                 std::size_t alignment) override {
    return std::make_shared<CountedBuffer>(inner_->allocate(size, alignment));
  }

 private:
  std::shared_ptr<Allocator> inner_;
};

// Holds the Python object that owns the memory; dropping it needs the GIL.
class PythonBuffer final : public Buffer {
 public:
  PythonBuffer(std::byte* data, std::size_t size, MemoryKind kind, py::object keepalive)
      : Buffer(data, size, kind), keepalive_(keepalive.release().ptr()) {}
  ~PythonBuffer() override {
    // At interpreter exit Python may already be gone: then the memory goes with the process.
    if (python_is_gone()) return;
    PyGILState_STATE state = PyGILState_Ensure();
    Py_XDECREF(keepalive_);
    PyGILState_Release(state);
  }

 private:
  PyObject* keepalive_;
};

}  // namespace

std::shared_ptr<Allocator> make_counted_host_allocator() {
  static const std::shared_ptr<Allocator> host = make_host_allocator();
  return std::make_shared<CountedAllocator>(host);
}

std::uint64_t live_host_bytes() noexcept {
  return g_live_host_bytes.load(std::memory_order_relaxed);
}

PythonAllocator::~PythonAllocator() {
  if (python_is_gone()) {
    (void)allocate_.release();
    return;
  }
  py::gil_scoped_acquire gil;
  allocate_ = py::object();
}

std::shared_ptr<Buffer> PythonAllocator::allocate(std::size_t size, std::size_t alignment) {
  py::gil_scoped_acquire gil;
  try {
    const std::size_t request = size + (alignment > 1 ? alignment - 1 : 0);
    py::tuple result = allocate_(request);
    py::object keepalive = result[0];
    auto address = result[1].cast<std::uintptr_t>();
    const std::uintptr_t aligned = (address + alignment - 1) / alignment * alignment;
    return std::make_shared<PythonBuffer>(reinterpret_cast<std::byte*>(aligned), size, kind_,
                                          std::move(keepalive));
  } catch (py::error_already_set& e) {
    throw OutOfMemoryError("Python allocator failed for " + std::to_string(size) +
                           " bytes: " + e.what());
  } catch (const py::cast_error& e) {
    throw OutOfMemoryError("Python allocator must return (object, address): " +
                           std::string(e.what()));
  }
}

}  // namespace warpload::python
