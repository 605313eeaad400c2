// libholdfast: the trainer's side of holdfast.
//
// A Client talks to the holdfastd of its node over a Unix socket (gRPC) and
// moves snapshot bytes through shared memory the daemon owns: a snapshot is
// copied once into the daemon's segment (checksumming each piece while it is
// still in cache, on several threads), then committed; a restore copies a
// committed version out and checks every byte against the recorded
// checksums.
//
// Snapshots are asynchronous. SaveAsync returns at once with a handle; a
// pipeline thread reserves space, copies the items (host memory directly,
// CUDA device memory with cudaMemcpyAsync into the registered segment) and
// commits. The handle reports "staged" once the library no longer reads the
// caller's buffers (the trainer may change its tensors again) and "done"
// once the version is committed or the snapshot failed. Errors surface on the
// handle, never silently. Snapshots run one at a time in the order they were
// asked for; staging of one overlaps with whatever the caller does next.
//
// Mappings: the daemon reuses segments, and mapping a segment is expensive
// on first touch, so the client keeps recent mappings (by path) and writes
// the next snapshot of the same size into an already-mapped segment.
//
// Thread-safety: every Client method may be called from any thread. A
// SnapshotHandle may be waited on from any thread, but is not itself
// synchronized (do not move it while another thread waits on it).
#ifndef HOLDFAST_CLIENT_CLIENT_H_
#define HOLDFAST_CLIENT_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "holdfast/ec/status.h"

namespace holdfast::client {

// Element types; the numbering matches holdfast.v1.DType.
enum class DType : int {
  kBytes = 1,  // an opaque blob: empty shape, any size
  kBool = 2,
  kUInt8 = 3,
  kInt8 = 4,
  kInt16 = 5,
  kUInt16 = 6,
  kInt32 = 7,
  kUInt32 = 8,
  kInt64 = 9,
  kUInt64 = 10,
  kFloat16 = 11,
  kBFloat16 = 12,
  kFloat32 = 13,
  kFloat64 = 14,
  kComplex32 = 15,
  kComplex64 = 16,
  kComplex128 = 17,
  kFloat8E4M3FN = 18,
  kFloat8E5M2 = 19,
};

// Where an item's bytes live.
enum class Device : int {
  kCpu = 0,
  kCuda = 1,  // device memory of CUDA device `device_index`
};

struct Options {
  // "unix:/run/holdfast/holdfastd.sock" or any gRPC target.
  std::string endpoint = "unix:/run/holdfast/holdfastd.sock";
  std::string job_id;
  int rank = 0;
  int world_size = 1;
  // Ranks of the job on this node; empty means just `rank`.
  std::vector<int> local_ranks;
  std::chrono::milliseconds rpc_timeout{60000};
  // Holds a session stream open so that the daemon cleans up at once if this
  // process dies mid-snapshot (otherwise it waits for its write timeout).
  bool open_session = true;
  // Mappings of daemon segments kept for reuse.
  int mapping_cache = 8;
  // Threads that copy and checksum snapshot bytes, the calling thread
  // included; 0 picks min(hardware threads, 4).
  int copy_threads = 0;
  // This client is the trainer: a restore before its first save resumes the
  // job from that step (the Python package sets it; tools that only read
  // leave it off). In a cluster the daemon then stops offering its newer
  // local steps, the crashed run's, for protection (docs/cluster.md).
  bool restore_resumes = false;
};

// One item to save: `nbytes` at `data` (host memory, or device memory of
// CUDA device `device_index`), which must stay unchanged until the snapshot
// is staged.
struct ItemView {
  std::string name;
  DType dtype = DType::kBytes;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
  Device device = Device::kCpu;
  int device_index = 0;
};

// One item of a stored version.
struct ItemInfo {
  std::string name;
  DType dtype = DType::kBytes;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  uint64_t checksum = 0;
};

// A caller buffer to restore one item into; nbytes must equal the item's.
struct RestoreTarget {
  std::string name;
  void* data = nullptr;
  uint64_t nbytes = 0;
};

struct SaveStats {
  int64_t step = 0;
  uint64_t bytes = 0;
  bool version_complete = false;  // every local rank has committed the step
  double queue_seconds = 0;       // waiting for earlier snapshots of this client
  double begin_seconds = 0;       // reservation round trip (and mapping)
  double copy_seconds = 0;        // copy + checksum into shared memory
  double commit_seconds = 0;      // commit round trip (catalog write; verification
                                  // too if the daemon verifies at commit)
  double daemon_verify_seconds = 0;  // of commit_seconds, the daemon's checksum pass
  int copy_threads = 0;
};

// The caller's view of one asynchronous snapshot. Move-only. Destroying a
// handle waits until the snapshot is staged (so the library never reads the
// caller's buffers after the handle is gone), then lets the commit finish on
// its own.
class SnapshotHandle {
 public:
  SnapshotHandle() = default;
  SnapshotHandle(SnapshotHandle&&) noexcept;
  SnapshotHandle& operator=(SnapshotHandle&&) noexcept;
  SnapshotHandle(const SnapshotHandle&) = delete;
  SnapshotHandle& operator=(const SnapshotHandle&) = delete;
  ~SnapshotHandle();

