// warpload._warpload: the pybind11 module under the warpload Python package.
//
// It exposes the engine at the level the pure-Python APIs (warpload/_api.py,
// warpload/fastsafetensors.py) build on:
//   _Loader        a warpload::Loader plus ranged reads for iterate_weights; load() and
//                  read_ranges() release the GIL and cancel on Ctrl-C (cancellable_call.hpp)
//   DLPackTensor   one tensor or shard, exported through DLPack (tensor_export.hpp)
//   exceptions     the C++ Error hierarchy mapped to Python's built-in exception types
//
// Thread safety: a _Loader is used by one Python thread at a time (the GIL serializes calls;
// a call in progress holds a per-object flag, and a second concurrent call raises).
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cancellable_call.hpp"
#include "core/tensor_view.hpp"
#include "distributed.hpp"
#include "python_memory.hpp"
#include "storage_options.hpp"
#include "storage/hf3fs_shim.hpp"
#include "tensor_export.hpp"
#include "warpload/config.hpp"
#include "warpload/device.hpp"
#include "warpload/dtype.hpp"
#include "warpload/error.hpp"
#include "warpload/format.hpp"
#include "warpload/loader.hpp"
#include "warpload/storage.hpp"

namespace py = pybind11;

namespace warpload::python {
namespace {

// ---- exceptions ---------------------------------------------------------------------------

PyObject* g_invalid_file_error = nullptr;  // warpload.InvalidFileError(ValueError)
PyObject* g_unsupported_error = nullptr;   // warpload.UnsupportedError(RuntimeError)
PyObject* g_cancelled_error = nullptr;     // warpload.CancelledError(RuntimeError)

void raise_with_attributes(PyObject* type, PyObject* args,
                           const std::map<std::string, py::object>& attributes) {
  PyObject* instance = PyObject_CallObject(type, args);
  Py_XDECREF(args);
  if (instance == nullptr) return;  // the constructor's error stays set
  for (const auto& [key, value] : attributes) {
    PyObject_SetAttrString(instance, key.c_str(), value.ptr());
  }
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(instance)), instance);
  Py_DECREF(instance);
}

void translate_error(std::exception_ptr error) {
  try {
    if (error) std::rethrow_exception(error);
  } catch (const InvalidFileError& e) {
    raise_with_attributes(g_invalid_file_error, Py_BuildValue("(s)", e.what()),
                          {{"rule", py::str(std::string(format_rule_name(e.rule())))}});
  } catch (const NotFoundError& e) {
    raise_with_attributes(PyExc_FileNotFoundError, Py_BuildValue("(is)", ENOENT, e.what()), {});
  } catch (const IoError& e) {
    // errno 0 marks an unexpected end of file (or a file that changed size): an I/O error.
    const int error_number = e.error_number() != 0 ? e.error_number() : EIO;
    raise_with_attributes(PyExc_OSError, Py_BuildValue("(is)", error_number, e.what()),
                          {{"offset", py::int_(e.offset())}});
  } catch (const UnsupportedError& e) {
    PyErr_SetString(g_unsupported_error, e.what());
  } catch (const OutOfMemoryError& e) {
    PyErr_SetString(PyExc_MemoryError, e.what());
  } catch (const CancelledError& e) {
    PyErr_SetString(g_cancelled_error, e.what());
  }
}

// ---- options ------------------------------------------------------------------------------

struct PyLoadOptions {
  std::string backend;
  StorageOptions storage;
  std::string config;
  bool use_config = true;
  std::string device = "cpu";
  std::uint64_t staging_bytes = 0;  // 0 = LoadOptions default
  py::object allocator;             // None or callable(nbytes) -> (keepalive, address)
};

// The backend a load with these options will use (the config applied), or "" when the
// config cannot be read (the load itself will then report why).
std::string resolved_backend(const std::string& backend, const StorageOptions& storage,
                             const std::string& config, bool use_config) {
  try {
    std::optional<TunedSettings> tuned;
    if (use_config) {
      if (auto found = find_config_file(config)) tuned = read_config(*found);
    }
    return apply_config(backend, storage, tuned ? &*tuned : nullptr).backend;
  } catch (const std::exception&) {
    return "";
  }
}

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v / a * a; }
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

