// Codec: the generator, encoding against the reference, round trips over
// random shapes and sizes, what Decode reads and writes, and concurrent use.
// Exhaustive erasure patterns live in codec_patterns_test.cc, bad input in
// codec_errors_test.cc.
#include "holdfast/ec/codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gf_reference.h"
#include "holdfast/ec/checksum.h"
#include "test_buffers.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::FirstDifference;
using testutil::IsOk;
using testutil::MakeCodec;
using testutil::RandomStripe;
using testutil::Rng;
using testutil::StripeData;

// Encodes with the codec and checks the parity against the reference.
void EncodeAndCheck(const Codec& codec, StripeData& s) {
  ASSERT_TRUE(IsOk(codec.Encode(s.DataPtrs(), s.ParityPtrs(), s.len)));
  std::vector<std::vector<uint8_t>> want(s.m, std::vector<uint8_t>(s.len));
  std::vector<uint8_t*> want_ptrs;
  for (auto& w : want) want_ptrs.push_back(w.data());
  testutil::RefEncode(codec.generator(), s.k, s.m, s.DataPtrs(), want_ptrs, s.len);
  for (int p = 0; p < s.m; ++p) {
    ASSERT_EQ(FirstDifference(s.chunks[s.k + p], want[p]), -1)
        << "parity " << p << " of k=" << s.k << " m=" << s.m << " len=" << s.len;
  }
}

// Loses `lost`, decodes from everything else, and compares with the original.
void LoseAndRebuild(const Codec& codec, StripeData& s, ChunkMask lost) {
  const std::vector<std::vector<uint8_t>> original = s.chunks;
  for (int i = 0; i < s.k + s.m; ++i) {
    if (lost & ChunkBit(i)) std::fill(s.chunks[i].begin(), s.chunks[i].end(), 0xEE);
  }
  const ChunkMask available = AllChunks(s.k + s.m) & ~lost;
  ASSERT_TRUE(IsOk(codec.Decode(s.ChunkPtrs(), available, lost, s.len)))
      << "lost " << MaskToString(lost);
  for (int i = 0; i < s.k + s.m; ++i) {
    ASSERT_EQ(FirstDifference(s.chunks[i], original[i]), -1)
        << "chunk " << i << " after losing " << MaskToString(lost) << ", k=" << s.k << " m=" << s.m
        << " len=" << s.len;
  }
}

TEST(CodecTest, ReportsItsShape) {
  std::unique_ptr<Codec> codec = MakeCodec(10, 4);
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(codec->k(), 10);
  EXPECT_EQ(codec->m(), 4);
  EXPECT_EQ(codec->n(), 14);
  EXPECT_EQ(codec->generator().size(), 14u * 10u);
}

TEST(CodecTest, GeneratorIsSystematicCauchy) {
  for (int m = 1; m <= kMaxParityChunks; ++m) {
    for (int k : {1, 2, 3, 4, 5, 8, 10, 16, 31, 32, kMaxChunks - 8, kMaxChunks - m}) {
      if (k + m > kMaxChunks) continue;
      std::unique_ptr<Codec> codec = MakeCodec(k, m);
      ASSERT_NE(codec, nullptr);
      const std::vector<uint8_t> want = testutil::CauchyGenerator(k, m);
      const std::vector<uint8_t> got(codec->generator().begin(), codec->generator().end());
      ASSERT_EQ(got, want) << "k " << k << " m " << m;
    }
  }
}

TEST(CodecTest, EncodeMatchesReferenceAtOddLengths) {
  Rng rng = testutil::TestRng();
  for (auto [k, m] : {std::pair{1, 1}, std::pair{2, 1}, std::pair{4, 2}, std::pair{10, 4},
                      std::pair{3, 8}, std::pair{17, 5}, std::pair{56, 8}}) {
    std::unique_ptr<Codec> codec = MakeCodec(k, m);
    ASSERT_NE(codec, nullptr);
    for (size_t len : {1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 4095, 4096, 100003}) {
      StripeData s = RandomStripe(rng, k, m, len);
      EncodeAndCheck(*codec, s);
      if (HasFatalFailure()) return;
    }
  }
}

