// Reed-Solomon erasure codec over GF(2^8), backed by Intel ISA-L.
//
// A stripe has n = k + m chunks of equal length: chunks 0..k-1 hold data,
// chunks k..n-1 hold parity. The generator is systematic, [I_k ; C] with C a
// Cauchy matrix (ISA-L gf_gen_cauchy1_matrix), so ANY k of the n chunks
// determine the other m (every square submatrix of a Cauchy matrix is
// invertible, which ISA-L's Vandermonde-style gf_gen_rs_matrix does not
// guarantee).
//
//        data chunks (k)            parity chunks (m)
//   +------+------+-----+------+  +------+-----+------+
//   |  d0  |  d1  | ... | dk-1 |  |  p0  | ... | pm-1 |   all `len` bytes
//   +------+------+-----+------+  +------+-----+------+
//   chunk:  0      1      k-1      k            n-1
//
// ISA-L validates nothing; this class does: k and m ranges, null pointers,
// overlapping ranges, erasure counts. Bad input returns INVALID_ARGUMENT (or
// DATA_LOSS when fewer than k chunks survive); it never reaches ISA-L.
//
// Tables: the encode tables are built once in Create(). Decode tables depend
// on the erasure pattern and are built on first use and cached (bounded).
//
// Thread-safety: Encode and Decode are const and may run concurrently from any
// number of threads on one Codec (the decode-table cache is internally locked;
// no lock is held while bytes are coded).
#ifndef HOLDFAST_EC_CODEC_H_
#define HOLDFAST_EC_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "holdfast/ec/status.h"

namespace holdfast::ec {

// Bit i set = chunk i of a stripe (0..k-1 data, k..n-1 parity).
using ChunkMask = uint64_t;

inline constexpr int kMaxParityChunks = 8;  // m
inline constexpr int kMaxChunks = 64;       // k + m: one ChunkMask

inline constexpr ChunkMask ChunkBit(int i) { return ChunkMask{1} << i; }
inline constexpr ChunkMask AllChunks(int n) {
  return n >= 64 ? ~ChunkMask{0} : (ChunkMask{1} << n) - 1;
}
// "{0,3,5}" for diagnostics.
std::string MaskToString(ChunkMask mask);
// The lowest-numbered `count` chunks of `mask`, or 0 when it has fewer.
ChunkMask LowestChunks(ChunkMask mask, int count);

// OK when (k, m) is a code this library supports: 1 <= k, 1 <= m <=
// kMaxParityChunks, k + m <= kMaxChunks; INVALID_ARGUMENT otherwise.
Status CheckCodeParameters(int k, int m);

struct CodecOptions {
  int k = 4;  // data chunks per stripe: 1 <= k, k + m <= kMaxChunks
  int m = 2;  // parity chunks: 1 <= m <= kMaxParityChunks
  // Upper bound on cached decode-table sets (one per erasure pattern). When
  // full, the cache is cleared; tables in use stay alive until their decode
  // finishes.
  size_t decode_cache_entries = 4096;
};

class Codec {
 public:
  static Result<std::unique_ptr<Codec>> Create(const CodecOptions& options);

  ~Codec();
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  int k() const { return k_; }
  int m() const { return m_; }
  int n() const { return k_ + m_; }

  // The (k+m) x k generator matrix, row-major; rows 0..k-1 are the identity.
  // Exposed so that tests can check the bytes against an independent
  // implementation.
  std::span<const uint8_t> generator() const;

  // Computes the m parity chunks of `len` bytes from the k data chunks.
  // data.size() == k, parity.size() == m. Unless len == 0, no pointer may be
  // null, and no output range may overlap another output or any input
  // (inputs may alias each other: they are only read).
  Status Encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity,
                size_t len) const;

  // Rebuilds every chunk in `lost` from chunks in `available`, all `len`
  // bytes. chunks.size() == n; chunks[i] must point to `len` bytes for every i
  // in available | lost (others are ignored and may be null). `available` and
  // `lost` must be disjoint; outputs must not overlap each other or the chunks
  // read. Reads exactly the k chunks SurvivorsFor(available) names and writes
  // only the chunks in `lost`. With valid masks, lost == 0 writes nothing.
  // Errors: DATA_LOSS when fewer than k chunks are available, INVALID_ARGUMENT
  // for malformed masks, null pointers or overlapping ranges.
  Status Decode(std::span<uint8_t* const> chunks, ChunkMask available, ChunkMask lost,
                size_t len) const;

  // The k chunks Decode reads for this availability: the lowest-numbered k
  // (data first, so rebuilding from intact data skips the matrix inverse).
  // Returns 0 when fewer than k are available.
  ChunkMask SurvivorsFor(ChunkMask available) const;

 private:
  struct DecodeTables;
  class DecodeCache;
  Codec(int k, int m, size_t cache_entries);
  Result<std::shared_ptr<const DecodeTables>> TablesFor(ChunkMask survivors, ChunkMask lost) const;

  const int k_;
  const int m_;
  std::unique_ptr<uint8_t[]> generator_;    // (k+m) * k
  std::unique_ptr<uint8_t[]> encode_tbls_;  // 32 * k * m, ISA-L expanded form
  std::unique_ptr<DecodeCache> cache_;
};

}  // namespace holdfast::ec

#endif  // HOLDFAST_EC_CODEC_H_
