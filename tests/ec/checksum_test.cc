// Checksum(): CRC-64/ECMA-182 reflected, checked against the bitwise reference
// in gf_reference.cc and against published check values.
#include "holdfast/ec/checksum.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "gf_reference.h"
#include "test_buffers.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::GuardedBuffer;
using testutil::RefCrc64;
using testutil::Rng;

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(ChecksumTest, EmptyBufferReturnsTheSeed) {
  EXPECT_EQ(Checksum({}), 0u);
  EXPECT_EQ(Checksum({}, 0), 0u);
  // Chaining with an empty tail must not change a running value.
  EXPECT_EQ(Checksum({}, 0x0123456789ABCDEFULL), 0x0123456789ABCDEFULL);
  EXPECT_EQ(RefCrc64({}, 0), 0u);
}

// Seed 0 is CRC-64/XZ (ECMA-182 polynomial, reflected, init and xorout all
// ones); its catalogue check value is for the ASCII string "123456789".
TEST(ChecksumTest, MatchesPublishedCheckValue) {
  constexpr uint64_t kCrc64XzCheck = 0x995DC9BBDF1939FAULL;
  EXPECT_EQ(RefCrc64(Bytes("123456789")), kCrc64XzCheck);
  EXPECT_EQ(Checksum(Bytes("123456789")), kCrc64XzCheck);
}

// Values computed once with RefCrc64 and checked in, so that a later build
// that changes the function (or its seed convention) fails here.
TEST(ChecksumTest, KnownValues) {
  constexpr std::string_view kFox = "The quick brown fox jumps over the lazy dog";
  constexpr uint64_t kFoxCrc = 0x5B5EB8C2E54AA1C4ULL;
  EXPECT_EQ(RefCrc64(Bytes(kFox)), kFoxCrc);
  EXPECT_EQ(Checksum(Bytes(kFox)), kFoxCrc);

  constexpr std::string_view kName = "holdfast";
  constexpr uint64_t kSeed = 0x1122334455667788ULL;
  const uint64_t with_seed = RefCrc64(Bytes(kName), kSeed);
  EXPECT_EQ(Checksum(Bytes(kName), kSeed), with_seed);

  const std::vector<uint8_t> one_zero(1, 0);
  EXPECT_EQ(Checksum(one_zero), RefCrc64(one_zero));
  EXPECT_NE(Checksum(one_zero), 0u);  // a zero byte is not the empty buffer
}

TEST(ChecksumTest, MatchesReferenceAtOddLengthsAndSeeds) {
  Rng rng = testutil::TestRng();
  for (size_t len :
       {1, 2, 3, 7, 8, 15, 16, 17, 31, 63, 64, 65, 127, 255, 256, 4095, 4097, 100003}) {
    const std::vector<uint8_t> buf = rng.Bytes(len);
    for (uint64_t seed : {uint64_t{0}, ~uint64_t{0}, rng.Next()}) {
      ASSERT_EQ(Checksum(buf, seed), RefCrc64(buf, seed)) << "len " << len << " seed " << seed;
    }
  }
}

TEST(ChecksumTest, MatchesReferenceAtEveryAlignment) {
  Rng rng = testutil::TestRng();
  const std::vector<uint8_t> buf = rng.Bytes(300);
  for (size_t start = 0; start < 64; ++start) {
    for (size_t len : {size_t{0}, size_t{1}, size_t{13}, size_t{64}, size_t{200}}) {
      std::span<const uint8_t> s(buf.data() + start, len);
      ASSERT_EQ(Checksum(s), RefCrc64(s)) << "start " << start << " len " << len;
    }
  }
}