py::tuple to_tuple(const std::vector<std::int64_t>& v) {
  py::tuple t(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) t[i] = py::int_(v[i]);
  return t;
}

py::tuple to_tuple(const std::vector<std::uint64_t>& v) {
  py::tuple t(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) t[i] = py::int_(v[i]);
  return t;
}

ExportMode parse_mode(const std::string& mode) {
  if (mode == "native") return ExportMode::kNative;
  if (mode == "carrier") return ExportMode::kCarrier;
  if (mode == "raw_bytes") return ExportMode::kRawBytes;
  throw std::invalid_argument("export mode must be 'native', 'carrier' or 'raw_bytes', not '" +
                              mode + "'");
}

std::string mode_name(ExportMode mode) {
  switch (mode) {
    case ExportMode::kNative: return "native";
    case ExportMode::kCarrier: return "carrier";
    case ExportMode::kRawBytes: return "raw_bytes";
  }
  return "";
}

// A client library that cannot be loaded is a missing capability of this machine, like a
// missing CUDA driver (UnsupportedError, RuntimeError in Python); the 3FS shim reports it as
// NotFoundError, which would otherwise read as a missing checkpoint file.
template <typename Fn>
auto with_library_errors(Fn&& fn) {
  try {
    return fn();
  } catch (const NotFoundError& e) {
    if (!detail::hf3fs_available() && std::string_view(e.what()).find("3FS") !=
                                          std::string_view::npos) {
      throw UnsupportedError(e.what());
    }
    throw;
  }
}

// ---- the loader ---------------------------------------------------------------------------

// One range of consecutive tensors (data order) of one planned file.
struct TensorRange {
  std::size_t file = 0;
  std::size_t first = 0;  // index into Header::tensors
  std::size_t last = 0;   // one past
};

class PyLoader {
 public:
  explicit PyLoader(PyLoadOptions options) : options_(std::move(options)) {
    const Device device = Device::parse(options_.device);  // std::invalid_argument -> ValueError
    device_index_ = device.index;
    LoadOptions load;
    load.backend = options_.backend;
    load.storage = options_.storage;
    load.config = options_.config;
    load.use_config = options_.use_config;
    load.device = options_.device;
    if (options_.staging_bytes != 0) load.staging_bytes = options_.staging_bytes;
    load.cancel = &cancel_;
    load.on_progress = [this](std::uint64_t done, std::uint64_t total) {
      done_.store(done, std::memory_order_relaxed);
      total_.store(total, std::memory_order_relaxed);
    };
    if (!options_.allocator.is_none()) {
      load.allocator = std::make_shared<PythonAllocator>(
          options_.allocator, device.is_cuda() ? MemoryKind::kDevice : MemoryKind::kHost);
    } else if (!device.is_cuda()) {
      // The mmap baseline and 3FS bring their own memory (ordinary pages, shared iovs).
      const std::string backend = resolved_backend(options_.backend, options_.storage,
                                                   options_.config, options_.use_config);
      if (!backend.empty() && backend != "mmap" && backend != "3fs") {
        load.allocator = make_counted_host_allocator();
      }
    }
    host_allocator_ = load.allocator && load.allocator->kind() == MemoryKind::kHost
                          ? load.allocator
                          : make_counted_host_allocator();
    loader_ = std::make_unique<Loader>(std::move(load));
  }

  void add(const std::filesystem::path& path) {
    Busy busy(*this);
    py::gil_scoped_release release;
    loader_->add(path);
  }

  py::dict load(const py::object& progress) {
    Busy busy(*this);
    cancel_.store(false);
    done_.store(0);
    total_.store(loader_->total_bytes());
    LoadStats stats;
    call_cancellable([&] { stats = with_library_errors([&] { return loader_->load(); }); },
                     cancel_, tick(progress), [&] { loader_->release(); });
    if (!progress.is_none()) progress(loader_->total_bytes(), loader_->total_bytes());
    py::dict out;
    out["bytes"] = stats.bytes;
    out["seconds"] = stats.seconds;
    out["gbps"] = stats.gbps();
    out["backend"] = stats.backend;
    out["device"] = stats.device;
    out["files"] = stats.files;
    out["direct_files"] = stats.direct_files;
    out["config"] = stats.config.string();
    return out;
  }

