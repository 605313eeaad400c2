#include "holdfast/ec/codec.h"

#include <isa-l/erasure_code.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "overlap.h"

namespace holdfast::ec {
using internal::CheckNoOverlap;
using internal::Range;

namespace {

// ISA-L lengths are `int`; code larger buffers in blocks of this size.
constexpr size_t kMaxBlock = size_t{1} << 30;

}  // namespace

namespace internal {

Status CheckNoOverlap(std::span<Range> all) {
  const auto nonempty =
      std::partition(all.begin(), all.end(), [](const Range& r) { return r.begin != r.end; });
  std::span<Range> ranges(all.begin(), nonempty);
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  // Sweep keeping the range that reaches furthest so far: a later range that
  // starts before that end overlaps it. Among overlapping ranges the one
  // reaching furthest may be an input while an earlier one is an output, so
  // remember the furthest output too.
  const Range* far = nullptr;
  const Range* far_out = nullptr;
  for (const Range& cur : ranges) {
    const Range* hit = nullptr;
    if (far_out != nullptr && cur.begin < far_out->end) hit = far_out;
    if (hit == nullptr && cur.output && far != nullptr && cur.begin < far->end) hit = far;
    if (hit != nullptr) {
      return Status::InvalidArgument("chunk " + std::to_string(cur.chunk) + " overlaps chunk " +
                                     std::to_string(hit->chunk) + " and one of them is written");
    }
    if (far == nullptr || cur.end > far->end) far = &cur;
    if (cur.output && (far_out == nullptr || cur.end > far_out->end)) far_out = &cur;
  }
  return Status::Ok();
}

}  // namespace internal

std::string MaskToString(ChunkMask mask) {
  std::string out = "{";
  bool first = true;
  while (mask != 0) {
    int i = std::countr_zero(mask);
    mask &= mask - 1;
    if (!first) out += ",";
    out += std::to_string(i);
    first = false;
  }
  return out + "}";
}

ChunkMask LowestChunks(ChunkMask mask, int count) {
  if (count <= 0) return 0;
  if (std::popcount(mask) < count) return 0;
  ChunkMask out = 0;
  for (int taken = 0; taken < count; ++taken) {
    ChunkMask low = mask & (~mask + 1);
    out |= low;
    mask ^= low;
  }
  return out;
}

// Expanded ISA-L tables for one erasure pattern: rows = number of lost chunks.
struct Codec::DecodeTables {
  int rows = 0;
  std::vector<uint8_t> tbls;  // 32 * k * rows
};

// Maps (survivors, lost) to decode tables. Entries are shared_ptr because a
// decode running on another thread keeps using its tables after a concurrent
// Clear() drops them from the map.
class Codec::DecodeCache {
 public:
  explicit DecodeCache(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  std::shared_ptr<const DecodeTables> Find(ChunkMask survivors, ChunkMask lost) {
    std::lock_guard lock(mu_);
    auto it = map_.find(Key{survivors, lost});
    return it == map_.end() ? nullptr : it->second;
  }

  std::shared_ptr<const DecodeTables> Insert(ChunkMask survivors, ChunkMask lost,
                                             std::shared_ptr<const DecodeTables> tables) {
    std::lock_guard lock(mu_);
    if (map_.size() >= capacity_) map_.clear();
    // If another thread built the same tables first, keep theirs.
    auto [it, inserted] = map_.emplace(Key{survivors, lost}, std::move(tables));
    return it->second;
  }

 private:
  struct Key {
    ChunkMask survivors;
    ChunkMask lost;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& key) const {
      return std::hash<uint64_t>()(key.survivors * 0x9E3779B97F4A7C15ULL ^ key.lost);
    }
  };

