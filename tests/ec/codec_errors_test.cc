// Bad input to Codec returns the documented code and writes nothing; it never
// reaches ISA-L (which validates nothing and would crash or corrupt memory).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "holdfast/ec/codec.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::HasCode;
using testutil::IsOk;
using testutil::RandomStripe;
using testutil::Rng;
using testutil::StripeData;

constexpr StatusCode kInvalid = StatusCode::kInvalidArgument;

Result<std::unique_ptr<Codec>> Create(int k, int m) {
  CodecOptions options;
  options.k = k;
  options.m = m;
  return Codec::Create(options);
}

TEST(CodecErrorsTest, CreateRejectsBadShapes) {
  EXPECT_TRUE(HasCode(Create(0, 2), kInvalid));
  EXPECT_TRUE(HasCode(Create(-1, 2), kInvalid));
  EXPECT_TRUE(HasCode(Create(4, 0), kInvalid));
  EXPECT_TRUE(HasCode(Create(4, -3), kInvalid));
  EXPECT_TRUE(HasCode(Create(4, kMaxParityChunks + 1), kInvalid));
  EXPECT_TRUE(HasCode(Create(kMaxChunks - 8 + 1, 8), kInvalid));  // k + m = 65
  EXPECT_TRUE(HasCode(Create(kMaxChunks, 1), kInvalid));
  EXPECT_TRUE(HasCode(Create(1000000, 1), kInvalid));
  EXPECT_TRUE(HasCode(Create(0, 0), kInvalid));

  // The edges themselves are fine.
  EXPECT_TRUE(IsOk(Create(1, 1)));
  EXPECT_TRUE(IsOk(Create(1, kMaxParityChunks)));
  EXPECT_TRUE(IsOk(Create(kMaxChunks - 8, 8)));
  EXPECT_TRUE(IsOk(Create(kMaxChunks - 1, 1)));
  CodecOptions defaults;
  EXPECT_TRUE(IsOk(Codec::Create(defaults)));

  // The shared check agrees with Create.
  for (int kk : {-1, 0, 1, 2, 56, 57, 63, 64}) {
    for (int mm : {-1, 0, 1, 2, 8, 9}) {
      EXPECT_EQ(CheckCodeParameters(kk, mm).code(), Create(kk, mm).status().code())
          << kk << "+" << mm;
    }
  }
  defaults.decode_cache_entries = 0;  // degenerate, but must still decode
  Result<std::unique_ptr<Codec>> tiny = Codec::Create(defaults);
  if (tiny.ok()) {
    Rng rng = testutil::TestRng();
    StripeData s = RandomStripe(rng, 4, 2, 100);
    ASSERT_TRUE(IsOk((*tiny)->Encode(s.DataPtrs(), s.ParityPtrs(), 100)));
    const std::vector<std::vector<uint8_t>> want = s.chunks;
    std::fill(s.chunks[0].begin(), s.chunks[0].end(), 0);
    ASSERT_TRUE(IsOk((*tiny)->Decode(s.ChunkPtrs(), 0b111110, 0b1, 100)));
    EXPECT_EQ(s.chunks, want);
  } else {
    EXPECT_TRUE(HasCode(tiny, kInvalid));
  }
}

class CodecErrorsFixture : public ::testing::Test {
 protected:
  static constexpr int k = 4;
  static constexpr int m = 2;
  static constexpr size_t kLen = 64;

  void SetUp() override {
    codec_ = testutil::MakeCodec(k, m);
    ASSERT_NE(codec_, nullptr);
    Rng rng = testutil::TestRng();
    s_ = RandomStripe(rng, k, m, kLen);
    ASSERT_TRUE(IsOk(codec_->Encode(s_.DataPtrs(), s_.ParityPtrs(), kLen)));
    encoded_ = s_.chunks;
    // Parity to be overwritten by a failing call must survive it.
    for (int i = k; i < k + m; ++i) std::fill(s_.chunks[i].begin(), s_.chunks[i].end(), 0x77);
    poisoned_ = s_.chunks;
  }

  void ExpectUnchanged() { EXPECT_EQ(s_.chunks, poisoned_) << "a failed call wrote output"; }

  std::unique_ptr<Codec> codec_;
  StripeData s_;
  std::vector<std::vector<uint8_t>> encoded_;
  std::vector<std::vector<uint8_t>> poisoned_;
};

