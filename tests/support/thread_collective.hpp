// ThreadCollective: warpload::Collective among the threads of one process, for tests of the
// DistributedLoader without a network. ThreadGroup(world, timeout) owns the shared state;
// member(rank) gives each thread its Collective. Every wait is bounded by the timeout: a rank
// that never arrives makes the others throw CollectiveError (ETIMEDOUT), and the group is then
// broken for everyone (as a real communicator would be).
//
// MemoryKind::kDevice makes the members claim device buffers, as NCCL's do: only for the fake
// CUDA driver (tests/fake_cuda), whose device memory is host memory the memcpy()s here reach.
#pragma once

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "warpload/distributed.hpp"

namespace warpload::testing {

class ThreadGroup : public std::enable_shared_from_this<ThreadGroup> {
 public:
  ThreadGroup(int world, std::chrono::milliseconds timeout, MemoryKind memory = MemoryKind::kHost)
      : world_(world),
        timeout_(timeout),
        memory_(memory),
        posted_(static_cast<std::size_t>(world)) {}

  [[nodiscard]] std::shared_ptr<Collective> member(int rank);

  // Collective rendezvous: publishes `mine`, waits for every rank's, runs `use` with all of
  // them, and waits until every rank has finished using them.
  void rendezvous(int rank, const void* mine, const char* op,
                  const std::function<void(const std::vector<const void*>&)>& use) {
    std::unique_lock lock(mutex_);
    posted_[static_cast<std::size_t>(rank)] = mine;
    arrive(lock, rank, op);
    const std::vector<const void*> all = posted_;
    lock.unlock();
    use(all);
    lock.lock();
    arrive(lock, rank, op);
  }

  // Point to point: a mailbox per (from, to).
  void post(int from, int to, std::span<std::byte> data) {
    std::lock_guard lock(mutex_);
    mail_[{from, to}] = Mail{data, false};
    wake_.notify_all();
  }
  void take(int from, int to, std::span<std::byte> dest, int rank) {
    std::unique_lock lock(mutex_);
    // A message already taken is the previous one, not yet cleared by its sender.
    wait(lock, rank, "recv", [&] {
      auto it = mail_.find({from, to});
      return it != mail_.end() && !it->second.taken;
    });
    Mail& m = mail_[{from, to}];
    if (m.data.size() != dest.size()) {
      broken_ = true;
      wake_.notify_all();
      throw CollectiveError("thread collective: rank " + std::to_string(to) + " expected " +
                                std::to_string(dest.size()) + " bytes from rank " +
                                std::to_string(from) + ", got " + std::to_string(m.data.size()),
                            EIO);
    }
    std::memcpy(dest.data(), m.data.data(), dest.size());
    m.taken = true;
    wake_.notify_all();
  }
  void await_taken(int from, int to, int rank) {
    std::unique_lock lock(mutex_);
    wait(lock, rank, "send", [&] {
      auto it = mail_.find({from, to});
      return it != mail_.end() && it->second.taken;
    });
    mail_.erase({from, to});
  }

  [[nodiscard]] int world() const noexcept { return world_; }
  [[nodiscard]] MemoryKind memory() const noexcept { return memory_; }

 private:
  struct Mail {
    std::span<std::byte> data;
    bool taken = false;
  };

  template <typename Pred>
  void wait(std::unique_lock<std::mutex>& lock, int rank, const char* op, Pred ready) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (!ready()) {
      if (broken_) {
        throw CollectiveError("thread collective " + std::string(op) + " (rank " +
                                  std::to_string(rank) + "): the group failed earlier",
                              EIO);
      }
      if (wake_.wait_until(lock, deadline) == std::cv_status::timeout && !ready()) {
        broken_ = true;
        wake_.notify_all();
        throw CollectiveError("thread collective " + std::string(op) + " (rank " +
                                  std::to_string(rank) + " of " + std::to_string(world_) +
                                  "): timed out after " + std::to_string(timeout_.count()) +
                                  " ms waiting for the peers",
                              ETIMEDOUT);
      }
    }
  }

