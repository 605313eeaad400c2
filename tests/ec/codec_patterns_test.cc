// Every erasure pattern: for each shape, every set of 1..m lost chunks (data,
// parity or both) is rebuilt byte for byte, from exactly the surviving chunks
// and from every larger-than-k availability the pattern allows.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "gf_reference.h"
#include "holdfast/ec/codec.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::FirstDifference;
using testutil::IsOk;
using testutil::RandomStripe;
using testutil::Rng;
using testutil::StripeData;

struct Shape {
  int k;
  int m;
  size_t cache_entries;  // 1: every new pattern evicts the previous tables
};

void PrintTo(const Shape& s, std::ostream* os) {
  *os << s.k << "+" << s.m << " cache " << s.cache_entries;
}

class ErasurePatternTest : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    const Shape& shape = GetParam();
    codec_ = testutil::MakeCodec(shape.k, shape.m, shape.cache_entries);
    ASSERT_NE(codec_, nullptr);
    Rng rng = testutil::TestRng();
    stripe_ = RandomStripe(rng, shape.k, shape.m, kLen);
    ASSERT_TRUE(IsOk(codec_->Encode(stripe_.DataPtrs(), stripe_.ParityPtrs(), kLen)));
    // The parity itself is checked against the reference once per shape.
    std::vector<std::vector<uint8_t>> want(shape.m, std::vector<uint8_t>(kLen));
    std::vector<uint8_t*> out;
    for (auto& w : want) out.push_back(w.data());
    testutil::RefEncode(codec_->generator(), shape.k, shape.m, stripe_.DataPtrs(), out, kLen);
    for (int p = 0; p < shape.m; ++p) ASSERT_EQ(stripe_.chunks[shape.k + p], want[p]);
  }

  // Loses `lost`, decodes with `available`, and checks every chunk.
  void Check(ChunkMask available, ChunkMask lost) {
    const int n = codec_->n();
    std::vector<std::vector<uint8_t>> work = stripe_.chunks;
    std::vector<uint8_t*> ptrs;
    for (int i = 0; i < n; ++i) {
      if (lost & ChunkBit(i)) std::fill(work[i].begin(), work[i].end(), 0xEE);
      ptrs.push_back(work[i].data());
    }
    ASSERT_TRUE(IsOk(codec_->Decode(ptrs, available, lost, kLen)))
        << "available " << MaskToString(available) << " lost " << MaskToString(lost);
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(FirstDifference(work[i], stripe_.chunks[i]), -1)
          << "chunk " << i << ", available " << MaskToString(available) << " lost "
          << MaskToString(lost);
    }
  }

  static constexpr size_t kLen = 517;  // odd: exercises ISA-L's tail handling
  std::unique_ptr<Codec> codec_;
  StripeData stripe_;
};

// Every pattern of 1..m lost chunks, decoded from all the others (more than
// k available whenever fewer than m are lost).
TEST_P(ErasurePatternTest, EveryPatternFromAllSurvivors) {
  const int n = codec_->n();
  uint64_t patterns = 0;
  testutil::ForEachMask(n, 1, codec_->m(), [&](uint64_t lost) {
    if (HasFatalFailure()) return;
    Check(AllChunks(n) & ~lost, lost);
    ++patterns;
  });
  EXPECT_EQ(patterns, testutil::CountMasks(n, 1, codec_->m()));
}

// Every pattern again, decoded from exactly k available chunks: the lowest k
// of the survivors and, separately, the highest k (which forces the parity
// into the decode matrix whenever possible).
TEST_P(ErasurePatternTest, EveryPatternFromExactlyK) {
  const int n = codec_->n();
  const int k = codec_->k();
  testutil::ForEachMask(n, 1, codec_->m(), [&](uint64_t lost) {
    if (HasFatalFailure()) return;
    const ChunkMask rest = AllChunks(n) & ~lost;
    const ChunkMask lowest = LowestChunks(rest, k);
    ChunkMask highest = 0;
    for (int i = n - 1, taken = 0; i >= 0 && taken < k; --i) {
      if (rest & ChunkBit(i)) {
        highest |= ChunkBit(i);
        ++taken;
      }
    }
    ASSERT_EQ(codec_->SurvivorsFor(rest), lowest);
    ASSERT_EQ(codec_->SurvivorsFor(highest), highest);
    Check(lowest, lost);
    Check(highest, lost);
  });
}

// A subset of the lost chunks may be requested: the others stay untouched.
TEST_P(ErasurePatternTest, RebuildsOnlyWhatIsAsked) {
  const int n = codec_->n();
  Rng rng = testutil::TestRng();
  testutil::ForEachMask(n, 2, codec_->m(), [&](uint64_t missing) {
    if (HasFatalFailure()) return;
    const ChunkMask wanted = rng.Subset(missing, rng.UniformInt(1, std::popcount(missing) - 1));
    std::vector<std::vector<uint8_t>> work = stripe_.chunks;
    std::vector<uint8_t*> ptrs;
    for (int i = 0; i < n; ++i) {
      if (missing & ChunkBit(i)) std::fill(work[i].begin(), work[i].end(), 0xEE);
      ptrs.push_back(work[i].data());
    }
    ASSERT_TRUE(IsOk(codec_->Decode(ptrs, AllChunks(n) & ~missing, wanted, kLen)));
    for (int i = 0; i < n; ++i) {
      const bool untouched = (missing & ~wanted) & ChunkBit(i);
      const std::vector<uint8_t> want =
          untouched ? std::vector<uint8_t>(kLen, 0xEE) : stripe_.chunks[i];
      ASSERT_EQ(work[i], want) << "chunk " << i << " missing " << MaskToString(missing)
                               << " wanted " << MaskToString(wanted);
    }
  });
}

// More than m lost is DATA_LOSS for every such pattern with m + 1 losses.
TEST_P(ErasurePatternTest, MoreThanMLostIsDataLoss) {
  const int n = codec_->n();
  testutil::ForEachMask(n, codec_->m() + 1, codec_->m() + 1, [&](uint64_t lost) {
    std::vector<std::vector<uint8_t>> work = stripe_.chunks;
    std::vector<uint8_t*> ptrs;
    for (auto& w : work) ptrs.push_back(w.data());
    const Status st = codec_->Decode(ptrs, AllChunks(n) & ~lost, lost, kLen);
    ASSERT_TRUE(testutil::HasCode(st, StatusCode::kDataLoss)) << MaskToString(lost);
    ASSERT_EQ(work, stripe_.chunks) << "an error must not write";
  });
}

std::string ShapeName(const ::testing::TestParamInfo<Shape>& info) {
  return "k" + std::to_string(info.param.k) + "m" + std::to_string(info.param.m) + "cache" +
         std::to_string(info.param.cache_entries);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ErasurePatternTest,
                         ::testing::Values(Shape{2, 1, 4096}, Shape{4, 2, 4096}, Shape{8, 2, 4096},
                                           Shape{10, 4, 4096}, Shape{4, 2, 1}, Shape{10, 4, 1}),
                         ShapeName);

}  // namespace
}  // namespace holdfast::ec
