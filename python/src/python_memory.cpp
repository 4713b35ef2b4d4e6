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
