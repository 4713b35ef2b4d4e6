// Binds warpload::DistributedLoader as warpload._warpload._DistributedLoader (distributed.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace warpload::python {

// `invalid_file_error` is the module's warpload.InvalidFileError type.
void bind_distributed(pybind11::module_& m, PyObject* invalid_file_error);

}  // namespace warpload::python