  // Reads the given tensor ranges into fresh host buffers (one per range) and returns their
  // tensors, without loading anything else. Used by iterate_weights.
  std::vector<std::vector<ExportedTensor>> read_ranges(const std::vector<TensorRange>& ranges,
                                                       const py::object& progress) {
    Busy busy(*this);
    const auto& files = loader_->files();
    for (const auto& r : ranges) {
      if (r.file >= files.size() || r.first > r.last ||
          r.last > files[r.file].header.tensors.size()) {
        throw std::invalid_argument("tensor range out of the plan");
      }
    }
    // A cancel() that came before this call stops it here (nothing allocated yet).
    if (cancel_.exchange(false)) {
      throw CancelledError(files.empty() ? std::string("read cancelled")
                                         : files.front().path.string() + ": read cancelled");
    }
    if (!range_storage_) {
      std::optional<TunedSettings> tuned;
      if (options_.use_config) {
        if (auto found = find_config_file(options_.config)) tuned = read_config(*found);
      }
      ResolvedSettings settings =
          apply_config(options_.backend, options_.storage, tuned ? &*tuned : nullptr);
      range_storage_ = with_library_errors(
          [&] { return make_storage(settings.backend, settings.storage); });
    }

    struct Pending {
      std::unique_ptr<StorageFile> file;
      std::shared_ptr<Buffer> buffer;
      std::uint64_t first_byte = 0;  // file offset read to buffer->data() + pad
      std::uint64_t pad = 0;
    };
    std::vector<Pending> pending(ranges.size());
    std::vector<ReadRequest> requests;
    std::uint64_t total = 0;
    ReadControl control;
    {
      py::gil_scoped_release release;
      for (std::size_t i = 0; i < ranges.size(); ++i) {
        const PlannedFile& planned = files[ranges[i].file];
        const Header& h = planned.header;
        Pending& p = pending[i];
        p.file = range_storage_->open(planned.path);
        if (p.file->size() != h.file_size) {
          throw IoError(planned.path.string() + ": file changed size since its header was read",
                        0, 0);
        }
        const std::uint64_t b0 = ranges[i].first < ranges[i].last
                                     ? h.tensors[ranges[i].first].begin
                                     : 0;
        const std::uint64_t b1 =
            ranges[i].first < ranges[i].last ? h.tensors[ranges[i].last - 1].end : 0;
        const std::uint64_t a = p.file->alignment();
        const std::uint64_t begin = align_down(h.data_offset() + b0, a);
        const std::uint64_t end = align_up(h.data_offset() + b1, a);
        // Buffered reads: shift the bytes so a tensor's address is congruent to its offset in
        // the data section modulo 64, as in a whole-file load (no realignment for files from
        // the reference writer). O_DIRECT destinations must stay aligned instead.
        p.first_byte = begin;
        p.pad = a == 1 ? b0 % 64 : 0;  // for a == 1, begin - data_offset == b0
        p.buffer = host_allocator_->allocate(std::max<std::uint64_t>(p.pad + end - begin, 1),
                                             std::max<std::uint64_t>(a, 64));
        if (end > begin) {
          requests.push_back(ReadRequest{p.file.get(), begin, end - begin,
                                         p.buffer->data() + p.pad});
          total += b1 - b0;
        }
      }
    }
    done_.store(0);
    total_.store(total);
    // cancel() from another thread reaches this read through active_control_; one that came
    // while the buffers were being allocated is taken here.
    {
      const std::lock_guard lock(control_mutex_);
      active_control_ = &control;
      if (cancel_.exchange(false)) control.cancel.store(true);
    }
    struct Detach {
      PyLoader& self;
      ~Detach() {
        const std::lock_guard lock(self.control_mutex_);
        self.active_control_ = nullptr;
      }
    } detach{*this};
    std::atomic<bool>& cancel = control.cancel;
    call_cancellable(
        [&] { range_storage_->read(requests, &control); }, cancel,
        [&, tick_progress = tick(progress)] {
          done_.store(std::min(control.bytes_done.load(), total));
          if (tick_progress) tick_progress();
        },
        {});

    std::vector<std::vector<ExportedTensor>> out(ranges.size());
    for (std::size_t i = 0; i < ranges.size(); ++i) {
      const PlannedFile& planned = files[ranges[i].file];
      const Header& h = planned.header;
      const std::string file = planned.path.string();
      const Pending& p = pending[i];
      for (std::size_t t = ranges[i].first; t < ranges[i].last; ++t) {
        const TensorInfo& info = h.tensors[t];
        std::byte* data = info.nbytes() == 0
                              ? p.buffer->data()
                              : p.buffer->data() + p.pad +
                                    (h.data_offset() + info.begin - p.first_byte);
        std::shared_ptr<const Buffer> owner = p.buffer;
        if (auto side = detail::realigned_copy(*host_allocator_, info, data, -1, planned.path)) {
          data = side->data();
          owner = std::move(side);
        }
        out[i].emplace_back(detail::make_tensor_view(info, data, std::move(owner), file),
                            device_index_);
      }
    }
    return out;
  }

