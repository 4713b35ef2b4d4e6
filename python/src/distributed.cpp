// warpload._warpload._DistributedLoader: warpload::DistributedLoader driven from Python, with
// the collectives performed by a Python object (warpload/_distributed.py's TorchCollective,
// over torch.distributed). C++ plans, reads and fills; Python moves the bytes.
//
// The Python collective has: rank(), size(), all_gather(inp, outs), broadcast(buf, root),
// exchange(sends, recvs) with [(peer, buf)], all_gather_status(text) -> [text]. Buffers are
// writable memoryviews of warpload's host memory, valid for the duration of the call.
//
// GIL: load/tensor/shard/push release it; each collective call takes it back. load() runs
// through call_cancellable(): Ctrl-C stops this rank's reads, and the error agreement then
// fails every rank (CancelledError naming this one; KeyboardInterrupt here).
#include "distributed.hpp"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cancellable_call.hpp"
#include "chunk_list.hpp"
#include "storage_options.hpp"
#include "tensor_export.hpp"
#include "warpload/distributed.hpp"
#include "warpload/error.hpp"

namespace py = pybind11;

namespace warpload::python {
namespace {

py::memoryview view_of(std::span<const std::byte> data) {
  // Writable even for sends: torch.frombuffer warns on read-only buffers; nothing writes them.
  return py::memoryview::from_memory(const_cast<std::byte*>(data.data()),
                                     static_cast<py::ssize_t>(data.size()), false);
}

class PyCollective final : public Collective {
 public:
  explicit PyCollective(py::object impl) : impl_(std::move(impl)) {
    rank_ = impl_.attr("rank")().cast<int>();
    size_ = impl_.attr("size")().cast<int>();
  }
  ~PyCollective() override {
    py::gil_scoped_acquire gil;
    impl_ = py::object();
  }
  PyCollective(const PyCollective&) = delete;
  PyCollective& operator=(const PyCollective&) = delete;

  [[nodiscard]] int rank() const noexcept override { return rank_; }
  [[nodiscard]] int size() const noexcept override { return size_; }
  [[nodiscard]] MemoryKind memory() const noexcept override { return MemoryKind::kHost; }

  void all_gather(std::span<const std::byte> in,
                  std::span<const std::span<std::byte>> out) override {
    py::gil_scoped_acquire gil;
    py::list outs;
    for (const auto& o : out) outs.append(view_of(o));
    impl_.attr("all_gather")(view_of(in), outs);
  }
  void broadcast(std::span<std::byte> data, int root) override {
    py::gil_scoped_acquire gil;
    impl_.attr("broadcast")(view_of(data), root);
  }
  void exchange(std::span<const Transfer> sends, std::span<const Transfer> receives) override {
    py::gil_scoped_acquire gil;
    py::list s;
    py::list r;
    for (const Transfer& t : sends) s.append(py::make_tuple(t.peer, view_of(t.data)));
    for (const Transfer& t : receives) r.append(py::make_tuple(t.peer, view_of(t.data)));
    impl_.attr("exchange")(s, r);
  }
  std::vector<std::string> all_gather_status(const std::string& status) override {
    py::gil_scoped_acquire gil;
    return impl_.attr("all_gather_status")(status).cast<std::vector<std::string>>();
  }

 private:
  py::object impl_;
  int rank_ = 0;
  int size_ = 1;
};

py::dict stats_dict(const DistributedLoader& loader) {
  const DistributedStats& s = loader.stats();
  py::dict out;
  out["bytes"] = s.load.bytes;
  out["seconds"] = s.load.seconds;
  out["backend"] = s.load.backend;
  out["files"] = s.load.files;
  out["direct_files"] = s.load.direct_files;
  out["bytes_read"] = s.bytes_read;
  out["bytes_sent"] = s.bytes_sent;
  out["bytes_received"] = s.bytes_received;
  out["direct_bytes"] = s.direct_bytes;
  out["rank"] = loader.rank();
  out["world"] = loader.world();
  if (loader.loaded()) {
    out["slot_bytes"] = loader.plan().slot_bytes;
    out["stream_bytes"] = loader.plan().stream_bytes;
    out["data_bytes"] = loader.plan().data_bytes;
  }
  return out;
}

// Rebuilds a Python exception as the C++ error the peers should see (kind kept).
[[noreturn]] void throw_as_cpp(const py::handle& exc, const py::handle& invalid_file_error) {
  const std::string message = py::str(exc).cast<std::string>();
  if (py::isinstance(exc, invalid_file_error)) {
    const std::string rule = py::str(py::getattr(exc, "rule", py::str(""))).cast<std::string>();
    for (int r = 0; r <= static_cast<int>(FormatRule::kChecksumMismatch); ++r) {
      if (format_rule_name(static_cast<FormatRule>(r)) == rule) {
        throw InvalidFileError(static_cast<FormatRule>(r), message);
      }
    }
    throw InvalidFileError(FormatRule::kInvalidHeader, message);
  }
  if (py::isinstance(exc, py::module_::import("builtins").attr("FileNotFoundError"))) {
    throw NotFoundError(message);
  }
  if (py::isinstance(exc, py::module_::import("builtins").attr("OSError"))) {
    const py::object number = py::getattr(exc, "errno", py::none());
    throw IoError(message, number.is_none() ? EIO : number.cast<int>(), 0);
  }
  if (py::isinstance(exc, py::module_::import("builtins").attr("MemoryError"))) {
    throw OutOfMemoryError(message);
  }
  if (py::isinstance(exc, py::module_::import("builtins").attr("ValueError"))) {
    throw std::invalid_argument(message);
  }
  throw std::runtime_error(message);
}

// What load() shares with the engine while it runs: the cancel flag call_cancellable() sets
// on Ctrl-C, and this rank's progress. A base, so it exists before the loader whose
// LoadOptions point at it.
struct LoadFlags {
  std::atomic<bool> cancel{false};
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::uint64_t> total{0};
};

class PyDistributedLoader : private LoadFlags, public DistributedLoader {
 public:
  PyDistributedLoader(std::shared_ptr<Collective> collective, LoadOptions options,
                      DistributedOptions distributed)
      : DistributedLoader(std::move(collective), with_flags(std::move(options), this),
                          distributed) {}
  std::atomic<bool>& cancel_flag() noexcept { return cancel; }
  // progress(done, total) of this rank's reads, for call_cancellable()'s tick; empty for None.
  std::function<void()> tick(const py::object& progress) {
    if (progress.is_none()) return {};
    return [this, progress] { progress(done.load(), total.load()); };
  }
  void reset_progress() noexcept {
    done.store(0);
    total.store(0);
  }

