// Codes whole stripes whose chunks may be shorter than the stripe (virtual
// zero padding, see layout.h), piece by piece, with checksums.
//
// A stripe's chunks are `chunk_length` bytes. Each chunk is given as a view of
// its real bytes: a data piece of a smaller node is shorter, and reads as
// zeros past its end. The coder walks the stripe in pieces of at most
// `piece_bytes` (default 1 MiB) so that callers can pipeline coding with
// transfer by coding a window at a time (EncodeRange), and so that the
// zero-padding and the partial-piece copies it needs stay bounded: at most
// one scratch piece per short chunk, never a padded copy of a whole chunk.
//
// Views follow Codec's aliasing rule over their real bytes: no output view
// may overlap another output or an input it reads; inputs may alias.
//
// Thread-safety: const methods, safe to call concurrently; scratch memory is
// per call.
#ifndef HOLDFAST_EC_STRIPE_CODER_H_
#define HOLDFAST_EC_STRIPE_CODER_H_

#include <cstdint>
#include <span>
#include <string>

#include "holdfast/ec/codec.h"
#include "holdfast/ec/status.h"

namespace holdfast::ec {

// The real bytes of one chunk: [data, data + size); bytes in
// [size, chunk_length) are zeros that are never stored.
struct ChunkView {
  uint8_t* data = nullptr;
  uint64_t size = 0;
};

inline constexpr uint64_t kDefaultPieceBytes = uint64_t{1} << 20;

// What a verified rebuild found and did.
struct RebuildReport {
  ChunkMask corrupted = 0;  // available chunks whose checksum did not match
  ChunkMask read = 0;       // the k chunks the rebuild read
  ChunkMask rebuilt = 0;    // chunks written (requested lost + corrupted)
  std::string ToString() const;
};

class StripeCoder {
 public:
  // `codec` must outlive the coder. piece_bytes is clamped to [4 KiB, 1 GiB].
  explicit StripeCoder(const Codec& codec, uint64_t piece_bytes = kDefaultPieceBytes);

  const Codec& codec() const { return codec_; }
  uint64_t piece_bytes() const { return piece_bytes_; }

  // Writes parity bytes [offset, offset + length) of a stripe.
  // data.size() == k; parity.size() == m with every parity view's size ==
  // chunk_length; data views' sizes <= chunk_length.
  Status EncodeRange(std::span<const ChunkView> data, std::span<const ChunkView> parity,
                     uint64_t chunk_length, uint64_t offset, uint64_t length) const;

  // EncodeRange over the whole stripe.
  Status Encode(std::span<const ChunkView> data, std::span<const ChunkView> parity,
                uint64_t chunk_length) const {
    return EncodeRange(data, parity, chunk_length, 0, chunk_length);
  }

  // Rebuilds the chunks in `lost` from those in `available` (see
  // Codec::Decode), writing each lost chunk's real bytes (its view's size).
  // chunks.size() == n; parity views must be chunk_length long.
  Status Rebuild(std::span<const ChunkView> chunks, ChunkMask available, ChunkMask lost,
                 uint64_t chunk_length) const;

  // Like Rebuild, but first checks every available chunk it may read against
  // `expected` (Checksum of each chunk's real bytes, indexed by chunk). A chunk
  // that does not match is reported in `corrupted`, treated as lost and
  // rebuilt in place (repaired); its bytes are never read. Only the chunks
  // the decode needs are verified: k of them, plus one more per corrupted
  // chunk found. The rebuilt chunks are then checked against
  // `expected` as well. Errors: DATA_LOSS (naming the corrupted chunks) when
  // fewer than k intact chunks remain or a rebuilt chunk fails its checksum.
  Result<RebuildReport> VerifiedRebuild(std::span<const ChunkView> chunks,
                                        std::span<const uint64_t> expected, ChunkMask available,
                                        ChunkMask lost, uint64_t chunk_length) const;

 private:
  Status CheckViews(std::span<const ChunkView> views, int first_chunk, uint64_t chunk_length,
                    bool full_length) const;

  const Codec& codec_;
  uint64_t piece_bytes_;
};

}  // namespace holdfast::ec

#endif  // HOLDFAST_EC_STRIPE_CODER_H_