  const size_t capacity_;
  std::mutex mu_;
  std::unordered_map<Key, std::shared_ptr<const DecodeTables>, KeyHash> map_;  // guarded by mu_
};

Status CheckCodeParameters(int k, int m) {
  if (k < 1) return Status::InvalidArgument("k must be >= 1, got " + std::to_string(k));
  if (m < 1 || m > kMaxParityChunks) {
    return Status::InvalidArgument("m must be in [1, " + std::to_string(kMaxParityChunks) +
                                   "], got " + std::to_string(m));
  }
  if (k > kMaxChunks - m) {
    return Status::InvalidArgument("k + m must be <= " + std::to_string(kMaxChunks) + ", got " +
                                   std::to_string(k) + " + " + std::to_string(m));
  }
  return Status::Ok();
}

Result<std::unique_ptr<Codec>> Codec::Create(const CodecOptions& options) {
  HOLDFAST_RETURN_IF_ERROR(CheckCodeParameters(options.k, options.m));
  return std::unique_ptr<Codec>(new Codec(options.k, options.m, options.decode_cache_entries));
}

Codec::Codec(int k, int m, size_t cache_entries)
    : k_(k),
      m_(m),
      generator_(new uint8_t[static_cast<size_t>(k + m) * k]),
      encode_tbls_(new uint8_t[static_cast<size_t>(32) * k * m]),
      cache_(std::make_unique<DecodeCache>(cache_entries)) {
  // Systematic [I; Cauchy]: rows k.. are 1 / (i ^ j), which is MDS for any
  // k + m <= 256 because {i} and {j} are disjoint sets.
  gf_gen_cauchy1_matrix(generator_.get(), k + m, k);
  ec_init_tables(k, m, generator_.get() + static_cast<size_t>(k) * k, encode_tbls_.get());
}

Codec::~Codec() = default;

std::span<const uint8_t> Codec::generator() const {
  return {generator_.get(), static_cast<size_t>(n()) * k_};
}

ChunkMask Codec::SurvivorsFor(ChunkMask available) const {
  return LowestChunks(available & AllChunks(n()), k_);
}

Status Codec::Encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity,
                     size_t len) const {
  if (data.size() != static_cast<size_t>(k_) || parity.size() != static_cast<size_t>(m_)) {
    return Status::InvalidArgument("encode needs " + std::to_string(k_) + " data and " +
                                   std::to_string(m_) + " parity chunks, got " +
                                   std::to_string(data.size()) + " and " +
                                   std::to_string(parity.size()));
  }
  if (len == 0) return Status::Ok();

  Range ranges[kMaxChunks];
  int nr = 0;
  uint8_t* src[kMaxChunks];
  uint8_t* dst[kMaxParityChunks];
  for (int i = 0; i < k_; ++i) {
    if (data[i] == nullptr) {
      return Status::InvalidArgument("data chunk " + std::to_string(i) + " is null");
    }
    // ISA-L reads sources through non-const pointers but never writes them.
    src[i] = const_cast<uint8_t*>(data[i]);
    auto b = reinterpret_cast<uintptr_t>(data[i]);
    ranges[nr++] = {b, b + len, false, i};
  }
  for (int p = 0; p < m_; ++p) {
    if (parity[p] == nullptr) {
      return Status::InvalidArgument("parity chunk " + std::to_string(k_ + p) + " is null");
    }
    dst[p] = parity[p];
    auto b = reinterpret_cast<uintptr_t>(parity[p]);
    ranges[nr++] = {b, b + len, true, k_ + p};
  }
  HOLDFAST_RETURN_IF_ERROR(CheckNoOverlap({ranges, static_cast<size_t>(nr)}));

  for (size_t done = 0; done < len;) {
    const size_t block = std::min(len - done, kMaxBlock);
    uint8_t* s[kMaxChunks];
    uint8_t* d[kMaxParityChunks];
    for (int i = 0; i < k_; ++i) s[i] = src[i] + done;
    for (int p = 0; p < m_; ++p) d[p] = dst[p] + done;
    ec_encode_data(static_cast<int>(block), k_, m_, encode_tbls_.get(), s, d);
    done += block;
  }
  return Status::Ok();
}