  py::list plan() const {
    py::list out;
    for (const PlannedFile& f : loader_->files()) {
      py::list tensors;
      for (const TensorInfo& t : f.header.tensors) {
        tensors.append(py::make_tuple(t.name, std::string(dtype_name(t.dtype)),
                                      to_tuple(t.shape), t.begin, t.end));
      }
      py::dict metadata;
      for (const auto& [k, v] : f.header.metadata) metadata[py::str(k)] = py::str(v);
      out.append(py::make_tuple(f.path.string(), tensors, metadata, f.header.data_offset(),
                                f.header.file_size));
    }
    return out;
  }

  ExportedTensor tensor(const std::string& name) const {
    return ExportedTensor(loader_->tensor(name), device_index_);
  }
  ExportedTensor shard(const std::string& name, int rank, int world, int dim) const {
    return ExportedTensor(loader_->shard(name, rank, world, dim), device_index_);
  }
  void copy_to_host(const std::string& name, py::buffer dest) const {
    py::buffer_info info = dest.request(true);
    std::span<std::byte> span(static_cast<std::byte*>(info.ptr),
                              static_cast<std::size_t>(info.size * info.itemsize));
    py::gil_scoped_release release;
    loader_->copy_to_host(name, span);
  }

  Loader& loader() { return *loader_; }
  const Loader& loader() const { return *loader_; }
  const std::string& device() const { return options_.device; }

 private:
  // Marks a call in progress: the GIL is released inside, so a second Python thread could
  // otherwise enter the same Loader, which is not safe for add/load/release.
  class Busy {
   public:
    explicit Busy(PyLoader& self) : self_(self) {
      if (self_.busy_) throw std::runtime_error("this loader is busy in another thread");
      self_.busy_ = true;
    }
    ~Busy() { self_.busy_ = false; }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

   private:
    PyLoader& self_;
  };

public:
  // From any thread, without the handle's busy check: stops the read_ranges() in progress, or
  // the next one when none is (it raises CancelledError), and a load() in progress.
  // iterate_weights' prefetch uses it to stop the read of a chunk nobody will take.
  void cancel() {
    const std::lock_guard lock(control_mutex_);
    cancel_.store(true);
    if (active_control_ != nullptr) active_control_->cancel.store(true);
  }

 private:
  std::function<void()> tick(const py::object& progress) {
    if (progress.is_none()) return {};
    return [this, progress] { progress(done_.load(), total_.load()); };
  }

  PyLoadOptions options_;
  int device_index_ = 0;
  std::atomic<bool> cancel_{false};
  std::mutex control_mutex_;               // guards active_control_
  ReadControl* active_control_ = nullptr;  // read_ranges()'s, while it reads
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> total_{0};
  bool busy_ = false;
  std::shared_ptr<Allocator> host_allocator_;
  std::shared_ptr<Storage> range_storage_;
  std::unique_ptr<Loader> loader_;
};

}  // namespace
}  // namespace warpload::python

using namespace warpload;          // NOLINT(google-build-using-namespace): module body only
using namespace warpload::python;  // NOLINT(google-build-using-namespace)

