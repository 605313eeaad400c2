// Shared helpers for the ec/ tests: the seeded RNG, erasure-pattern
// enumeration and a few gtest helpers.
//
// Randomness: every test draws from TestRng(), seeded from HOLDFAST_TEST_SEED
// (decimal or 0x-hex; a fixed default otherwise) mixed with the test's name, so
// a test's inputs do not depend on which other tests ran. When a test fails,
// a listener prints the seed to rerun it with.
//
// Thread-safety: Rng is not thread-safe; give each thread its own (Fork()).
#ifndef HOLDFAST_TESTS_EC_TEST_UTIL_H_
#define HOLDFAST_TESTS_EC_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "holdfast/ec/codec.h"
#include "holdfast/ec/status.h"
#include "holdfast/testing/seed.h"
#include "holdfast/testing/status_matchers.h"

namespace holdfast::ec::testutil {

// True in the ASan/UBSan build (HOLDFAST_SANITIZE=ON), where the biggest
// cases shrink: the sanitizers make byte loops ~5-10x slower.
#ifdef HOLDFAST_TEST_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// The suite seed: HOLDFAST_TEST_SEED or the default.
using holdfast::testing::SuiteSeed;

// splitmix64: small, fast, and good enough for test inputs.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t Next();
  // Uniform in [lo, hi] (inclusive).
  uint64_t Uniform(uint64_t lo, uint64_t hi);
  int UniformInt(int lo, int hi) {
    return static_cast<int>(Uniform(static_cast<uint64_t>(lo), static_cast<uint64_t>(hi)));
  }
  bool OneIn(uint64_t n) { return Uniform(1, n) == 1; }
  void Fill(std::span<uint8_t> bytes);
  std::vector<uint8_t> Bytes(size_t len);
  // A random subset of `from` with exactly `count` bits (count <= popcount).
  uint64_t Subset(uint64_t from, int count);
  // An independent generator, for another thread.
  Rng Fork() { return Rng(Next() ^ 0xA5A5A5A55A5A5A5AULL); }

 private:
  uint64_t state_;
};

// Seeded from SuiteSeed() and the running test's full name.
Rng TestRng();

// Calls fn(mask) for every subset of the low n bits with between min_bits and
// max_bits bits set, in increasing numeric order.
void ForEachMask(int n, int min_bits, int max_bits, const std::function<void(uint64_t)>& fn);

// Number of subsets ForEachMask would visit.
uint64_t CountMasks(int n, int min_bits, int max_bits);

using holdfast::testing::HasCode;
using holdfast::testing::IsOk;

std::unique_ptr<Codec> MakeCodec(int k, int m, size_t cache_entries = 4096);

// One stripe in plain vectors: k random data chunks, m zeroed parity chunks,
// all `len` bytes.
struct StripeData {
  int k = 0;
  int m = 0;
  size_t len = 0;
  std::vector<std::vector<uint8_t>> chunks;

  std::vector<const uint8_t*> DataPtrs() const;
  std::vector<uint8_t*> ParityPtrs();
  std::vector<uint8_t*> ChunkPtrs();
};
StripeData RandomStripe(Rng& rng, int k, int m, size_t len);

// Index of the first differing byte, or -1 when equal (sizes must match).
long FirstDifference(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace holdfast::ec::testutil

#endif  // HOLDFAST_TESTS_EC_TEST_UTIL_H_