TEST(ChecksumTest, ChainsAcrossAnySplit) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 200; ++round) {
    const size_t len = rng.Uniform(0, 5000);
    const std::vector<uint8_t> buf = rng.Bytes(len);
    const std::span<const uint8_t> all(buf);
    const uint64_t whole = Checksum(all);

    const size_t cut = rng.Uniform(0, len);
    EXPECT_EQ(Checksum(all.subspan(cut), Checksum(all.first(cut))), whole)
        << "len " << len << " cut " << cut;

    // Many pieces, including empty ones, in order.
    uint64_t running = 0;
    for (size_t pos = 0; pos < len;) {
      const size_t piece = rng.OneIn(5) ? 0 : rng.Uniform(1, 700);
      const size_t take = std::min(piece, len - pos);
      running = Checksum(all.subspan(pos, take), running);
      pos += take;
    }
    EXPECT_EQ(running, whole) << "len " << len;
  }
}

TEST(ChecksumTest, CombineJoinsIndependentPieces) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 300; ++round) {
    const size_t len = rng.OneIn(10) ? rng.Uniform(0, 3 << 20) : rng.Uniform(0, 5000);
    const std::vector<uint8_t> buf = rng.Bytes(len);
    const std::span<const uint8_t> all(buf);
    const size_t cut = rng.Uniform(0, len);
    const uint64_t a = Checksum(all.first(cut));
    const uint64_t b = Checksum(all.subspan(cut));
    ASSERT_EQ(ChecksumCombine(a, b, len - cut), Checksum(all)) << "len " << len << " cut " << cut;
  }
}

// Pieces computed out of order (as worker threads do) fold left to the whole.
TEST(ChecksumTest, CombineFoldsManyPieces) {
  Rng rng = testutil::TestRng();
  const std::vector<uint8_t> buf = rng.Bytes(1 << 20);
  const std::span<const uint8_t> all(buf);
  std::vector<std::span<const uint8_t>> pieces;
  for (size_t pos = 0; pos < buf.size();) {
    const size_t take = std::min<size_t>(rng.Uniform(0, 70000), buf.size() - pos);
    pieces.push_back(all.subspan(pos, take));
    pos += take;
  }
  std::vector<uint64_t> sums(pieces.size());
  for (size_t i = pieces.size(); i-- > 0;) sums[i] = Checksum(pieces[i]);
  uint64_t folded = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    folded = ChecksumCombine(folded, sums[i], pieces[i].size());
  }
  EXPECT_EQ(folded, Checksum(all));
}

TEST(ChecksumTest, CombineWithEmptyPieces) {
  Rng rng = testutil::TestRng();
  const std::vector<uint8_t> buf = rng.Bytes(777);
  const uint64_t whole = Checksum(buf);
  EXPECT_EQ(ChecksumCombine(whole, 0, 0), whole);  // empty tail
  EXPECT_EQ(ChecksumCombine(0, whole, buf.size()), whole);  // empty head
}

TEST(ChecksumTest, DetectsEverySingleBitFlip) {
  Rng rng = testutil::TestRng();
  std::vector<uint8_t> buf = rng.Bytes(257);
  const uint64_t good = Checksum(buf);
  for (size_t i = 0; i < buf.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      buf[i] ^= static_cast<uint8_t>(1u << bit);
      ASSERT_NE(Checksum(buf), good) << "byte " << i << " bit " << bit;
      buf[i] ^= static_cast<uint8_t>(1u << bit);
    }
  }
  EXPECT_EQ(Checksum(buf), good);
}

// A read past the end faults on the guard page.
TEST(ChecksumTest, ReadsOnlyItsBytes) {
  Rng rng = testutil::TestRng();
  for (size_t len : {1, 7, 63, 64, 65, 4095, 4096, 4097, 70001}) {
    GuardedBuffer rear(len);
    rng.Fill(rear.span());
    EXPECT_EQ(Checksum(rear.span()), RefCrc64(rear.span())) << "len " << len;
    for (size_t offset = 1; offset < 64; offset += 7) {
      GuardedBuffer front(len, GuardedBuffer::Placement::kAfterFrontGuard, offset);
      front.Assign(rear.span());
      EXPECT_EQ(Checksum(front.span()), RefCrc64(rear.span())) << "len " << len;
    }
  }
}

}  // namespace
}  // namespace holdfast::ec