PYBIND11_MODULE(_warpload, m) {
  m.doc() = "warpload engine bindings; use the warpload package, not this module directly";

  // safetensors' own error type, so `except SafetensorError` of safetensors code catches
  // warpload's invalid-file errors too (the drop-in raises it for misuse safetensors refuses).
  PyObject* safetensor_error = PyErr_NewExceptionWithDoc(
      "warpload.SafetensorError", "safetensors.SafetensorError: a malformed file or misuse.",
      PyExc_Exception, nullptr);
  py::tuple invalid_file_bases = py::make_tuple(py::handle(PyExc_ValueError),
                                                py::handle(safetensor_error));
  g_invalid_file_error = PyErr_NewExceptionWithDoc(
      "warpload.InvalidFileError",
      "A malformed safetensors file or index (a ValueError and a SafetensorError); `rule` "
      "names the rule it broke.",
      invalid_file_bases.ptr(), nullptr);
  m.attr("SafetensorError") = py::reinterpret_steal<py::object>(safetensor_error);
  g_unsupported_error = PyErr_NewExceptionWithDoc(
      "warpload.UnsupportedError",
      "A valid request this machine or build cannot serve, e.g. no CUDA driver or no 3FS "
      "client library (a RuntimeError).",
      PyExc_RuntimeError, nullptr);
  g_cancelled_error = PyErr_NewExceptionWithDoc(
      "warpload.CancelledError", "A load was cancelled (a RuntimeError).", PyExc_RuntimeError,
      nullptr);
  m.attr("InvalidFileError") = py::handle(g_invalid_file_error);
  m.attr("UnsupportedError") = py::handle(g_unsupported_error);
  m.attr("CancelledError") = py::handle(g_cancelled_error);
  py::register_exception_translator(translate_error);

  py::class_<ExportedTensor>(m, "DLPackTensor", py::module_local())
      .def_property_readonly("name", &ExportedTensor::name)
      .def_property_readonly("dtype",
                             [](const ExportedTensor& t) {
                               return std::string(dtype_name(t.stored_dtype()));
                             })
      .def_property_readonly("mode", [](const ExportedTensor& t) { return mode_name(t.mode()); })
      .def_property_readonly("shape", [](const ExportedTensor& t) { return to_tuple(t.shape()); })
      .def_property_readonly("strides",
                             [](const ExportedTensor& t) { return to_tuple(t.strides()); })
      .def_property_readonly("stored_shape",
                             [](const ExportedTensor& t) { return to_tuple(t.stored_shape()); })
      .def_property_readonly("nbytes", &ExportedTensor::nbytes)
      .def_property_readonly("data_ptr", &ExportedTensor::data_ptr)
      .def_property_readonly("contiguous", &ExportedTensor::contiguous)
      .def_property_readonly("device",
                             [](const ExportedTensor& t) {
                               return t.device().device_type == dlpack::kDLCUDA
                                          ? "cuda:" + std::to_string(t.device().device_id)
                                          : std::string("cpu");
                             })
      .def("supports", [](const ExportedTensor& t,
                          const std::string& mode) { return t.supports(parse_mode(mode)); })
      .def("as_mode",
           [](const ExportedTensor& t, const std::string& mode) { return t.as(parse_mode(mode)); })
      .def("to_capsule",
           [](const ExportedTensor& t) {
             PyObject* capsule = t.to_capsule();
             if (capsule == nullptr) throw py::error_already_set();
             return py::reinterpret_steal<py::object>(capsule);
           })
      .def(
          "__dlpack__",
          [](const ExportedTensor& t, const py::object& /*stream*/,
             const py::object& /*max_version*/, const py::object& /*dl_device*/,
             const py::object& copy) {
            if (!copy.is_none() && copy.cast<bool>()) {
              throw py::buffer_error("warpload tensors are exported without a copy");
            }
            // Loads synchronize every stream before returning, so no stream handshake is
            // needed: the bytes are ready for any stream.
            PyObject* capsule = t.to_capsule();
            if (capsule == nullptr) throw py::error_already_set();
            return py::reinterpret_steal<py::object>(capsule);
          },
          py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
          py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack_device__",
           [](const ExportedTensor& t) {
             return py::make_tuple(t.device().device_type, t.device().device_id);
           })
      .def("__repr__", [](const ExportedTensor& t) {
        std::string shape;
        for (auto d : t.stored_shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        return "<warpload.DLPackTensor '" + t.name() + "' " +
               std::string(dtype_name(t.stored_dtype())) + " [" + shape + "] " +
               mode_name(t.mode()) + ">";
      });

  py::class_<TensorRange>(m, "_TensorRange", py::module_local())
      .def(py::init([](std::size_t file, std::size_t first, std::size_t last) {
        return TensorRange{file, first, last};
      }));

  py::class_<PyLoader>(m, "_Loader", py::module_local())
      .def(py::init([](const std::string& backend, bool direct, unsigned threads,
                       std::uint64_t block_size, unsigned queue_depth, const std::string& config,
                       bool use_config, const std::string& device, std::uint64_t staging_bytes,
                       const std::string& mount_point, const py::object& allocator) {
             PyLoadOptions o;
             o.backend = backend;
             o.storage = storage_options(direct, threads, block_size, queue_depth, mount_point);
             o.config = config;
             o.use_config = use_config;
             o.device = device;
             o.staging_bytes = staging_bytes;
             o.allocator = allocator;
             return std::make_unique<PyLoader>(std::move(o));
           }),
           py::kw_only(), py::arg("backend") = "", py::arg("direct") = false,
           py::arg("threads") = 0U, py::arg("block_size") = 0ULL, py::arg("queue_depth") = 0U,
           py::arg("config") = "", py::arg("use_config") = true, py::arg("device") = "cpu",
           py::arg("staging_bytes") = 0ULL, py::arg("mount_point") = "",
           py::arg("allocator") = py::none())
      .def("add", &PyLoader::add, py::arg("path"))
      .def("load", &PyLoader::load, py::arg("progress") = py::none())
      .def("read_ranges", &PyLoader::read_ranges, py::arg("ranges"),
           py::arg("progress") = py::none())
      .def("plan", &PyLoader::plan)
      .def("keys", [](const PyLoader& l) { return l.loader().keys(); })
      .def("__contains__",
           [](const PyLoader& l, const std::string& name) { return l.loader().contains(name); })
      .def("info",
           [](const PyLoader& l, const std::string& name) {
             const TensorInfo& t = l.loader().info(name);
             return py::make_tuple(std::string(dtype_name(t.dtype)), to_tuple(t.shape),
                                   l.loader().file_of(name).path.string(), t.begin, t.end);
           })
      .def("metadata", [](const PyLoader& l) { return l.loader().metadata(); })
      .def("tensor", &PyLoader::tensor, py::arg("name"))
      .def("shard", &PyLoader::shard, py::arg("name"), py::arg("rank"), py::arg("world"),
           py::arg("dim") = 0)
      .def("copy_to_host", &PyLoader::copy_to_host, py::arg("name"), py::arg("dest"))
      .def_property_readonly("total_bytes",
                             [](const PyLoader& l) { return l.loader().total_bytes(); })
      .def_property_readonly("loaded", [](const PyLoader& l) { return l.loader().loaded(); })
      .def_property_readonly("device", &PyLoader::device)
      .def("release", [](PyLoader& l) { l.loader().release(); })
      .def("cancel", &PyLoader::cancel, py::call_guard<py::gil_scoped_release>());

  bind_distributed(m, g_invalid_file_error);

  m.def("live_host_bytes", &live_host_bytes,
        "Bytes of host memory warpload currently holds for loaded tensors (any tensor still "
        "alive keeps its file's buffer).");
  m.def("available_backends", &available_storage_names);
  m.def("cuda_available", &cuda_available);
  m.def(
      "resolved_backend",
      [](const std::string& backend, const std::string& config, bool use_config) {
        return resolved_backend(backend, StorageOptions{}, config, use_config);
      },
      py::arg("backend") = "", py::arg("config") = "", py::arg("use_config") = true);
  m.def("dtype_bits", [](const std::string& name) {
    auto d = parse_dtype(name);
    if (!d) throw std::invalid_argument("unknown safetensors dtype '" + name + "'");
    return dtype_bits(*d);
  });
  m.attr("__version__") = WARPLOAD_VERSION;
}
