#include "copy_engine.h"

#include <algorithm>
#include <cstring>

#include "holdfast/ec/checksum.h"

namespace holdfast::client::internal {
namespace {

// Below this a call runs on the calling thread: waking workers costs more.
constexpr uint64_t kParallelMin = uint64_t{2} << 20;

uint64_t CopyPiecewise(uint8_t* dst, const uint8_t* src, uint64_t n) {
  if (src == nullptr) return ec::Checksum({dst, n});  // checksum only
  uint64_t sum = 0;
  for (uint64_t at = 0; at < n; at += CopyEngine::kPiece) {
    const uint64_t len = std::min(CopyEngine::kPiece, n - at);
    std::memcpy(dst + at, src + at, len);
    sum = ec::Checksum({dst + at, len}, sum);
  }
  return sum;
}

}  // namespace

CopyEngine::CopyEngine(int threads) {
  if (threads <= 0) {
    threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
  }
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

CopyEngine::~CopyEngine() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void CopyEngine::WorkerLoop() {
  uint64_t seen = 0;
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    lock.unlock();
    Drain();
    lock.lock();
    if (--pending_ == 0) done_.notify_all();
  }
}

void CopyEngine::Drain() {
  for (;;) {
    const size_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= slices_.size()) return;
    const Slice& s = slices_[i];
    const CopyJob& job = jobs_[s.job];
    slice_sums_[i] = CopyPiecewise(job.dst + s.offset, job.src ? job.src + s.offset : nullptr, s.bytes);
  }
}

void CopyEngine::CopyAndChecksum(std::span<const CopyJob> jobs, std::span<uint64_t> sums) {
  std::lock_guard call(call_mu_);
  uint64_t total = 0;
  for (const CopyJob& job : jobs) total += job.bytes;
  if (workers_.empty() || total < kParallelMin) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      sums[i] = CopyPiecewise(jobs[i].dst, jobs[i].src, jobs[i].bytes);
    }
    return;
  }

  slices_.clear();
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (uint64_t off = 0; off < jobs[j].bytes; off += kSlice) {
      slices_.push_back({static_cast<uint32_t>(j), off, std::min(kSlice, jobs[j].bytes - off)});
    }
  }
  slice_sums_.assign(slices_.size(), 0);
  jobs_ = jobs;
  next_.store(0, std::memory_order_relaxed);
  {
    // The mutex orders the writes above before any worker reads them.
    std::lock_guard lock(mu_);
    ++generation_;
    pending_ = static_cast<int>(workers_.size());
  }
  wake_.notify_all();
  Drain();
  {
    // Every worker checks in once per generation, even one that wakes after
    // the slices ran out, so none can still be reading this call's state
    // when the next call rewrites it.
    std::unique_lock lock(mu_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }

  size_t s = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    uint64_t sum = 0;
    for (; s < slices_.size() && slices_[s].job == j; ++s) {
      sum = ec::ChecksumCombine(sum, slice_sums_[s], slices_[s].bytes);
    }
    sums[j] = sum;
  }
  jobs_ = {};
}

}  // namespace holdfast::client::internal