// All-zero data gives all-zero parity; parity is linear in the data.
TEST(CodecTest, EncodeIsLinear) {
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = MakeCodec(6, 3);
  ASSERT_NE(codec, nullptr);
  const size_t len = 1001;
  StripeData zero = RandomStripe(rng, 6, 3, len);
  for (int i = 0; i < 6; ++i) std::fill(zero.chunks[i].begin(), zero.chunks[i].end(), 0);
  for (int i = 6; i < 9; ++i) std::fill(zero.chunks[i].begin(), zero.chunks[i].end(), 0x5A);
  ASSERT_TRUE(IsOk(codec->Encode(zero.DataPtrs(), zero.ParityPtrs(), len)));
  for (int i = 6; i < 9; ++i) EXPECT_EQ(zero.chunks[i], std::vector<uint8_t>(len, 0));

  StripeData a = RandomStripe(rng, 6, 3, len);
  StripeData b = RandomStripe(rng, 6, 3, len);
  StripeData sum = RandomStripe(rng, 6, 3, len);
  for (int i = 0; i < 6; ++i) {
    for (size_t j = 0; j < len; ++j) sum.chunks[i][j] = a.chunks[i][j] ^ b.chunks[i][j];
  }
  for (StripeData* s : {&a, &b, &sum}) {
    ASSERT_TRUE(IsOk(codec->Encode(s->DataPtrs(), s->ParityPtrs(), len)));
  }
  for (int i = 6; i < 9; ++i) {
    for (size_t j = 0; j < len; ++j) {
      ASSERT_EQ(sum.chunks[i][j], a.chunks[i][j] ^ b.chunks[i][j]) << "chunk " << i;
    }
  }
}

TEST(CodecTest, RoundTripsRandomShapesAndSizes) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 60; ++round) {
    const int m = rng.UniformInt(1, 4);
    const int k = rng.UniformInt(1, 32 - m);
    std::unique_ptr<Codec> codec = MakeCodec(k, m);
    ASSERT_NE(codec, nullptr);
    const size_t lens[] = {0, 1, 2, rng.Uniform(3, 200) | 1, rng.Uniform(200, 20000) | 1};
    for (size_t len : lens) {
      StripeData s = RandomStripe(rng, k, m, len);
      EncodeAndCheck(*codec, s);
      const int lose = rng.UniformInt(1, m);
      LoseAndRebuild(*codec, s, rng.Subset(AllChunks(k + m), lose));
      if (HasFatalFailure()) return;
    }
  }
}