  bool valid() const { return state_ != nullptr; }
  int64_t step() const;

  // Non-blocking. staged(): the library is done with the caller's buffers
  // (also true once the snapshot failed). done(): committed or failed.
  bool staged() const;
  bool done() const;

  // Blocks until staged; returns the snapshot's error if it failed before
  // or while staging.
  Status WaitStaged();
  // Blocks until done; the statistics of the committed snapshot or its error.
  Result<SaveStats> Wait();
  // As above with a time limit: DEADLINE_EXCEEDED if not reached in time.
  Status WaitStagedFor(std::chrono::milliseconds timeout);
  Result<SaveStats> WaitFor(std::chrono::milliseconds timeout);

  struct State;  // shared with the pipeline

 private:
  friend class Client;
  explicit SnapshotHandle(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

struct RestoreStats {
  int64_t step = 0;
  uint64_t bytes = 0;
  double open_seconds = 0;  // lease round trip (and mapping)
  double copy_seconds = 0;  // copy out + checksum
};

// A version restored into library-owned memory.
struct RestoredItem {
  ItemInfo info;
  std::unique_ptr<uint8_t[]> data;
};
struct RestoredSnapshot {
  int64_t step = 0;
  std::vector<RestoredItem> items;
  RestoreStats stats;
};

// Readies memory that was just allocated and not yet written, to restore
// into: backs its 2 MiB-aligned interior with transparent huge pages where the
// kernel allows it, and populates its page tables in one call. On the VMs we
// measure on, writing 1 GiB of fresh 4 KiB pages costs ~3.4 s, ~0.1-0.4 s
// this way. Best effort: failures only cost speed. RestoreAll does it for its
// own buffers.
void PrepareFreshMemory(void* data, uint64_t nbytes);

class Client {
 public:
  // Connects, registers the job (idempotent) and opens a session.
  static Result<std::unique_ptr<Client>> Connect(const Options& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Starts saving `items` as this rank's snapshot of `step` and returns at
  // once. Item names must be unique; nbytes must agree with dtype and shape
  // (the daemon checks). The buffers must stay unchanged until the handle is
  // staged. On error nothing of this step is committed for this rank.
  SnapshotHandle SaveAsync(int64_t step, std::span<const ItemView> items);

  // SaveAsync(...).Wait().
  Result<SaveStats> Save(int64_t step, std::span<const ItemView> items);

  // The step to resume from, or nullopt. Alone: the newest step every rank
  // of the job on this node has committed. In a cluster: the restore point,
  // the newest step protected in every group, which every node reports
  // alike (a protection round finishing between two ranks' calls can move it
  // forward, never back: a job should take the minimum over its ranks).
  Result<std::optional<int64_t>> LatestStep();

  // The items of this rank's part of `step` (nullopt: the newest).
  Result<std::vector<ItemInfo>> ListItems(std::optional<int64_t> step);

  // Copies the named items of `step` (nullopt: the newest) into the caller's
  // buffers, verifying checksums. DATA_LOSS if any byte differs.
  Result<RestoreStats> Restore(std::optional<int64_t> step, std::span<const RestoreTarget> targets);

  // Every item of `step` (nullopt: newest) into library-allocated buffers.
  Result<RestoredSnapshot> RestoreAll(std::optional<int64_t> step);

  // Frees one step of the job (or every step when nullopt).
  Status Drop(std::optional<int64_t> step);

  const Options& options() const;
  // Threads that copy and checksum (the pipeline's included).
  int copy_threads() const;
  // Whether this process can stage CUDA device memory (built with CUDA and a
  // device is present).
  static bool CudaAvailable();

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace holdfast::client

#endif  // HOLDFAST_CLIENT_CLIENT_H_
