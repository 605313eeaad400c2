// libholdfast: the trainer's side of holdfast.
//
// A Client talks to the holdfastd of its node over a Unix socket (gRPC) and
// moves snapshot bytes through shared memory the daemon owns: Save copies
// each item once into the daemon's segment, checksumming each piece while it
// is still in cache, then commits; Restore copies a committed version out
// and checks every byte against the recorded checksums.
//
// This is the synchronous core. Asynchronous snapshots, CUDA staging, the C
// ABI and the Python package are built on it (issue 4).
//
// Mappings: the daemon reuses segments, and mapping a segment is expensive
// on first touch, so the client keeps recent mappings (by path) and writes
// the next snapshot of the same size into an already-mapped segment.
//
// Thread-safety: a Client is not thread-safe; use one per thread, or guard
// it. Each call blocks until the daemon answers (or `rpc_timeout` passes).
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
};

// One item to save: `nbytes` at `data`, which must stay unchanged until Save
// returns.
struct ItemView {
  std::string name;
  DType dtype = DType::kBytes;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
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
  double begin_seconds = 0;       // reservation round trip (and mapping)
  double copy_seconds = 0;        // copy + checksum into shared memory
  double commit_seconds = 0;      // daemon verification and catalog write
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

class Client {
 public:
  // Connects, registers the job (idempotent) and opens a session.
  static Result<std::unique_ptr<Client>> Connect(const Options& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Saves `items` as this rank's snapshot of `step` and waits until it is
  // committed. Item names must be unique; nbytes must agree with dtype and
  // shape. On error nothing of this step is committed for this rank.
  Result<SaveStats> Save(int64_t step, std::span<const ItemView> items);

  // The newest step every local rank has committed, or nullopt.
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

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace holdfast::client

#endif  // HOLDFAST_CLIENT_CLIENT_H_
