// warpload._warpload: the pybind11 module under the warpload Python package.
//
// It exposes the engine at the level the pure-Python APIs (warpload/_api.py,
// the warpload.fastsafetensors package) build on:
//   _Loader        a warpload::Loader; load() releases the GIL and cancels on Ctrl-C
//                  (cancellable_call.hpp)
//   _ChunkReader   a warpload::ChunkedReader over a _Loader's plan (iterate_weights); next()
//                  releases the GIL and cancels on Ctrl-C
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
#include "chunk_list.hpp"
#include "core/tensor_view.hpp"
#include "distributed.hpp"
#include "python_memory.hpp"
#include "storage_options.hpp"
#include "tensor_export.hpp"
#include "warpload/chunked.hpp"
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
    return resolve_settings(backend, storage, config, use_config).settings.backend;
  } catch (const std::exception&) {
    return "";
  }
}

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
    case ExportMode::kNative:
      return "native";
    case ExportMode::kCarrier:
      return "carrier";
    case ExportMode::kRawBytes:
      return "raw_bytes";
  }
  return "";
}

// ---- the loader ---------------------------------------------------------------------------

class PyLoader {
 public:
  explicit PyLoader(PyLoadOptions options) : options_(std::move(options)) {
    const Device device = Device::parse(options_.device);  // std::invalid_argument -> ValueError
    device_index_ = device.index;
    LoadOptions& load = load_options_;
    load.backend = options_.backend;
    load.storage = options_.storage;
    load.config = options_.config;
    load.use_config = options_.use_config;
    load.device = options_.device;
    if (options_.staging_bytes != 0) load.staging_bytes = options_.staging_bytes;
    // Framework memory (torch's caching allocator) when the caller gave one; otherwise the
    // engine chooses, as for C++ callers (the backend's own memory, else counted host pages).
    if (!options_.allocator.is_none()) {
      load.allocator = std::make_shared<PythonAllocator>(
          options_.allocator, device.is_cuda() ? MemoryKind::kDevice : MemoryKind::kHost);
    }
    LoadOptions with_hooks = load;
    with_hooks.cancel = &cancel_;
    with_hooks.on_progress = [this](std::uint64_t done, std::uint64_t total) {
      done_.store(done, std::memory_order_relaxed);
      total_.store(total, std::memory_order_relaxed);
    };
    loader_ = std::make_unique<Loader>(std::move(with_hooks));
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
    call_cancellable([&] { stats = loader_->load(); }, cancel_, tick(progress),
                     [&] { loader_->release(); });
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

  py::list plan() const {
    py::list out;
    for (const PlannedFile& f : loader_->files()) {
      py::list tensors;
      for (const TensorInfo& t : f.header.tensors) {
        tensors.append(py::make_tuple(t.name, std::string(dtype_name(t.dtype)), to_tuple(t.shape),
                                      t.begin, t.end));
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
  // The options loads run with, without this handle's progress and cancel hooks.
  const LoadOptions& load_options() const { return load_options_; }

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

  std::function<void()> tick(const py::object& progress) {
    if (progress.is_none()) return {};
    return [this, progress] { progress(done_.load(), total_.load()); };
  }

  PyLoadOptions options_;
  int device_index_ = 0;
  std::atomic<bool> cancel_{false};
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> total_{0};
  bool busy_ = false;
  LoadOptions load_options_;
  std::unique_ptr<Loader> loader_;
};

// iterate_weights' engine: a ChunkedReader over a copy of a _Loader's plan, with its options.
// next() reads (or takes the read-ahead) chunk with the GIL released, cancellable by Ctrl-C;
// cancel() from any thread stops a read ahead nobody will take. `progress(done, total)` runs on
// the thread that reads (a read ahead's included), taking the GIL; an exception it raises
// cancels the reader and is raised by the next() that wanted that chunk.
class PyChunkReader {
 public:
  PyChunkReader(const PyLoader& loader, std::uint64_t memory_limit, bool prefetch,
                py::object progress)
      : device_index_(Device::parse(loader.device()).index), progress_(std::move(progress)) {
    LoadOptions options = loader.load_options();
    options.cancel = &cancel_;
    if (!progress_.is_none()) {
      options.on_progress = [this](std::uint64_t done, std::uint64_t total) {
        report(done, total);
      };
    }
    py::gil_scoped_release release;
    reader_ =
        std::make_unique<ChunkedReader>(std::make_shared<CheckpointPlan>(loader.loader().plan()),
                                        std::move(options), ChunkOptions{memory_limit, prefetch});
  }
  ~PyChunkReader() { close(); }
  PyChunkReader(const PyChunkReader&) = delete;
  PyChunkReader& operator=(const PyChunkReader&) = delete;

  // The next chunk's tensors, or None after the last.
  py::object next() {
    if (!reader_) throw std::runtime_error("this chunk reader is closed");
    if (busy_) throw std::runtime_error("this chunk reader is busy in another thread");
    busy_ = true;
    struct Idle {
      bool& busy;
      ~Idle() { busy = false; }
    } idle{busy_};
    std::optional<std::vector<TensorView>> chunk;
    try {
      call_cancellable([&] { chunk = reader_->next(); }, cancel_, {}, [&] { chunk.reset(); });
    } catch (const CancelledError&) {
      raise_progress_error();  // the callback's exception is why the read stopped
      throw;
    }
    // A callback that raised at the end of the read: that chunk is not handed out either.
    if (failed_.load()) {
      chunk.reset();
      raise_progress_error();
    }
    if (!chunk) return py::none();
    py::list out;
    for (TensorView& v : *chunk) out.append(ExportedTensor(std::move(v), device_index_));
    return out;
  }

  void cancel() noexcept {
    if (reader_) reader_->cancel();
  }

  // Stops and drops the reader (a read ahead is cancelled and waited for) without the GIL,
  // which the reading thread's progress calls may need. Idempotent.
  void close() {
    if (!reader_) return;
    std::unique_ptr<ChunkedReader> reader = std::move(reader_);
    if (Py_IsInitialized() == 0) return;  // interpreter gone: the process is ending
    py::gil_scoped_release release;
    reader->cancel();
    reader.reset();
  }

 private:
  // On a reading thread: calls the Python callback with the GIL; its exception cancels.
  void report(std::uint64_t done, std::uint64_t total) noexcept {
    if (Py_IsInitialized() == 0 || failed_.load()) return;
    py::gil_scoped_acquire gil;
    try {
      progress_(done, total);
    } catch (py::error_already_set& e) {
      error_ = std::move(e);
      failed_.store(true);
      cancel_.store(true);
    } catch (...) {
      failed_.store(true);
      cancel_.store(true);
    }
  }
  void raise_progress_error() {
    if (!failed_.load() || !error_) return;
    py::error_already_set e = std::move(*error_);
    error_.reset();
    throw e;
  }

  int device_index_ = 0;
  py::object progress_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> failed_{false};
  std::optional<py::error_already_set> error_;  // set with the GIL held
  bool busy_ = false;
  std::unique_ptr<ChunkedReader> reader_;
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
  py::tuple invalid_file_bases =
      py::make_tuple(py::handle(PyExc_ValueError), py::handle(safetensor_error));
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
  g_cancelled_error =
      PyErr_NewExceptionWithDoc("warpload.CancelledError", "A load was cancelled (a RuntimeError).",
                                PyExc_RuntimeError, nullptr);
  m.attr("InvalidFileError") = py::handle(g_invalid_file_error);
  m.attr("UnsupportedError") = py::handle(g_unsupported_error);
  m.attr("CancelledError") = py::handle(g_cancelled_error);
  py::register_exception_translator(translate_error);

  py::class_<ExportedTensor>(m, "DLPackTensor", py::module_local())
      .def_property_readonly("name", &ExportedTensor::name)
      .def_property_readonly(
          "dtype",
          [](const ExportedTensor& t) { return std::string(dtype_name(t.stored_dtype())); })
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

  py::class_<PyLoader>(m, "_Loader", py::module_local())
      .def(py::init([](const std::string& backend, bool direct, unsigned threads,
                       std::uint64_t block_size, unsigned queue_depth, const std::string& config,
                       bool use_config, const std::string& device, std::uint64_t staging_bytes,
                       const std::string& mount_point, const py::object& allocator,
                       unsigned connections, std::uint64_t request_size) {
             PyLoadOptions o;
             o.backend = backend;
             o.storage = storage_options(direct, threads, block_size, queue_depth, mount_point,
                                         connections, request_size);
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
           py::arg("allocator") = py::none(), py::arg("connections") = 0U,
           py::arg("request_size") = 0ULL)
      .def("add", &PyLoader::add, py::arg("path"))
      .def("load", &PyLoader::load, py::arg("progress") = py::none())
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
      .def(
          "plan_chunks",
          [](const PyLoader& l, std::uint64_t memory_limit, unsigned parts) {
            return chunk_list(l.loader().files(), memory_limit, parts);
          },
          py::arg("memory_limit") = 0ULL, py::arg("parts") = 2U)
      .def_property_readonly("total_bytes",
                             [](const PyLoader& l) { return l.loader().total_bytes(); })
      .def_property_readonly("loaded", [](const PyLoader& l) { return l.loader().loaded(); })
      .def_property_readonly("device", &PyLoader::device)
      .def("release", [](PyLoader& l) { l.loader().release(); });

  py::class_<PyChunkReader>(m, "_ChunkReader", py::module_local())
      .def(py::init<const PyLoader&, std::uint64_t, bool, py::object>(), py::arg("loader"),
           py::arg("memory_limit") = 0ULL, py::arg("prefetch") = true,
           py::arg("progress") = py::none())
      .def("next", &PyChunkReader::next)
      .def("cancel", &PyChunkReader::cancel, py::call_guard<py::gil_scoped_release>())
      .def("close", &PyChunkReader::close);

  bind_distributed(m, g_invalid_file_error);

  m.def("live_host_bytes", &host_bytes_in_use,
        "Bytes of host memory warpload currently holds for loaded tensors (any tensor still "
        "alive keeps its file's buffer).");
  m.def("release_staging_pools", &release_staging_pools, py::call_guard<py::gil_scoped_release>(),
        "Frees the page-locked staging slots device loads keep for reuse (3FS iovs registered "
        "with CUDA); slots a running load holds are freed when it ends. Also done at exit. "
        "Returns the bytes freed now.");
  m.def("staging_pool_bytes", &staging_pool_bytes,
        "Bytes of staging slots the pools hold (idle or lent to a running load).");
  m.def("available_backends", &available_storage_names);
  m.def(
      "backend_names",
      [] {
        std::vector<std::string> names;
        for (const BackendInfo& info : storage_backends()) names.push_back(info.name);
        return names;
      },
      "Every registered storage backend's name (no probing), in bench order.");
  m.attr("default_backend") = std::string(default_backend_name());
  m.def(
      "backends",
      [] {
        py::list out;
        for (const BackendInfo& info : storage_backends()) {
          const std::string reason = backend_unavailable_reason(info.name);
          py::dict d;
          d["name"] = info.name;
          d["summary"] = info.summary;
          d["available"] = reason.empty();
          d["reason"] = reason;
          d["takes_direct"] = info.takes_direct;
          d["picks_direct"] = info.picks_direct;
          d["host_destinations"] = info.host_destinations;
          d["device_destinations"] = info.device_destinations;
          d["stages_when_unusable"] = info.stages_when_unusable;
          d["needs_mount"] = info.needs_mount;
          d["owns_buffers"] = info.owns_buffers;
          d["preferred_allocator"] = info.preferred_allocator;
          d["baseline"] = info.baseline;
          d["benchmarked"] = info.benchmarked;
          d["tuned"] = info.tuned;
          d["reads_urls"] = info.reads_urls;
          out.append(std::move(d));
        }
        return out;
      },
      "Every registered storage backend, available here or not, as dicts: name, summary, "
      "available, reason (why not, else \"\") and the capability flags.");
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
