// CopyEngine: copies a set of buffers and checksums what landed, on several
// threads.
//
// The copy of a snapshot into (or out of) the daemon's shared memory is one
// pass over the bytes; the CRC-64 of each piece is taken right after the
// piece is copied, while it is still in the core's L2, so it costs no second
// pass over memory. On one thread the checksum still adds ~30-45% to the copy;
// spread over two or more threads, copy and checksum together cost less than
// a single-threaded memcpy (bench/smp_bench measures it).
//
// Work is split into slices of up to kSlice bytes, taken from a shared
// counter by the calling thread and the engine's workers; the checksums of a
// buffer's slices are joined in order with ec::ChecksumCombine.
//
// Thread-safety: CopyAndChecksum may be called from several threads; calls
// run one at a time.
#ifndef HOLDFAST_CLIENT_SRC_COPY_ENGINE_H_
#define HOLDFAST_CLIENT_SRC_COPY_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace holdfast::client::internal {

// Copies `bytes` from src to dst; with src == nullptr only checksums dst
// (bytes a device copy already put there).
struct CopyJob {
  uint8_t* dst = nullptr;
  const uint8_t* src = nullptr;
  uint64_t bytes = 0;
};

class CopyEngine {
 public:
  // Bytes one thread takes at a time.
  static constexpr uint64_t kSlice = uint64_t{4} << 20;
  // Bytes copied and then checksummed from cache.
  static constexpr uint64_t kPiece = uint64_t{256} << 10;

  // `threads` counts the caller: 1 runs everything on the calling thread.
  // 0 picks min(hardware threads, 4).
  explicit CopyEngine(int threads);
  ~CopyEngine();
  CopyEngine(const CopyEngine&) = delete;
  CopyEngine& operator=(const CopyEngine&) = delete;

  // Copies every job (buffers must not overlap) and sets sums[i] to the
  // checksum of jobs[i]'s bytes as written to jobs[i].dst.
  void CopyAndChecksum(std::span<const CopyJob> jobs, std::span<uint64_t> sums);

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  struct Slice {
    uint32_t job = 0;
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  void WorkerLoop();
  // Takes slices until none are left.
  void Drain();

  std::mutex call_mu_;  // one call at a time

  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  uint64_t generation_ = 0;  // guarded by mu_
  int pending_ = 0;          // workers yet to finish this generation, guarded by mu_
  bool stop_ = false;        // guarded by mu_

  // The current call's work, set before a generation starts.
  std::span<const CopyJob> jobs_;
  std::vector<Slice> slices_;
  std::vector<uint64_t> slice_sums_;
  std::atomic<size_t> next_{0};

  std::vector<std::thread> workers_;
};

}  // namespace holdfast::client::internal

#endif  // HOLDFAST_CLIENT_SRC_COPY_ENGINE_H_
