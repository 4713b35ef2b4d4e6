// The chunks iterate_weights reads, as Python values: [(spans, bytes, names)] with spans
// [(file, first, last)] and the chunk's tensor names in plan order. Shared by _Loader and
// _DistributedLoader (whose iterate all-gathers each chunk).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <span>

#include "warpload/chunked.hpp"
#include "warpload/plan.hpp"

namespace warpload::python {

inline pybind11::list chunk_list(std::span<const PlannedFile> files, std::uint64_t memory_limit,
                                 unsigned parts) {
  pybind11::list out;
  for (const ChunkPlan& c : plan_chunks(files, chunk_budget(memory_limit, parts))) {
    pybind11::list spans;
    pybind11::list names;
    for (const TensorSpan& r : c.spans) {
      spans.append(pybind11::make_tuple(r.file, r.first, r.last));
      const auto& tensors = files[r.file].header.tensors;
      for (std::size_t t = r.first; t < r.last; ++t) names.append(tensors[t].name);
    }
    out.append(pybind11::make_tuple(spans, c.bytes, names));
  }
  return out;
}

}  // namespace warpload::python
