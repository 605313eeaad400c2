// A single thread that runs posted tasks in order, and a small pool of
// worker threads for CPU work (checksums) that must not run on it.
//
// holdfastd keeps all of its snapshot state on one EventLoop: gRPC handlers
// post to it, workers post their results back to it, so that state has one
// owner and needs no locks.
//
// Thread-safety: Post/PostAfter/Submit may be called from any thread.
// Stop() joins; call it from outside the loop.
#ifndef HOLDFAST_SMP_CORE_EVENT_LOOP_H_
#define HOLDFAST_SMP_CORE_EVENT_LOOP_H_

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

namespace holdfast::smp {

class EventLoop {
 public:
  using Task = std::function<void()>;
  using Clock = std::chrono::steady_clock;

  EventLoop();
  ~EventLoop();  // Stop()s
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void Post(Task task);
  void PostAfter(Clock::duration delay, Task task);
  // Runs tasks already queued, then joins. Tasks posted afterwards are dropped.
  void Stop();
  bool InLoop() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  struct Timed {
    Clock::time_point when;
    uint64_t seq;
    Task task;
    bool operator>(const Timed& o) const { return when != o.when ? when > o.when : seq > o.seq; }
  };
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;                                                 // guarded by mu_
  std::priority_queue<Timed, std::vector<Timed>, std::greater<>> timers_;  // guarded by mu_
  uint64_t seq_ = 0;                                                       // guarded by mu_
  bool stopping_ = false;                                                  // guarded by mu_
  std::thread thread_;
};

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();  // finishes queued work, joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Submit(std::function<void()> work);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CORE_EVENT_LOOP_H_
