// The stripe layout of an erasure-coded group: pure computation, no I/O and
// no coding (the Codec does the arithmetic; this class says which bytes).
//
// A group has n = k + m nodes, at positions 0..n-1. Node i snapshots a data
// buffer of S_i bytes (sizes may differ). Each node splits its buffer into k
// pieces of P_i = roundup(ceil(S_i / k), alignment) bytes (the last ones may
// be short or empty). There are n stripes; stripe r is made of
//
//   data chunk c (c = 0..k-1)   = piece c of node (r + c) mod n
//   parity chunk p (p = 0..m-1) = stored on node (r + k + p) mod n
//
// so node i is chunk (i - r) mod n of stripe r. For n = 3, k = 2, m = 1:
//
//            node 0      node 1      node 2
//   stripe 0 piece 0     piece 1     parity
//   stripe 1 parity      piece 0     piece 1
//   stripe 2 piece 1     parity      piece 0
//
// Properties this gives:
//   * every node keeps its own data whole, in place (a local restore needs no
//     peer);
//   * every stripe touches every node exactly once, so losing ANY m nodes
//     loses at most m chunks of each stripe: always recoverable;
//   * node i stores parity for m stripes; with equal sizes that is m/k of its
//     data, up to rounding.
//
// All chunks of stripe r are chunk_length(r) bytes long: the longest data piece
// in the stripe. A shorter (or empty) data piece is padded with virtual zeros
// that are never stored or sent. Node i's parity buffer is the concatenation
// of its parity chunks, ordered by parity index.
//
// Thread-safety: immutable after Create; all methods are const and safe to
// call concurrently.
#ifndef HOLDFAST_EC_LAYOUT_H_
#define HOLDFAST_EC_LAYOUT_H_

#include <cstdint>
#include <span>
#include <vector>

#include "holdfast/ec/codec.h"
#include "holdfast/ec/status.h"

namespace holdfast::ec {

// Bit i set = node at group position i.
using NodeMask = uint64_t;

struct LayoutOptions {
  int k = 4;
  int m = 2;
  // Data pieces start at multiples of this many bytes inside a node's buffer
  // (a power of two, >= 1). Page alignment keeps pieces registrable and
  // mappable on their own.
  uint64_t alignment = 4096;
};

// A byte range in one node's data buffer (kData) or parity buffer (kParity).
struct Extent {
  enum class Buffer : uint8_t { kData, kParity };
  int node = 0;
  Buffer buffer = Buffer::kData;
  uint64_t offset = 0;
  uint64_t length = 0;  // real bytes; may be less than the chunk length
  friend bool operator==(const Extent&, const Extent&) = default;
};

// What to read and write to rebuild one stripe after losing some nodes.
struct StripeRebuild {
  int stripe = 0;
  ChunkMask lost = 0;  // chunks of this stripe that lived on lost nodes
  ChunkMask read = 0;  // the k surviving chunks to read (Codec::SurvivorsFor)
};

class GroupLayout {
 public:
  // node_bytes.size() must be k + m. Errors: INVALID_ARGUMENT for k, m out of
  // Codec's range, a bad alignment or a wrong number of nodes.
  static Result<GroupLayout> Create(const LayoutOptions& options,
                                    std::span<const uint64_t> node_bytes);

  int k() const { return k_; }
  int m() const { return m_; }
  int n() const { return k_ + m_; }
  int num_stripes() const { return n(); }

  uint64_t data_bytes(int node) const { return node_bytes_[node]; }
  uint64_t piece_bytes(int node) const { return piece_bytes_[node]; }
  uint64_t parity_bytes(int node) const { return parity_bytes_[node]; }
  uint64_t chunk_length(int stripe) const { return chunk_length_[stripe]; }

  // The node that holds chunk `chunk` (0..n-1) of `stripe`, and the reverse.
  int NodeOf(int stripe, int chunk) const { return (stripe + chunk) % n(); }
  int ChunkOf(int stripe, int node) const { return (node - stripe + n()) % n(); }

  // Where chunk `chunk` of `stripe` lives: a data extent for chunk < k (its
  // length is the real bytes, the rest of the chunk is virtual zeros), a
  // parity extent of chunk_length(stripe) bytes otherwise.
  Extent ChunkExtent(int stripe, int chunk) const;

  // Per stripe, the chunks lost with `lost_nodes` and the k to read. Stripes
  // are listed in order; a stripe with nothing lost is omitted.
  // Errors: DATA_LOSS naming the nodes when more than m are lost,
  // INVALID_ARGUMENT for bits beyond n.
  Result<std::vector<StripeRebuild>> PlanRebuild(NodeMask lost_nodes) const;

 private:
  GroupLayout() = default;

  int k_ = 0;
  int m_ = 0;
  std::vector<uint64_t> node_bytes_;
  std::vector<uint64_t> piece_bytes_;
  std::vector<uint64_t> chunk_length_;  // per stripe
  std::vector<uint64_t> parity_bytes_;  // per node
  std::vector<uint64_t>
      parity_offset_;  // per (stripe): offset inside its holder's buffer, by chunk
};

}  // namespace holdfast::ec

#endif  // HOLDFAST_EC_LAYOUT_H_
