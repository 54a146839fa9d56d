// Pool design: one job at a time. The caller publishes the job (bumps a generation counter),
// every worker wakes, pulls item indices from a shared atomic counter until none are left, and
// reports back; the caller pulls items too, then waits until every worker has reported, so the
// job's closure never outlives the call. Workers spin briefly before sleeping because kernel calls
// arrive back to back (a condition-variable wake-up alone costs tens of microseconds).
#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "core/check.h"

namespace cllm::cpu {
namespace {

thread_local bool t_inside_pool = false;  // set while this thread runs pool items

class Pool {
 public:
  explicit Pool(int size) { start(size); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int size) {
    std::lock_guard<std::mutex> call(call_mu_);
    stop();
    start(size);
  }

  void run(size_t n, const std::function<void(size_t)>& fn) {
    if (n == 0) return;
    if (t_inside_pool || workers_.empty() || n == 1) {
      for (size_t i = 0; i < n; ++i) fn(i);
      return;
    }
    std::lock_guard<std::mutex> call(call_mu_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      n_items_ = n;
      next_.store(0, std::memory_order_relaxed);
      reported_.store(0, std::memory_order_relaxed);
      error_ = nullptr;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work();
    // Spin first: the workers finish within microseconds of the caller, and sleeping on done_
    // costs a futex wake-up (tens of microseconds) on every kernel call of a decode step.
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
    while (reported_.load(std::memory_order_acquire) != workers_.size() &&
           std::chrono::steady_clock::now() < spin_until) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return reported_.load(std::memory_order_acquire) == workers_.size(); });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void start(int size) {
    CLLM_CHECK(size >= 1, "thread pool size must be >= 1, got " << size);
    quit_ = false;
    // The generation is read here, not in the new thread: a thread that starts late must still
    // see the first job published after this point as new.
    const uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 1; i < size; ++i) workers_.emplace_back([this, gen] { worker_loop(gen); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      quit_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  // Pulls items of the current job until the counter runs past the end.
  void work() {
    t_inside_pool = true;
    for (size_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_items_;) {
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_items_, std::memory_order_relaxed);  // abandon the remaining items
      }
    }
    t_inside_pool = false;
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      // 50 us of spinning covers the gap between consecutive kernels of one forward pass.
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (generation_.load(std::memory_order_acquire) == seen &&
             std::chrono::steady_clock::now() < spin_until) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        seen = generation_.load(std::memory_order_acquire);
        if (quit_) return;
      }
      work();
      {
        std::lock_guard<std::mutex> lk(mu_);
        reported_.fetch_add(1, std::memory_order_release);
      }
      done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one job at a time (and no resize during a job)
  std::mutex mu_;       // guards the job fields below, reported_, error_, quit_
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0};
  const std::function<void(size_t)>* fn_ = nullptr;
  size_t n_items_ = 0;
  std::atomic<size_t> next_{0};
  std::atomic<size_t> reported_{0};  // written under mu_, read by the caller's spin
  std::exception_ptr error_;
  bool quit_ = false;
};

Pool& pool() {
  static Pool p(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return p;
}

}  // namespace

void parallel_for(size_t n, const std::function<void(size_t)>& fn) { pool().run(n, fn); }

void parallel_for_range(size_t total, size_t min_grain, const std::function<void(size_t, size_t)>& fn) {
  min_grain = std::max<size_t>(min_grain, 1);
  const size_t max_chunks = static_cast<size_t>(pool_size()) * 4;
  const size_t chunks = std::clamp<size_t>(total / min_grain, 1, max_chunks);
  if (chunks == 1) {
    if (total > 0) fn(0, total);
    return;
  }
  const size_t per = (total + chunks - 1) / chunks;
  parallel_for(chunks, [&](size_t c) {
    const size_t b = c * per, e = std::min(total, b + per);
    if (b < e) fn(b, e);
  });
}

void set_pool_size(int n) { pool().resize(n); }
int pool_size() { return pool().size(); }

}  // namespace cllm::cpu
