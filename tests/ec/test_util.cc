#include "test_util.h"

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace holdfast::ec::testutil {
uint64_t Rng::Next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t Rng::Uniform(uint64_t lo, uint64_t hi) {
  const uint64_t span = hi - lo + 1;
  if (span == 0) return Next();  // the full 64-bit range
  return lo + Next() % span;     // the modulo bias is irrelevant here
}

void Rng::Fill(std::span<uint8_t> bytes) {
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    const uint64_t v = Next();
    std::memcpy(bytes.data() + i, &v, 8);
  }
  if (i < bytes.size()) {
    const uint64_t v = Next();
    std::memcpy(bytes.data() + i, &v, bytes.size() - i);
  }
}

std::vector<uint8_t> Rng::Bytes(size_t len) {
  std::vector<uint8_t> out(len);
  Fill(out);
  return out;
}

uint64_t Rng::Subset(uint64_t from, int count) {
  uint64_t out = 0;
  for (int taken = 0; taken < count; ++taken) {
    const int left = std::popcount(from);
    int pick = UniformInt(0, left - 1);
    uint64_t rest = from;
    while (pick-- > 0) rest &= rest - 1;
    const uint64_t bit = rest & (~rest + 1);
    out |= bit;
    from &= ~bit;
  }
  return out;
}

Rng TestRng() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  uint64_t h = 0xCBF29CE484222325ULL;  // FNV-1a over "suite.name"
  if (info != nullptr) {
    const std::string name = std::string(info->test_suite_name()) + "." + info->name();
    for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ULL;
  }
  return Rng(SuiteSeed() ^ h);
}

void ForEachMask(int n, int min_bits, int max_bits, const std::function<void(uint64_t)>& fn) {
  // Grows subsets in lexicographic order of their bit positions; n <= 64.
  std::vector<int> pos;
  for (int size = min_bits; size <= max_bits && size <= n; ++size) {
    if (size == 0) {
      fn(0);
      continue;
    }
    pos.resize(size);
    for (int i = 0; i < size; ++i) pos[i] = i;
    while (true) {
      uint64_t mask = 0;
      for (int p : pos) mask |= uint64_t{1} << p;
      fn(mask);
      int i = size - 1;
      while (i >= 0 && pos[i] == n - size + i) --i;
      if (i < 0) break;
      ++pos[i];
      for (int j = i + 1; j < size; ++j) pos[j] = pos[j - 1] + 1;
    }
  }
}

uint64_t CountMasks(int n, int min_bits, int max_bits) {
  uint64_t total = 0;
  for (int size = min_bits; size <= max_bits && size <= n; ++size) {
    uint64_t c = 1;  // C(n, size), exact at each step
    for (int i = 0; i < size; ++i) c = c * static_cast<uint64_t>(n - i) / (i + 1);
    total += c;
  }
  return total;
}

std::unique_ptr<Codec> MakeCodec(int k, int m, size_t cache_entries) {
  CodecOptions options;
  options.k = k;
  options.m = m;
  options.decode_cache_entries = cache_entries;
  Result<std::unique_ptr<Codec>> codec = Codec::Create(options);
  if (!codec.ok()) {
    ADD_FAILURE() << "Codec::Create(" << k << ", " << m << "): " << codec.status().ToString();
    return nullptr;
  }
  return std::move(codec).value();
}

std::vector<const uint8_t*> StripeData::DataPtrs() const {
  std::vector<const uint8_t*> out;
  for (int i = 0; i < k; ++i) out.push_back(chunks[i].data());
  return out;
}

std::vector<uint8_t*> StripeData::ParityPtrs() {
  std::vector<uint8_t*> out;
  for (int i = k; i < k + m; ++i) out.push_back(chunks[i].data());
  return out;
}

std::vector<uint8_t*> StripeData::ChunkPtrs() {
  std::vector<uint8_t*> out;
  for (auto& c : chunks) out.push_back(c.data());
  return out;
}

StripeData RandomStripe(Rng& rng, int k, int m, size_t len) {
  StripeData s;
  s.k = k;
  s.m = m;
  s.len = len;
  s.chunks.resize(static_cast<size_t>(k + m));
  for (int i = 0; i < k; ++i) s.chunks[i] = rng.Bytes(len);
  for (int i = k; i < k + m; ++i) s.chunks[i].assign(len, 0);
  return s;
}

long FirstDifference(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return 0;
  const int cmp = a.empty() ? 0 : std::memcmp(a.data(), b.data(), a.size());
  if (cmp == 0) return -1;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<long>(i);
  }
  return -1;
}

}  // namespace holdfast::ec::testutil
