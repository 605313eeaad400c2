#include "holdfast/ec/stripe_coder.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "holdfast/ec/checksum.h"
#include "overlap.h"

namespace holdfast::ec {
namespace {

constexpr uint64_t kMinPiece = uint64_t{4} << 10;
constexpr uint64_t kMaxPiece = uint64_t{1} << 30;

// Per-call scratch: one zero piece shared by every fully padded input, and one
// piece per chunk that needs a partial copy. Allocated on first use.
class Scratch {
 public:
  explicit Scratch(uint64_t piece) : piece_(piece) {}

  const uint8_t* Zeros() {
    if (!zeros_) zeros_.reset(new uint8_t[piece_]());
    return zeros_.get();
  }
  uint8_t* For(int chunk) {
    auto& buf = per_chunk_[chunk];
    if (!buf) buf.reset(new uint8_t[piece_]);
    return buf.get();
  }

 private:
  uint64_t piece_;
  std::unique_ptr<uint8_t[]> zeros_;
  std::unique_ptr<uint8_t[]> per_chunk_[kMaxChunks];
};

// The bytes of `view` over [at, at + len) with virtual zeros past its size:
// the view itself when it covers the window, else zeros or a padded copy.
const uint8_t* InputWindow(const ChunkView& view, int chunk, uint64_t at, uint64_t len,
                           Scratch& scratch) {
  if (view.size >= at + len) return view.data + at;
  if (view.size <= at) return scratch.Zeros();
  uint8_t* buf = scratch.For(chunk);
  const uint64_t real = view.size - at;
  std::memcpy(buf, view.data + at, real);
  std::memset(buf + real, 0, len - real);
  return buf;
}

// Checks the caller's real ranges: the codec only sees scratch pointers for
// short chunks, so it cannot catch an output overlapping one of them.
// `views[i]` is chunk `first + i`.
Status CheckViewsDisjoint(std::span<const ChunkView> views, int first, ChunkMask inputs,
                          ChunkMask outputs) {
  internal::Range ranges[kMaxChunks];
  size_t nr = 0;
  for (ChunkMask used = inputs | outputs; used != 0; used &= used - 1) {
    const int c = std::countr_zero(used);
    const ChunkView& v = views[c - first];
    const auto b = reinterpret_cast<uintptr_t>(v.data);
    ranges[nr++] = {b, b + v.size, (outputs & ChunkBit(c)) != 0, c};
  }
  return internal::CheckNoOverlap({ranges, nr});
}

// Both groups at once (data inputs, parity outputs) without copying views.
Status CheckEncodeViews(std::span<const ChunkView> data, std::span<const ChunkView> parity) {
  internal::Range ranges[kMaxChunks];
  size_t nr = 0;
  const int k = static_cast<int>(data.size());
  for (int c = 0; c < k; ++c) {
    const auto b = reinterpret_cast<uintptr_t>(data[c].data);
    ranges[nr++] = {b, b + data[c].size, false, c};
  }
  for (size_t p = 0; p < parity.size(); ++p) {
    const auto b = reinterpret_cast<uintptr_t>(parity[p].data);
    ranges[nr++] = {b, b + parity[p].size, true, k + static_cast<int>(p)};
  }
  return internal::CheckNoOverlap({ranges, nr});
}

}  // namespace

std::string RebuildReport::ToString() const {
  return "read " + MaskToString(read) + ", rebuilt " + MaskToString(rebuilt) + ", corrupted " +
         MaskToString(corrupted);
}

StripeCoder::StripeCoder(const Codec& codec, uint64_t piece_bytes)
    : codec_(codec), piece_bytes_(std::clamp(piece_bytes, kMinPiece, kMaxPiece)) {}

Status StripeCoder::CheckViews(std::span<const ChunkView> views, int first_chunk,
                               uint64_t chunk_length, bool full_length) const {
  for (size_t i = 0; i < views.size(); ++i) {
    const int chunk = first_chunk + static_cast<int>(i);
    const ChunkView& v = views[i];
    // Parity is always whole; data may be shorter (virtual zero padding).
    const bool parity = chunk >= codec_.k();
    if (parity && full_length && v.size != chunk_length) {
      return Status::InvalidArgument("parity chunk " + std::to_string(chunk) + " has " +
                                     std::to_string(v.size) + " bytes, the stripe's chunks have " +
                                     std::to_string(chunk_length));
    }
    if (v.size > chunk_length) {
      return Status::InvalidArgument(
          "chunk " + std::to_string(chunk) + " has " + std::to_string(v.size) +
          " bytes, more than the chunk length " + std::to_string(chunk_length));
    }
    if (v.size > 0 && v.data == nullptr) {
      return Status::InvalidArgument("chunk " + std::to_string(chunk) + " is null");
    }
  }
  return Status::Ok();
}

Status StripeCoder::EncodeRange(std::span<const ChunkView> data, std::span<const ChunkView> parity,
                                uint64_t chunk_length, uint64_t offset, uint64_t length) const {
  const int k = codec_.k();
  const int m = codec_.m();
  if (data.size() != static_cast<size_t>(k) || parity.size() != static_cast<size_t>(m)) {
    return Status::InvalidArgument("encode needs " + std::to_string(k) + " data and " +
                                   std::to_string(m) + " parity views, got " +
                                   std::to_string(data.size()) + " and " +
                                   std::to_string(parity.size()));
  }
  if (offset > chunk_length || length > chunk_length - offset) {
    return Status::OutOfRange("window [" + std::to_string(offset) + ", +" + std::to_string(length) +
                              ") is outside a chunk of " + std::to_string(chunk_length) + " bytes");
  }
  HOLDFAST_RETURN_IF_ERROR(CheckViews(data, 0, chunk_length, true));
  HOLDFAST_RETURN_IF_ERROR(CheckViews(parity, k, chunk_length, true));
  HOLDFAST_RETURN_IF_ERROR(CheckEncodeViews(data, parity));

  Scratch scratch(piece_bytes_);
  const uint8_t* src[kMaxChunks];
  uint8_t* dst[kMaxParityChunks];
  for (uint64_t at = offset, end = offset + length; at < end;) {
    const uint64_t len = std::min(piece_bytes_, end - at);
    for (int c = 0; c < k; ++c) src[c] = InputWindow(data[c], c, at, len, scratch);
    for (int p = 0; p < m; ++p) dst[p] = parity[p].data + at;
    HOLDFAST_RETURN_IF_ERROR(
        codec_.Encode({src, static_cast<size_t>(k)}, {dst, static_cast<size_t>(m)}, len));
    at += len;
  }
  return Status::Ok();
}

Status StripeCoder::Rebuild(std::span<const ChunkView> chunks, ChunkMask available, ChunkMask lost,
                            uint64_t chunk_length) const {
  const int n = codec_.n();
  if (chunks.size() != static_cast<size_t>(n)) {
    return Status::InvalidArgument("rebuild needs " + std::to_string(n) + " chunk views, got " +
                                   std::to_string(chunks.size()));
  }
  const ChunkMask survivors = codec_.SurvivorsFor(available);
  // Let the codec judge the masks (range, overlap, too few survivors) once,
  // without touching bytes.
  {
    uint8_t* none[kMaxChunks] = {};
    HOLDFAST_RETURN_IF_ERROR(codec_.Decode({none, static_cast<size_t>(n)}, available, lost, 0));
  }
  if (lost == 0) return Status::Ok();
  for (ChunkMask used = survivors | lost; used != 0; used &= used - 1) {
    const int c = std::countr_zero(used);
    HOLDFAST_RETURN_IF_ERROR(CheckViews(chunks.subspan(c, 1), c, chunk_length, true));
  }
  HOLDFAST_RETURN_IF_ERROR(CheckViewsDisjoint(chunks, 0, survivors, lost));

  Scratch scratch(piece_bytes_);
  uint8_t* ptrs[kMaxChunks] = {};
  for (uint64_t at = 0; at < chunk_length;) {
    const uint64_t len = std::min(piece_bytes_, chunk_length - at);
    for (ChunkMask s = survivors; s != 0; s &= s - 1) {
      const int c = std::countr_zero(s);
      // Decode only reads survivors; the cast is for its uniform pointer array.
      ptrs[c] = const_cast<uint8_t*>(InputWindow(chunks[c], c, at, len, scratch));
    }
    // Only lost chunks with real bytes in this window are computed; a short
    // one is decoded into scratch and its real prefix copied out.
    ChunkMask want = 0;
    for (ChunkMask l = lost; l != 0; l &= l - 1) {
      const int c = std::countr_zero(l);
      const ChunkView& v = chunks[c];
      if (v.size <= at) continue;
      want |= ChunkBit(c);
      ptrs[c] = v.size >= at + len ? v.data + at : scratch.For(c);
    }
    if (want != 0) {
      HOLDFAST_RETURN_IF_ERROR(codec_.Decode({ptrs, static_cast<size_t>(n)}, survivors, want, len));
      for (ChunkMask w = want; w != 0; w &= w - 1) {
        const int c = std::countr_zero(w);
        const ChunkView& v = chunks[c];
        if (v.size < at + len) std::memcpy(v.data + at, ptrs[c], v.size - at);
      }
    }
    at += len;
  }
  return Status::Ok();
}

Result<RebuildReport> StripeCoder::VerifiedRebuild(std::span<const ChunkView> chunks,
                                                   std::span<const uint64_t> expected,
                                                   ChunkMask available, ChunkMask lost,
                                                   uint64_t chunk_length) const {
  const int n = codec_.n();
  if (chunks.size() != static_cast<size_t>(n) || expected.size() != static_cast<size_t>(n)) {
    return Status::InvalidArgument(
        "verified rebuild needs " + std::to_string(n) + " chunk views and checksums, got " +
        std::to_string(chunks.size()) + " and " + std::to_string(expected.size()));
  }
  if ((available | lost) & ~AllChunks(n)) {
    return Status::InvalidArgument("chunk mask names chunks beyond n = " + std::to_string(n));
  }
  if (available & lost) {
    return Status::InvalidArgument("chunks " + MaskToString(available & lost) +
                                   " are both available and lost");
  }
  for (ChunkMask a = available; a != 0; a &= a - 1) {
    const int c = std::countr_zero(a);
    HOLDFAST_RETURN_IF_ERROR(CheckViews(chunks.subspan(c, 1), c, chunk_length, true));
  }

  // Verify exactly the chunks the decode will read; each corrupted one drops
  // out and the next lowest available chunk takes its place.
  RebuildReport report;
  ChunkMask verified = 0;
  ChunkMask intact = available;
  for (;;) {
    const ChunkMask survivors = codec_.SurvivorsFor(intact);
    if (survivors == 0) {
      return Status::DataLoss("stripe cannot be rebuilt: lost " + MaskToString(lost) +
                              ", corrupted " + MaskToString(report.corrupted) + ", only " +
                              std::to_string(std::popcount(intact)) +
                              " intact of k = " + std::to_string(codec_.k()));
    }
    const ChunkMask todo = survivors & ~verified;
    if (todo == 0) {
      report.read = survivors;
      break;
    }
    for (ChunkMask t = todo; t != 0; t &= t - 1) {
      const int c = std::countr_zero(t);
      const ChunkView& v = chunks[c];
      verified |= ChunkBit(c);
      if (Checksum({v.data, v.size}) != expected[c]) {
        report.corrupted |= ChunkBit(c);
        intact &= ~ChunkBit(c);
      }
    }
  }

  report.rebuilt = lost | report.corrupted;
  HOLDFAST_RETURN_IF_ERROR(Rebuild(chunks, report.read, report.rebuilt, chunk_length));

  for (ChunkMask r = report.rebuilt; r != 0; r &= r - 1) {
    const int c = std::countr_zero(r);
    const ChunkView& v = chunks[c];
    if (Checksum({v.data, v.size}) != expected[c]) {
      return Status::DataLoss("rebuilt chunk " + std::to_string(c) +
                              " does not match its recorded checksum (" + report.ToString() + ")");
    }
  }
  return report;
}

}  // namespace holdfast::ec