Result<std::shared_ptr<const Codec::DecodeTables>> Codec::TablesFor(ChunkMask survivors,
                                                                    ChunkMask lost) const {
  if (auto hit = cache_->Find(survivors, lost)) return hit;

  const size_t k = static_cast<size_t>(k_);
  const uint8_t* gen = generator_.get();
  // b = the generator rows of the survivors; its inverse maps survivors back
  // to the data chunks.
  std::vector<uint8_t> b(k * k);
  std::vector<uint8_t> inv(k * k);
  size_t row = 0;
  for (ChunkMask s = survivors; s != 0; s &= s - 1, ++row) {
    const int idx = std::countr_zero(s);
    std::memcpy(&b[row * k], gen + idx * k, k);
  }
  if (gf_invert_matrix(b.data(), inv.data(), k_) != 0) {
    // Impossible for a Cauchy generator; a failure here is a bug, but report
    // it rather than decode garbage.
    return Status::Internal("decode matrix for survivors " + MaskToString(survivors) +
                            " is singular");
  }
  // One row per lost chunk: a data chunk is its row of the inverse; a parity
  // chunk is its generator row times the inverse.
  const int rows = std::popcount(lost);
  std::vector<uint8_t> c(static_cast<size_t>(rows) * k);
  row = 0;
  for (ChunkMask l = lost; l != 0; l &= l - 1, ++row) {
    const size_t idx = static_cast<size_t>(std::countr_zero(l));
    if (idx < k) {
      std::memcpy(&c[row * k], &inv[idx * k], k);
      continue;
    }
    for (size_t j = 0; j < k; ++j) {
      uint8_t acc = 0;
      for (size_t t = 0; t < k; ++t) acc ^= gf_mul(gen[idx * k + t], inv[t * k + j]);
      c[row * k + j] = acc;
    }
  }
  auto tables = std::make_shared<DecodeTables>();
  tables->rows = rows;
  tables->tbls.resize(32 * k * static_cast<size_t>(rows));
  ec_init_tables(k_, rows, c.data(), tables->tbls.data());
  return cache_->Insert(survivors, lost, std::move(tables));
}

Status Codec::Decode(std::span<uint8_t* const> chunks, ChunkMask available, ChunkMask lost,
                     size_t len) const {
  const ChunkMask all = AllChunks(n());
  if (chunks.size() != static_cast<size_t>(n())) {
    return Status::InvalidArgument("decode needs " + std::to_string(n()) + " chunk pointers, got " +
                                   std::to_string(chunks.size()));
  }
  if ((available | lost) & ~all) {
    return Status::InvalidArgument("chunk mask names chunks beyond n = " + std::to_string(n()) +
                                   ": available " + MaskToString(available & ~all) + ", lost " +
                                   MaskToString(lost & ~all));
  }
  if (available & lost) {
    return Status::InvalidArgument("chunks " + MaskToString(available & lost) +
                                   " are both available and lost");
  }
  const ChunkMask survivors = SurvivorsFor(available);
  if (survivors == 0) {
    return Status::DataLoss("only " + std::to_string(std::popcount(available)) +
                            " chunks available " + MaskToString(available) +
                            ", need k = " + std::to_string(k_) +
                            " (more than m = " + std::to_string(m_) + " erasures)");
  }
  if (lost == 0 || len == 0) return Status::Ok();

  uint8_t* src[kMaxChunks];
  uint8_t* dst[kMaxChunks];
  Range ranges[kMaxChunks];
  int nr = 0;
  int ns = 0;
  int nd = 0;
  for (ChunkMask used = survivors | lost; used != 0; used &= used - 1) {
    const int idx = std::countr_zero(used);
    const bool output = (lost & ChunkBit(idx)) != 0;
    if (chunks[idx] == nullptr) {
      return Status::InvalidArgument(std::string(output ? "lost" : "surviving") + " chunk " +
                                     std::to_string(idx) + " is null");
    }
    auto b = reinterpret_cast<uintptr_t>(chunks[idx]);
    ranges[nr++] = {b, b + len, output, idx};
    if (output) {
      dst[nd++] = chunks[idx];
    } else {
      src[ns++] = chunks[idx];
    }
  }
  HOLDFAST_RETURN_IF_ERROR(CheckNoOverlap({ranges, static_cast<size_t>(nr)}));

  HOLDFAST_ASSIGN_OR_RETURN(std::shared_ptr<const DecodeTables> tables, TablesFor(survivors, lost));
  uint8_t* tbls = const_cast<uint8_t*>(tables->tbls.data());  // ISA-L only reads them
  for (size_t done = 0; done < len;) {
    const size_t block = std::min(len - done, kMaxBlock);
    uint8_t* s[kMaxChunks];
    uint8_t* d[kMaxChunks];
    for (int i = 0; i < ns; ++i) s[i] = src[i] + done;
    for (int i = 0; i < nd; ++i) d[i] = dst[i] + done;
    ec_encode_data(static_cast<int>(block), k_, nd, tbls, s, d);
    done += block;
  }
  return Status::Ok();
}

}  // namespace holdfast::ec