TEST_F(CodecErrorsFixture, EncodeWrongSpanSizes) {
  std::vector<const uint8_t*> data = s_.DataPtrs();
  std::vector<uint8_t*> parity = s_.ParityPtrs();
  std::vector<const uint8_t*> short_data(data.begin(), data.end() - 1);
  std::vector<const uint8_t*> long_data = data;
  long_data.push_back(data[0]);
  std::vector<uint8_t*> short_parity(parity.begin(), parity.end() - 1);
  std::vector<uint8_t*> long_parity = parity;
  long_parity.push_back(parity[0]);
  EXPECT_TRUE(HasCode(codec_->Encode(short_data, parity, kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Encode(long_data, parity, kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Encode(data, short_parity, kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Encode(data, long_parity, kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Encode({}, {}, kLen), kInvalid));
  // Sizes are checked even when there are no bytes to code.
  EXPECT_TRUE(HasCode(codec_->Encode(short_data, parity, 0), kInvalid));
  ExpectUnchanged();
}

TEST_F(CodecErrorsFixture, EncodeNullPointers) {
  for (int i = 0; i < k + m; ++i) {
    std::vector<const uint8_t*> data = s_.DataPtrs();
    std::vector<uint8_t*> parity = s_.ParityPtrs();
    if (i < k) {
      data[i] = nullptr;
    } else {
      parity[i - k] = nullptr;
    }
    EXPECT_TRUE(HasCode(codec_->Encode(data, parity, kLen), kInvalid)) << "chunk " << i;
    EXPECT_TRUE(HasCode(codec_->Encode(data, parity, 1), kInvalid)) << "chunk " << i;
  }
  ExpectUnchanged();
}

TEST_F(CodecErrorsFixture, ZeroLengthAcceptsNullPointers) {
  std::vector<const uint8_t*> data(k, nullptr);
  std::vector<uint8_t*> parity(m, nullptr);
  EXPECT_TRUE(IsOk(codec_->Encode(data, parity, 0)));
  std::vector<uint8_t*> chunks(k + m, nullptr);
  EXPECT_TRUE(IsOk(codec_->Decode(chunks, AllChunks(k + m) & ~ChunkBit(0), ChunkBit(0), 0)));
  EXPECT_TRUE(IsOk(codec_->Decode(chunks, 0b111100, 0b000011, 0)));
}

TEST_F(CodecErrorsFixture, EncodeOverlappingOutput) {
  std::vector<uint8_t> big(4 * kLen);
  std::vector<const uint8_t*> data = s_.DataPtrs();
  std::vector<uint8_t*> parity = s_.ParityPtrs();
  // Output over input and input over output: exactly, partially, one byte.
  for (size_t shift : {size_t{0}, size_t{1}, kLen / 2, kLen - 1}) {
    std::vector<const uint8_t*> d = data;
    std::vector<uint8_t*> p = parity;
    d[2] = big.data() + kLen;
    p[1] = big.data() + kLen + shift;
    EXPECT_TRUE(HasCode(codec_->Encode(d, p, kLen), kInvalid)) << "shift " << shift;
    d = data;
    p = parity;
    p[0] = big.data() + kLen;
    d[0] = big.data() + kLen + shift;
    EXPECT_TRUE(HasCode(codec_->Encode(d, p, kLen), kInvalid)) << "shift " << shift;
    d[0] = big.data() + kLen - std::max<size_t>(shift, 1);  // ends inside the output
    EXPECT_TRUE(HasCode(codec_->Encode(d, p, kLen), kInvalid)) << "shift " << shift;
  }
  // Output over output.
  for (size_t shift : {size_t{0}, size_t{1}, kLen - 1}) {
    std::vector<uint8_t*> p = {big.data(), big.data() + shift};
    EXPECT_TRUE(HasCode(codec_->Encode(data, p, kLen), kInvalid)) << "shift " << shift;
  }
  ExpectUnchanged();

  // Ranges that merely touch are not overlapping: all six chunks carved back
  // to back out of one allocation.
  std::vector<uint8_t> flat(6 * kLen);
  std::vector<const uint8_t*> d;
  std::vector<uint8_t*> p;
  for (int i = 0; i < k; ++i) {
    std::copy(s_.chunks[i].begin(), s_.chunks[i].end(), flat.begin() + i * kLen);
    d.push_back(flat.data() + i * kLen);
  }
  for (int i = 0; i < m; ++i) p.push_back(flat.data() + (k + i) * kLen);
  ASSERT_TRUE(IsOk(codec_->Encode(d, p, kLen)));
  for (int i = 0; i < m; ++i) {
    EXPECT_TRUE(std::equal(encoded_[k + i].begin(), encoded_[k + i].end(), p[i]));
  }
}

// Inputs may alias each other (codec.h): they are only read. StripeCoder
// relies on this to feed one zero piece for every fully padded chunk.
TEST_F(CodecErrorsFixture, EncodeAcceptsAliasedInputs) {
  // The same input twice.
  std::vector<const uint8_t*> data = s_.DataPtrs();
  data[3] = data[1];
  StripeData want = s_;
  want.chunks[3] = want.chunks[1];
  ASSERT_TRUE(IsOk(codec_->Encode(data, s_.ParityPtrs(), kLen)));
  ASSERT_TRUE(IsOk(codec_->Encode(want.DataPtrs(), want.ParityPtrs(), kLen)));
  for (int i = k; i < k + m; ++i) EXPECT_EQ(s_.chunks[i], want.chunks[i]) << "parity " << i - k;

  // Inputs overlapping partially, all inside one buffer.
  std::vector<uint8_t> one(2 * kLen);
  for (size_t i = 0; i < one.size(); ++i) one[i] = static_cast<uint8_t>(i * 7 + 1);
  std::vector<const uint8_t*> d = {one.data(), one.data() + 1, one.data() + kLen / 2,
                                   one.data() + kLen};
  StripeData copy = s_;
  for (int i = 0; i < k; ++i) copy.chunks[i].assign(d[i], d[i] + kLen);
  ASSERT_TRUE(IsOk(codec_->Encode(d, s_.ParityPtrs(), kLen)));
  ASSERT_TRUE(IsOk(codec_->Encode(copy.DataPtrs(), copy.ParityPtrs(), kLen)));
  for (int i = k; i < k + m; ++i) EXPECT_EQ(s_.chunks[i], copy.chunks[i]) << "parity " << i - k;
}

TEST_F(CodecErrorsFixture, DecodeBadMasksAndSizes) {
  std::vector<uint8_t*> ptrs = s_.ChunkPtrs();
  const ChunkMask all = AllChunks(k + m);
  // Wrong number of chunk pointers.
  std::vector<uint8_t*> fewer(ptrs.begin(), ptrs.end() - 1);
  std::vector<uint8_t*> more = ptrs;
  more.push_back(ptrs[0]);
  EXPECT_TRUE(HasCode(codec_->Decode(fewer, 0b011111, 0b100000, kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Decode(more, 0b011111, 0b100000, kLen), kInvalid));
  // Available and lost overlap.
  EXPECT_TRUE(HasCode(codec_->Decode(ptrs, all, ChunkBit(4), kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Decode(ptrs, 0b001111, 0b001000, kLen), kInvalid));
  // Bits beyond n in lost or available.
  EXPECT_TRUE(HasCode(codec_->Decode(ptrs, 0b011111, ChunkBit(6), kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Decode(ptrs, 0b011111, ChunkBit(63), kLen), kInvalid));
  EXPECT_TRUE(HasCode(codec_->Decode(ptrs, 0b011110 | ChunkBit(40), 0b1, kLen), kInvalid));
  ExpectUnchanged();
}

TEST_F(CodecErrorsFixture, DecodeTooFewAvailableIsDataLoss) {
  std::vector<uint8_t*> ptrs = s_.ChunkPtrs();
  // Three of four needed; with and without bytes to code.
  for (size_t len : {kLen, size_t{0}}) {
    const Status st = codec_->Decode(ptrs, 0b000111, 0b111000, len);
    EXPECT_TRUE(HasCode(st, StatusCode::kDataLoss)) << "len " << len;
    EXPECT_TRUE(HasCode(codec_->Decode(ptrs, 0, 0b1, len), StatusCode::kDataLoss));
    EXPECT_TRUE(HasCode(codec_->Decode(ptrs, 0b110001, 0b1110, len), StatusCode::kDataLoss));
  }
  ExpectUnchanged();
}

TEST_F(CodecErrorsFixture, DecodeNullPointers) {
  const ChunkMask lost = ChunkBit(1) | ChunkBit(4);
  const ChunkMask available = AllChunks(k + m) & ~lost;
  const ChunkMask survivors = codec_->SurvivorsFor(available);
  for (int i = 0; i < k + m; ++i) {
    if (!((survivors | lost) & ChunkBit(i))) continue;
    std::vector<uint8_t*> ptrs = s_.ChunkPtrs();
    ptrs[i] = nullptr;
    EXPECT_TRUE(HasCode(codec_->Decode(ptrs, available, lost, kLen), kInvalid)) << i;
  }
  ExpectUnchanged();
}

TEST_F(CodecErrorsFixture, DecodeOverlappingOutput) {
  std::vector<uint8_t> big(4 * kLen);
  const ChunkMask lost = ChunkBit(0) | ChunkBit(5);
  const ChunkMask available = AllChunks(k + m) & ~lost;
  for (size_t shift : {size_t{0}, size_t{1}, kLen - 1}) {
    // Two lost chunks over each other.
    std::vector<uint8_t*> ptrs = s_.ChunkPtrs();
    ptrs[0] = big.data();
    ptrs[5] = big.data() + shift;
    EXPECT_TRUE(HasCode(codec_->Decode(ptrs, available, lost, kLen), kInvalid)) << shift;
    // A lost chunk over a survivor that is read.
    ptrs = s_.ChunkPtrs();
    std::copy(s_.chunks[2].begin(), s_.chunks[2].end(), big.begin() + 2 * kLen);
    ptrs[2] = big.data() + 2 * kLen;
    ptrs[5] = big.data() + 2 * kLen + shift;
    EXPECT_TRUE(HasCode(codec_->Decode(ptrs, available, lost, kLen), kInvalid)) << shift;
    ptrs[5] = big.data() + 2 * kLen - std::max<size_t>(shift, 1);  // ends inside chunk 2
    EXPECT_TRUE(HasCode(codec_->Decode(ptrs, available, lost, kLen), kInvalid)) << shift;
  }
  ExpectUnchanged();
}

}  // namespace
}  // namespace holdfast::ec