 private:
  static LoadOptions with_flags(LoadOptions options, LoadFlags* flags) {
    options.cancel = &flags->cancel;
    options.on_progress = [flags](std::uint64_t done_bytes, std::uint64_t total_bytes) {
      flags->done.store(done_bytes);
      flags->total.store(total_bytes);
    };
    return options;
  }
};

}  // namespace

void bind_distributed(py::module_& m, PyObject* invalid_file_error) {
  py::class_<Segment>(m, "_Segment", py::module_local())
      .def(py::init([](std::size_t file, std::size_t first, std::size_t last) {
        return Segment{file, first, last};
      }));

  py::class_<PyDistributedLoader>(m, "_DistributedLoader", py::module_local())
      .def(py::init([](const py::object& collective, const std::string& backend, bool direct,
                       unsigned threads, std::uint64_t block_size, unsigned queue_depth,
                       const std::string& config, bool use_config, const std::string& mount_point,
                       bool shared_storage, std::uint64_t round_bytes, unsigned connections,
                       std::uint64_t request_size) {
             LoadOptions o;
             o.backend = backend;
             o.storage = storage_options(direct, threads, block_size, queue_depth, mount_point,
                                         connections, request_size);
             o.config = config;
             o.use_config = use_config;
             DistributedOptions d;
             d.shared_storage = shared_storage;
             if (round_bytes != 0) d.round_bytes = round_bytes;
             return std::make_unique<PyDistributedLoader>(
                 std::make_shared<PyCollective>(collective), std::move(o), d);
           }),
           py::arg("collective"), py::kw_only(), py::arg("backend") = "", py::arg("direct") = false,
           py::arg("threads") = 0U, py::arg("block_size") = 0ULL, py::arg("queue_depth") = 0U,
           py::arg("config") = "", py::arg("use_config") = true, py::arg("mount_point") = "",
           py::arg("shared_storage") = false, py::arg("round_bytes") = 0ULL,
           py::arg("connections") = 0U, py::arg("request_size") = 0ULL)
      .def("add",
           [](PyDistributedLoader& l, const std::filesystem::path& path) {
             py::gil_scoped_release release;
             l.add(path);
           })
      .def(
          "fail",
          [invalid_file_error](PyDistributedLoader& l, const py::object& exc) {
            try {
              throw_as_cpp(exc, py::handle(invalid_file_error));
            } catch (const std::exception& e) {
              py::gil_scoped_release release;
              l.fail(e);
            }
          },
          py::arg("error"))
      .def(
          "load",
          [](PyDistributedLoader& l, const std::optional<std::vector<Segment>>& segments,
             bool on_request, const py::object& progress) {
            const Delivery delivery = on_request ? Delivery::kOnRequest : Delivery::kAll;
            l.cancel_flag().store(false);
            l.reset_progress();
            call_cancellable(
                [&] {
                  if (segments) {
                    (void)l.load(*segments, delivery);
                  } else {
                    (void)l.load(delivery);
                  }
                },
                l.cancel_flag(), l.tick(progress), [&] { l.release(); });
            return stats_dict(l);
          },
          py::arg("segments") = py::none(), py::arg("on_request") = false,
          py::arg("progress") = py::none())
      .def("tensor",
           [](PyDistributedLoader& l, const std::string& name) {
             py::gil_scoped_release release;
             return ExportedTensor(l.tensor(name), 0);
           })
      .def("shard",
           [](PyDistributedLoader& l, const std::string& name, int dim) {
             py::gil_scoped_release release;
             return ExportedTensor(l.shard(name, dim), 0);
           })
      .def("push",
           [](PyDistributedLoader& l, const std::string& name,
              int dst) -> std::optional<ExportedTensor> {
             py::gil_scoped_release release;
             auto v = l.push(name, dst);
             if (!v) return std::nullopt;
             return ExportedTensor(std::move(*v), 0);
           })
      .def("keys", [](const PyDistributedLoader& l) { return l.keys(); })
      .def(
          "plan_chunks",
          [](const PyDistributedLoader& l, std::uint64_t memory_limit, unsigned parts) {
            return chunk_list(l.files(), memory_limit, parts);
          },
          py::arg("memory_limit") = 0ULL, py::arg("parts") = 2U)
      .def_property_readonly("stats", [](const PyDistributedLoader& l) { return stats_dict(l); })
      .def_property_readonly("loaded", [](const PyDistributedLoader& l) { return l.loaded(); })
      .def_property_readonly("rank", [](const PyDistributedLoader& l) { return l.rank(); })
      .def_property_readonly("total_bytes",
                             [](const PyDistributedLoader& l) { return l.total_bytes(); })
      .def_property_readonly("world", [](const PyDistributedLoader& l) { return l.world(); })
      .def("release", [](PyDistributedLoader& l) { l.release(); });
}

}  // namespace warpload::python
