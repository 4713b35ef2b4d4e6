// NcclCollective: warpload::Collective over an NCCL communicator on one CUDA device.
//
// Every operation is queued on the collective's own stream, then waited for by polling an
// event and ncclCommGetAsyncError: past the timeout (or on an asynchronous NCCL error) the
// communicator is aborted, so no rank waits forever, and CollectiveError is thrown.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "device/cuda_shim.hpp"
#include "device/nccl_shim.hpp"
#include "warpload/distributed.hpp"

namespace warpload {
namespace {

constexpr std::size_t kStatusBytes = 1024;  // per rank, in all_gather_status

class NcclCollective final : public Collective {
 public:
  NcclCollective(ncclComm_t comm, int rank, int world, int device, int timeout_ms)
      : api_(detail::nccl_api()),
        comm_(comm),
        rank_(rank),
        world_(world),
        device_(device),
        timeout_(timeout_ms),
        stream_(device),
        event_(device) {}

  ~NcclCollective() override {
    if (comm_ == nullptr) return;
    detail::CudaContextScope scope(device_);
    (broken_ ? api_.comm_abort : api_.comm_destroy)(comm_);
  }
  NcclCollective(const NcclCollective&) = delete;
  NcclCollective& operator=(const NcclCollective&) = delete;

  [[nodiscard]] int rank() const noexcept override { return rank_; }
  [[nodiscard]] int size() const noexcept override { return world_; }
  [[nodiscard]] MemoryKind memory() const noexcept override { return MemoryKind::kDevice; }

  void all_gather(std::span<const std::byte> in,
                  std::span<const std::span<std::byte>> out) override {
    usable("all_gather");
    const std::size_t n = in.size();
    if (out.size() != static_cast<std::size_t>(world_)) {
      throw std::invalid_argument("NCCL all_gather: " + std::to_string(out.size()) +
                                  " outputs for " + std::to_string(world_) + " ranks");
    }
    if (n == 0) return;
    bool consecutive = true;
    for (std::size_t q = 0; q < out.size(); ++q) {
      consecutive = consecutive && out[q].size() == n && out[q].data() == out[0].data() + q * n;
    }
    detail::CudaContextScope scope(device_);
    if (consecutive) {
      check(api_.all_gather(in.data(), out[0].data(), n, WARPLOAD_NCCL_UINT8, comm_,
                            stream_.get()),
            "ncclAllGather");
    } else {
      // Any layout: one broadcast per root, fused into one NCCL group.
      check(api_.group_start(), "ncclGroupStart");
      for (int q = 0; q < world_; ++q) {
        const void* send = q == rank_ ? static_cast<const void*>(in.data()) : nullptr;
        check(api_.broadcast(send, out[static_cast<std::size_t>(q)].data(), n,
                             WARPLOAD_NCCL_UINT8, q, comm_, stream_.get()),
              "ncclBroadcast");
      }
      check(api_.group_end(), "ncclGroupEnd");
    }
    wait("all_gather");
  }

  void broadcast(std::span<std::byte> data, int root) override {
    usable("broadcast");
    if (data.empty()) return;
    detail::CudaContextScope scope(device_);
    check(api_.broadcast(data.data(), data.data(), data.size(), WARPLOAD_NCCL_UINT8, root, comm_,
                         stream_.get()),
          "ncclBroadcast");
    wait("broadcast");
  }

  void exchange(std::span<const Transfer> sends, std::span<const Transfer> receives) override {
    usable("exchange");
    if (sends.empty() && receives.empty()) return;
    detail::CudaContextScope scope(device_);
    check(api_.group_start(), "ncclGroupStart");
    for (const Transfer& t : sends) {
      check(api_.send(t.data.data(), t.data.size(), WARPLOAD_NCCL_UINT8, t.peer, comm_,
                      stream_.get()),
            "ncclSend");
    }
    for (const Transfer& t : receives) {
      check(api_.recv(t.data.data(), t.data.size(), WARPLOAD_NCCL_UINT8, t.peer, comm_,
                      stream_.get()),
            "ncclRecv");
    }
    check(api_.group_end(), "ncclGroupEnd");
    wait("exchange");
  }

  std::vector<std::string> all_gather_status(const std::string& status) override {
    usable("all_gather_status");
    const detail::CudaApi& cuda = detail::cuda_api();
    detail::CudaContextScope scope(device_);
    const std::size_t total = kStatusBytes * static_cast<std::size_t>(world_);
    CUdeviceptr scratch = 0;
    detail::cuda_check(cuda.mem_alloc(&scratch, total + kStatusBytes),
                       "cuMemAlloc for the NCCL status exchange");
    struct Free {
      const detail::CudaApi& cuda;
      CUdeviceptr p;
      ~Free() { cuda.mem_free(p); }
    } free_scratch{cuda, scratch};
    std::vector<char> host(total, '\0');
    const std::size_t n = std::min(status.size(), kStatusBytes - 1);
    std::memcpy(host.data(), status.data(), n);
    std::byte* in = detail::from_device_ptr(scratch + total);
    detail::copy_to_device_async(in, host.data(), kStatusBytes, stream_);
    stream_.synchronize();
    check(api_.all_gather(in, detail::from_device_ptr(scratch), kStatusBytes,
                          WARPLOAD_NCCL_UINT8, comm_, stream_.get()),
          "ncclAllGather");
    wait("all_gather_status");
    detail::copy_to_host(host.data(), detail::from_device_ptr(scratch), total, device_);
    std::vector<std::string> out;
    for (int q = 0; q < world_; ++q) {
      const char* text = host.data() + static_cast<std::size_t>(q) * kStatusBytes;
      out.emplace_back(text, strnlen(text, kStatusBytes));
    }
    return out;
  }