  void arrive(std::unique_lock<std::mutex>& lock, int rank, const char* op) {
    const std::uint64_t generation = generation_;
    if (++arrived_ == world_) {
      arrived_ = 0;
      ++generation_;
      wake_.notify_all();
      return;
    }
    wait(lock, rank, op, [&] { return generation_ != generation; });
  }

  int world_;
  std::chrono::milliseconds timeout_;
  MemoryKind memory_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<const void*> posted_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  bool broken_ = false;
  std::map<std::pair<int, int>, Mail> mail_;
};

class ThreadCollective final : public Collective {
 public:
  ThreadCollective(std::shared_ptr<ThreadGroup> group, int rank)
      : group_(std::move(group)), rank_(rank) {}
  [[nodiscard]] int rank() const noexcept override { return rank_; }
  [[nodiscard]] int size() const noexcept override { return group_->world(); }
  [[nodiscard]] MemoryKind memory() const noexcept override { return group_->memory(); }

  void all_gather(std::span<const std::byte> in,
                  std::span<const std::span<std::byte>> out) override {
    ++calls;
    group_->rendezvous(rank_, &in, "all_gather", [&](const std::vector<const void*>& all) {
      for (std::size_t q = 0; q < all.size(); ++q) {
        const auto* src = static_cast<const std::span<const std::byte>*>(all[q]);
        if (src->data() != out[q].data()) std::memcpy(out[q].data(), src->data(), src->size());
      }
    });
  }
  void broadcast(std::span<std::byte> data, int root) override {
    ++calls;
    group_->rendezvous(rank_, &data, "broadcast", [&](const std::vector<const void*>& all) {
      const auto* src =
          static_cast<const std::span<std::byte>*>(all[static_cast<std::size_t>(root)]);
      if (root != rank_) std::memcpy(data.data(), src->data(), data.size());
    });
  }
  void exchange(std::span<const Transfer> sends, std::span<const Transfer> receives) override {
    ++calls;
    for (const Transfer& t : sends) group_->post(rank_, t.peer, t.data);
    for (const Transfer& t : receives) group_->take(t.peer, rank_, t.data, rank_);
    for (const Transfer& t : sends) group_->await_taken(rank_, t.peer, rank_);
  }
  std::vector<std::string> all_gather_status(const std::string& status) override {
    ++calls;
    std::vector<std::string> out;
    group_->rendezvous(rank_, &status, "all_gather_status",
                       [&](const std::vector<const void*>& all) {
                         for (const void* p : all)
                           out.push_back(*static_cast<const std::string*>(p));
                       });
    return out;
  }

  int calls = 0;  // operations this rank took part in

 private:
  std::shared_ptr<ThreadGroup> group_;
  int rank_;
};

inline std::shared_ptr<Collective> ThreadGroup::member(int rank) {
  return std::make_shared<ThreadCollective>(shared_from_this(), rank);
}

// Runs fn(rank, collective) on `world` threads of one ThreadGroup; returns each rank's
// exception (or null).
inline std::vector<std::exception_ptr> run_ranks(
    int world, std::chrono::milliseconds timeout,
    const std::function<void(int, std::shared_ptr<Collective>)>& fn,
    MemoryKind memory = MemoryKind::kHost) {
  auto group = std::make_shared<ThreadGroup>(world, timeout, memory);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r, group->member(r));
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

// "" when every rank of run_ranks() returned, else "rank R: <what>" of the first that threw.
inline std::string first_rank_error(const std::vector<std::exception_ptr>& errors) {
  for (std::size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      return "rank " + std::to_string(r) + ": " + e.what();
    } catch (...) {
      return "rank " + std::to_string(r) + ": unknown exception";
    }
  }
  return {};
}

}  // namespace warpload::testing