// The largest shapes: m = kMaxParityChunks and k + m = kMaxChunks (all 64
// mask bits in use), losing every parity, every data chunk we can, or a mix.
TEST(CodecTest, RoundTripsAtTheLimits) {
  Rng rng = testutil::TestRng();
  for (auto [k, m] : {std::pair{56, 8}, std::pair{63, 1}, std::pair{1, 8}, std::pair{8, 8},
                      std::pair{32, 8}, std::pair{60, 4}}) {
    std::unique_ptr<Codec> codec = MakeCodec(k, m);
    ASSERT_NE(codec, nullptr);
    const int n = k + m;
    for (size_t len : {size_t{1}, size_t{777}, size_t{4096 + 3}}) {
      StripeData s = RandomStripe(rng, k, m, len);
      EncodeAndCheck(*codec, s);
      const ChunkMask high = AllChunks(n) & ~AllChunks(n - m);  // the top m chunks
      const ChunkMask low = AllChunks(std::min(m, k));          // up to m data chunks
      const ChunkMask ends = m >= 2 ? ChunkBit(0) | ChunkBit(n - 1) : ChunkBit(0);
      for (ChunkMask lost : {high, low, ChunkBit(n - 1), ends, rng.Subset(AllChunks(n), m)}) {
        LoseAndRebuild(*codec, s, lost);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// ~300 MiB of chunks in one stripe: lengths far past any internal block or
// int boundary a wrapper might mishandle. The ASan build shrinks it to ~24
// MiB: shadow memory and instrumented copies would make it the slowest test
// by far without exercising anything the small sizes do not.
TEST(CodecTest, LargeStripeRoundTrip) {
  constexpr int k = 10;
  constexpr int m = 4;
  const size_t len =
      testutil::kSanitized ? (size_t{24} << 20) / (k + m) + 1 : (size_t{300} << 20) / (k + m) + 1;
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = MakeCodec(k, m);
  ASSERT_NE(codec, nullptr);
  StripeData s = RandomStripe(rng, k, m, len);
  ASSERT_TRUE(IsOk(codec->Encode(s.DataPtrs(), s.ParityPtrs(), len)));

  // The reference is too slow for 300 MiB; compare windows at the start, a
  // random middle, and the (odd) end.
  const size_t win = 4099;
  for (size_t at : {size_t{0}, rng.Uniform(0, len - win), len - win}) {
    std::vector<const uint8_t*> in;
    for (int i = 0; i < k; ++i) in.push_back(s.chunks[i].data() + at);
    std::vector<std::vector<uint8_t>> want(m, std::vector<uint8_t>(win));
    std::vector<uint8_t*> out;
    for (auto& w : want) out.push_back(w.data());
    testutil::RefEncode(codec->generator(), k, m, in, out, win);
    for (int p = 0; p < m; ++p) {
      ASSERT_EQ(FirstDifference({s.chunks[k + p].data() + at, win}, want[p]), -1)
          << "parity " << p << " window at " << at;
    }
  }

  // Lose two data and two parity chunks; compare checksums rather than
  // keeping 86 MiB of copies.
  std::vector<uint64_t> sums;
  for (const auto& c : s.chunks) sums.push_back(Checksum(c));
  const ChunkMask lost = ChunkBit(1) | ChunkBit(7) | ChunkBit(10) | ChunkBit(13);
  for (int i = 0; i < k + m; ++i) {
    if (lost & ChunkBit(i)) std::fill(s.chunks[i].begin(), s.chunks[i].end(), 0);
  }
  ASSERT_TRUE(IsOk(codec->Decode(s.ChunkPtrs(), AllChunks(k + m) & ~lost, lost, len)));
  for (int i = 0; i < k + m; ++i) EXPECT_EQ(Checksum(s.chunks[i]), sums[i]) << "chunk " << i;
}

// Chunks longer than 2 GiB: ISA-L takes an int length, so the codec must
// code such chunks in several calls; a length cast straight to int would go
// negative. Random bytes sit at the start, around each 1 GiB mark and at the
// end, where a block loop that forgot to advance a pointer, or truncated the
// length, would go wrong; everything else is zero. k = 1 keeps it to 4 GiB of
// memory. Skipped under ASan: the instrumented scans and shadow memory cost
// far more than the code under test, which the normal build covers.
TEST(CodecTest, ChunksLongerThanTwoGiB) {
  if (testutil::kSanitized) GTEST_SKIP() << "4 GiB of buffers; see the comment";
  constexpr size_t kGiB = size_t{1} << 30;
  const size_t len = 2 * kGiB + 4097;
  const size_t win = 8192;
  // In increasing order; the last two overlap.
  const size_t windows[] = {0, kGiB - win / 2, 2 * kGiB - win / 2, len - win};
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = MakeCodec(1, 1);
  ASSERT_NE(codec, nullptr);
  testutil::GuardedBuffer data(len);
  testutil::GuardedBuffer parity(len);
  data.Prefault();
  parity.Prefault();
  for (size_t at : windows) rng.Fill({data.data() + at, win});

  auto check = [&](const uint8_t* got, const std::vector<std::vector<uint8_t>>& want,
                   const char* what) {
    static const std::vector<uint8_t> zeros(1 << 20, 0);
    size_t at = 0;
    for (size_t j = 0; j < std::size(windows); ++j) {
      for (const size_t w = windows[j]; at < w; at += std::min(zeros.size(), w - at)) {
        ASSERT_EQ(std::memcmp(got + at, zeros.data(), std::min(zeros.size(), w - at)), 0)
            << what << " is not zero near " << at;
      }
      ASSERT_EQ(FirstDifference({got + windows[j], win}, want[j]), -1)
          << what << " window at " << windows[j];
      at = windows[j] + win;
    }
  };

  std::vector<std::vector<uint8_t>> want_data;
  std::vector<std::vector<uint8_t>> want_parity;
  for (size_t at : windows) {
    want_data.emplace_back(data.data() + at, data.data() + at + win);
    std::vector<uint8_t> out(win);
    std::vector<const uint8_t*> in = {data.data() + at};
    std::vector<uint8_t*> o = {out.data()};
    testutil::RefEncode(codec->generator(), 1, 1, in, o, win);
    want_parity.push_back(out);
  }
  std::vector<const uint8_t*> in = {data.data()};
  std::vector<uint8_t*> out = {parity.data()};
  ASSERT_TRUE(IsOk(codec->Encode(in, out, len)));
  check(parity.data(), want_parity, "parity");

  for (size_t at : windows) std::memset(data.data() + at, 0xEE, win);
  std::vector<uint8_t*> chunks = {data.data(), parity.data()};
  ASSERT_TRUE(IsOk(codec->Decode(chunks, ChunkBit(1), ChunkBit(0), len)));
  check(data.data(), want_data, "rebuilt data");
}

TEST(CodecTest, MaskHelpers) {
  EXPECT_EQ(ChunkBit(0), 1u);
  EXPECT_EQ(ChunkBit(63), uint64_t{1} << 63);
  EXPECT_EQ(AllChunks(0), 0u);
  EXPECT_EQ(AllChunks(3), 7u);
  EXPECT_EQ(AllChunks(64), ~uint64_t{0});
  EXPECT_EQ(MaskToString(ChunkBit(0) | ChunkBit(3) | ChunkBit(5)), "{0,3,5}");
  EXPECT_EQ(MaskToString(ChunkBit(63)), "{63}");
  EXPECT_EQ(MaskToString(0), "{}");

  EXPECT_EQ(LowestChunks(0b101101, 2), 0b000101u);
  EXPECT_EQ(LowestChunks(0b101101, 4), 0b101101u);
  EXPECT_EQ(LowestChunks(0b101101, 5), 0u);  // fewer than asked
  EXPECT_EQ(LowestChunks(~uint64_t{0}, 64), ~uint64_t{0});
  EXPECT_EQ(LowestChunks(ChunkBit(63), 1), ChunkBit(63));

  Rng rng = testutil::TestRng();
  for (int i = 0; i < 2000; ++i) {
    const ChunkMask mask = rng.Next() & rng.Next();
    const int count = rng.UniformInt(1, 40);
    ChunkMask want = 0;
    int taken = 0;
    for (int b = 0; b < 64 && taken < count; ++b) {
      if (mask & ChunkBit(b)) {
        want |= ChunkBit(b);
        ++taken;
      }
    }
    if (taken < count) want = 0;
    ASSERT_EQ(LowestChunks(mask, count), want) << std::hex << mask << " count " << count;
  }
}

TEST(CodecTest, SurvivorsForPicksTheLowestK) {
  std::unique_ptr<Codec> codec = MakeCodec(4, 3);
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(codec->SurvivorsFor(AllChunks(7)), AllChunks(4));  // the data, no inverse needed
  EXPECT_EQ(codec->SurvivorsFor(0b1111110), 0b0011110u);
  EXPECT_EQ(codec->SurvivorsFor(0b1111000), 0b1111000u);
  EXPECT_EQ(codec->SurvivorsFor(0b1110001), 0b1110001u);
  EXPECT_EQ(codec->SurvivorsFor(0b1110000), 0u);  // only 3 < k
  EXPECT_EQ(codec->SurvivorsFor(0), 0u);
  testutil::ForEachMask(7, 0, 7, [&](uint64_t available) {
    const ChunkMask got = codec->SurvivorsFor(available);
    if (std::popcount(available) < 4) {
      EXPECT_EQ(got, 0u) << MaskToString(available);
    } else {
      EXPECT_EQ(got, LowestChunks(available, 4)) << MaskToString(available);
      EXPECT_EQ(std::popcount(got), 4);
      EXPECT_EQ(got & ~available, 0u);
    }
  });
}

// Decode reads exactly SurvivorsFor(available) and writes exactly `lost`:
// other available chunks are garbage here (reading one would corrupt the
// result), chunks in neither mask are null, and nothing else may change.
TEST(CodecTest, DecodeReadsOnlySurvivorsAndWritesOnlyLost) {
  Rng rng = testutil::TestRng();
  constexpr int k = 6;
  constexpr int m = 3;
  constexpr int n = k + m;
  const size_t len = 2049;
  std::unique_ptr<Codec> codec = MakeCodec(k, m);
  ASSERT_NE(codec, nullptr);
  StripeData s = RandomStripe(rng, k, m, len);
  ASSERT_TRUE(IsOk(codec->Encode(s.DataPtrs(), s.ParityPtrs(), len)));

  for (int round = 0; round < 300; ++round) {
    const ChunkMask lost = rng.Subset(AllChunks(n), rng.UniformInt(0, m));
    const int extra = rng.UniformInt(0, n - k - std::popcount(lost));
    const ChunkMask available = rng.Subset(AllChunks(n) & ~lost, k + extra);
    const ChunkMask survivors = codec->SurvivorsFor(available);
    ASSERT_EQ(survivors, LowestChunks(available, k));

    std::vector<std::vector<uint8_t>> work = s.chunks;
    std::vector<uint8_t*> ptrs(n, nullptr);
    for (int i = 0; i < n; ++i) {
      if (lost & ChunkBit(i)) std::fill(work[i].begin(), work[i].end(), 0xEE);
      if ((available & ~survivors) & ChunkBit(i)) rng.Fill(work[i]);
      if ((available | lost) & ChunkBit(i)) ptrs[i] = work[i].data();
    }
    const std::vector<std::vector<uint8_t>> before = work;
    ASSERT_TRUE(IsOk(codec->Decode(ptrs, available, lost, len)))
        << "available " << MaskToString(available) << " lost " << MaskToString(lost);
    for (int i = 0; i < n; ++i) {
      const auto& want = (lost & ChunkBit(i)) ? s.chunks[i] : before[i];
      ASSERT_EQ(FirstDifference(work[i], want), -1)
          << "chunk " << i << ", available " << MaskToString(available) << " lost "
          << MaskToString(lost);
    }
  }
}

// Several threads share one Codec, each encoding its own stripes and decoding
// its own erasure patterns; a tiny decode cache makes them evict each other's
// tables while in use.
TEST(CodecTest, SharedCodecAcrossThreads) {
  constexpr int k = 10;
  constexpr int m = 4;
  constexpr int n = k + m;
  constexpr int kThreads = 4;
  for (size_t cache_entries : {size_t{4096}, size_t{3}}) {
    std::unique_ptr<Codec> codec = MakeCodec(k, m, cache_entries);
    ASSERT_NE(codec, nullptr);
    Rng seeder = testutil::TestRng();
    std::vector<std::string> errors(kThreads);
    std::vector<int> decodes(kThreads, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t, rng = seeder.Fork()]() mutable {
        const size_t len = 1000 + 37 * t;
        StripeData s = RandomStripe(rng, k, m, len);
        std::vector<std::vector<uint8_t>> want(m, std::vector<uint8_t>(len));
        std::vector<uint8_t*> want_ptrs;
        for (auto& w : want) want_ptrs.push_back(w.data());
        testutil::RefEncode(codec->generator(), k, m, s.DataPtrs(), want_ptrs, len);
        for (int round = 0; round < 150 && errors[t].empty(); ++round) {
          Status st = codec->Encode(s.DataPtrs(), s.ParityPtrs(), len);
          for (int p = 0; st.ok() && p < m; ++p) {
            if (s.chunks[k + p] != want[p]) st = Status::Internal("parity differs");
          }
          if (!st.ok()) {
            errors[t] = "encode: " + st.ToString();
            break;
          }
          // Thread t walks its own slice of the patterns.
          const ChunkMask lost = rng.Subset(AllChunks(n), 1 + (round + t) % m);
          std::vector<std::vector<uint8_t>> work = s.chunks;
          std::vector<uint8_t*> ptrs;
          for (int i = 0; i < n; ++i) {
            if (lost & ChunkBit(i)) std::fill(work[i].begin(), work[i].end(), 0);
            ptrs.push_back(work[i].data());
          }
          st = codec->Decode(ptrs, AllChunks(n) & ~lost, lost, len);
          if (!st.ok() || work != s.chunks) {
            errors[t] = "decode of " + MaskToString(lost) + ": " + st.ToString();
          }
          ++decodes[t];
        }
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) {
      EXPECT_EQ(errors[t], "") << "thread " << t << ", cache " << cache_entries;
      EXPECT_EQ(decodes[t], 150) << "thread " << t;
    }
  }
}

}  // namespace
}  // namespace holdfast::ec