 private:
  std::string where(const char* op) const {
    return std::string("NCCL ") + op + " (rank " + std::to_string(rank_) + " of " +
           std::to_string(world_) + ", cuda:" + std::to_string(device_) + ", " + api_.library +
           ")";
  }

  void usable(const char* op) const {
    if (broken_) {
      throw CollectiveError(where(op) + ": the communicator was aborted by an earlier failure",
                            EIO);
    }
  }

  void check(ncclResult_t result, const char* what) {
    if (result == WARPLOAD_NCCL_SUCCESS) return;
    abort();
    throw CollectiveError(where(what) + ": " + api_.get_error_string(result), EIO);
  }

  void abort() noexcept {
    if (broken_ || comm_ == nullptr) return;
    broken_ = true;
    api_.comm_abort(comm_);
    comm_ = nullptr;
  }

  // Waits for the work queued so far, bounded by the timeout and NCCL's asynchronous errors.
  void wait(const char* op) {
    event_.record(stream_);
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (!event_.query()) {
      ncclResult_t async = WARPLOAD_NCCL_SUCCESS;
      api_.comm_get_async_error(comm_, &async);
      if (async != WARPLOAD_NCCL_SUCCESS && async != WARPLOAD_NCCL_IN_PROGRESS) {
        const std::string reason = api_.get_error_string(async);
        abort();
        throw CollectiveError(where(op) + ": " + reason + " (a peer failed or left)", EIO);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        abort();
        throw CollectiveError(where(op) + ": timed out after " +
                                  std::to_string(timeout_.count()) +
                                  " ms waiting for the peers; communicator aborted",
                              ETIMEDOUT);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  const detail::NcclApi& api_;
  ncclComm_t comm_;
  int rank_;
  int world_;
  int device_;
  std::chrono::milliseconds timeout_;
  detail::CudaStream stream_;
  detail::CudaEvent event_;
  bool broken_ = false;
};

}  // namespace

NcclUniqueId nccl_unique_id() {
  const detail::NcclApi& api = detail::nccl_api();
  ncclUniqueId id{};
  const ncclResult_t result = api.get_unique_id(&id);
  if (result != WARPLOAD_NCCL_SUCCESS) {
    throw UnsupportedError("ncclGetUniqueId (" + api.library + "): " +
                           api.get_error_string(result));
  }
  NcclUniqueId out{};
  static_assert(sizeof(out.bytes) == sizeof(id.internal));
  std::memcpy(out.bytes, id.internal, sizeof(out.bytes));
  return out;
}

std::shared_ptr<Collective> make_nccl_collective(const NcclUniqueId& id, int rank, int world,
                                                 int cuda_device, int timeout_ms) {
  if (world < 1 || rank < 0 || rank >= world) {
    throw std::invalid_argument("make_nccl_collective: rank " + std::to_string(rank) +
                                " is not in [0, world=" + std::to_string(world) + ")");
  }
  if (timeout_ms <= 0) throw std::invalid_argument("make_nccl_collective: timeout_ms must be > 0");
  const detail::NcclApi& api = detail::nccl_api();
  detail::check_cuda_device(cuda_device);
  ncclUniqueId raw{};
  std::memcpy(raw.internal, id.bytes, sizeof(raw.internal));

  // ncclCommInitRank blocks until every rank has joined and cannot be interrupted, so it runs
  // on a helper thread and this call waits at most `timeout_ms`. Past that, the helper is
  // abandoned (it stays blocked in NCCL; should the missing ranks ever join, it aborts the
  // communicator nobody will use) and CollectiveError names what did not happen.
  struct Init {
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    bool abandoned = false;
    ncclComm_t comm = nullptr;
    ncclResult_t result = WARPLOAD_NCCL_SUCCESS;
    std::string error;  // a CUDA failure before NCCL was called
  };
  auto init = std::make_shared<Init>();
  std::thread([init, &api, raw, world, rank, cuda_device] {
    ncclComm_t comm = nullptr;
    ncclResult_t result = WARPLOAD_NCCL_SUCCESS;
    std::string error;
    try {
      const detail::CudaContextScope scope(cuda_device);
      result = api.comm_init_rank(&comm, world, raw, rank);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const std::lock_guard lock(init->mutex);
    if (init->abandoned) {
      if (result == WARPLOAD_NCCL_SUCCESS && comm != nullptr) (void)api.comm_abort(comm);
      return;
    }
    init->done = true;
    init->comm = comm;
    init->result = result;
    init->error = std::move(error);
    init->done_cv.notify_all();
  }).detach();
  ncclComm_t comm = nullptr;
  ncclResult_t result = WARPLOAD_NCCL_SUCCESS;
  {
    std::unique_lock lock(init->mutex);
    if (!init->done_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                [&] { return init->done; })) {
      init->abandoned = true;
      throw CollectiveError("ncclCommInitRank (rank " + std::to_string(rank) + " of " +
                                std::to_string(world) + ", cuda:" + std::to_string(cuda_device) +
                                "): not every rank joined within " + std::to_string(timeout_ms) +
                                " ms (a rank missing, or given another unique id)",
                            ETIMEDOUT);
    }
    if (!init->error.empty()) throw UnsupportedError(init->error);
    comm = init->comm;
    result = init->result;
  }
  if (result != WARPLOAD_NCCL_SUCCESS) {
    throw CollectiveError("ncclCommInitRank (rank " + std::to_string(rank) + " of " +
                              std::to_string(world) + ", cuda:" + std::to_string(cuda_device) +
                              ", " + api.library + "): " + api.get_error_string(result),
                          EIO);
  }
  return std::make_shared<NcclCollective>(comm, rank, world, cuda_device, timeout_ms);
}

bool nccl_available() noexcept {
  try {
    (void)detail::nccl_api();
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace warpload
