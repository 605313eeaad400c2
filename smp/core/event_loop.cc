#include "core/event_loop.h"

#include <utility>

namespace holdfast::smp {

EventLoop::EventLoop() : thread_([this] { Run(); }) {}

EventLoop::~EventLoop() { Stop(); }

void EventLoop::Post(Task task) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void EventLoop::PostAfter(Clock::duration delay, Task task) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    timers_.push({Clock::now() + delay, seq_++, std::move(task)});
  }
  cv_.notify_one();
}

void EventLoop::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable() && !InLoop()) thread_.join();
}

void EventLoop::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    while (!timers_.empty() && timers_.top().when <= Clock::now()) {
      tasks_.push_back(std::move(const_cast<Timed&>(timers_.top()).task));
      timers_.pop();
    }
    if (!tasks_.empty()) {
      Task task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
      continue;
    }
    if (stopping_) return;
    if (timers_.empty()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, timers_.top().when);
    }
  }
}

WorkerPool::WorkerPool(int threads) {
  if (threads < 1) threads = 1;
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      std::unique_lock lock(mu_);
      for (;;) {
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping and drained
        auto work = std::move(queue_.front());
        queue_.pop_front();
        lock.unlock();
        work();
        lock.lock();
      }
    });
  }
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkerPool::Submit(std::function<void()> work) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(work));
  }
  cv_.notify_one();
}

}  // namespace holdfast::smp
