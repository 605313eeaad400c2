// StripeCoder: short (zero-padded) chunks, piecewise coding, windows,
// rebuilds, verified rebuilds with corruption, and bad input. The parity of
// a padded stripe is checked against the reference on explicitly padded
// copies.
#include "holdfast/ec/stripe_coder.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "gf_reference.h"
#include "holdfast/ec/checksum.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::HasCode;
using testutil::IsOk;
using testutil::Rng;

constexpr StatusCode kInvalid = StatusCode::kInvalidArgument;
constexpr uint64_t kPiece = 4096;

// A stripe whose data chunks have random real sizes <= chunk_length.
struct ShortStripe {
  int k = 0;
  int m = 0;
  uint64_t chunk_length = 0;
  std::vector<std::vector<uint8_t>> chunks;  // data: real bytes only; parity: chunk_length

  std::vector<ChunkView> Views() {
    std::vector<ChunkView> out;
    for (auto& c : chunks) out.push_back({c.empty() ? nullptr : c.data(), c.size()});
    return out;
  }
  std::vector<uint64_t> Checksums() const {
    std::vector<uint64_t> out;
    for (const auto& c : chunks) out.push_back(Checksum(c));
    return out;
  }
};

ShortStripe MakeStripe(Rng& rng, const Codec& codec, uint64_t chunk_length) {
  ShortStripe s;
  s.k = codec.k();
  s.m = codec.m();
  s.chunk_length = chunk_length;
  for (int i = 0; i < s.k; ++i) {
    uint64_t size = chunk_length;
    switch (rng.UniformInt(0, 4)) {
      case 0:
        size = 0;
        break;
      case 1:
        size = rng.Uniform(0, chunk_length);
        break;
      case 2:
        size = chunk_length - std::min<uint64_t>(chunk_length, rng.Uniform(1, 3));
        break;
      default:
        break;
    }
    s.chunks.push_back(rng.Bytes(size));
  }
  for (int p = 0; p < s.m; ++p) s.chunks.emplace_back(chunk_length, 0xCC);
  return s;
}

std::vector<std::vector<uint8_t>> Reference(const Codec& codec, const ShortStripe& s) {
  std::vector<std::span<const uint8_t>> data;
  for (int i = 0; i < s.k; ++i) data.emplace_back(s.chunks[i]);
  return testutil::RefEncodePadded(codec.generator(), s.k, s.m, data, s.chunk_length);
}

void EncodeAndCheck(const StripeCoder& coder, ShortStripe& s) {
  std::vector<ChunkView> views = s.Views();
  ASSERT_TRUE(IsOk(
      coder.Encode(std::span(views).first(s.k), std::span(views).subspan(s.k), s.chunk_length)));
  const std::vector<std::vector<uint8_t>> want = Reference(coder.codec(), s);
  for (int p = 0; p < s.m; ++p) {
    ASSERT_EQ(testutil::FirstDifference(s.chunks[s.k + p], want[p]), -1)
        << "parity " << p << " chunk_length " << s.chunk_length;
  }
}

TEST(StripeCoderTest, PieceBytesAreClamped) {
  std::unique_ptr<Codec> codec = testutil::MakeCodec(4, 2);
  ASSERT_NE(codec, nullptr);
  EXPECT_EQ(StripeCoder(*codec).piece_bytes(), kDefaultPieceBytes);
  EXPECT_EQ(StripeCoder(*codec, 0).piece_bytes(), 4096u);
  EXPECT_EQ(StripeCoder(*codec, 1).piece_bytes(), 4096u);
  EXPECT_EQ(StripeCoder(*codec, 4095).piece_bytes(), 4096u);
  EXPECT_EQ(StripeCoder(*codec, 12345).piece_bytes(), 12345u);
  EXPECT_EQ(StripeCoder(*codec, uint64_t{1} << 30).piece_bytes(), uint64_t{1} << 30);
  EXPECT_EQ(StripeCoder(*codec, (uint64_t{1} << 30) + 1).piece_bytes(), uint64_t{1} << 30);
  EXPECT_EQ(StripeCoder(*codec, ~uint64_t{0}).piece_bytes(), uint64_t{1} << 30);
  EXPECT_EQ(&StripeCoder(*codec).codec(), codec.get());
}

// Chunk lengths below, at and across piece boundaries, with short and empty
// data chunks, against the reference.
TEST(StripeCoderTest, EncodeShortChunksMatchesReference) {
  Rng rng = testutil::TestRng();
  for (auto [k, m] : {std::pair{1, 1}, std::pair{4, 2}, std::pair{10, 4}, std::pair{3, 8}}) {
    std::unique_ptr<Codec> codec = testutil::MakeCodec(k, m);
    ASSERT_NE(codec, nullptr);
    const StripeCoder coder(*codec, kPiece);
    for (uint64_t len : {uint64_t{0}, uint64_t{1}, uint64_t{97}, kPiece - 1, kPiece, kPiece + 1,
                         3 * kPiece + 17, 5 * kPiece}) {
      for (int round = 0; round < 4; ++round) {
        ShortStripe s = MakeStripe(rng, *codec, len);
        EncodeAndCheck(coder, s);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// The default 1 MiB pieces, with a chunk of a few pieces and a partial tail.
TEST(StripeCoderTest, EncodeWithDefaultPieces) {
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = testutil::MakeCodec(4, 2);
  ASSERT_NE(codec, nullptr);
  const StripeCoder coder(*codec);
  ShortStripe s = MakeStripe(rng, *codec, 2 * kDefaultPieceBytes + 12345);
  s.chunks[1].resize(kDefaultPieceBytes + 1);  // short by more than a piece
  s.chunks[2].clear();
  EncodeAndCheck(coder, s);
}

// Coding a window at a time, in any split, gives Encode's parity, and a
// window writes only its own bytes.
TEST(StripeCoderTest, EncodeRangeWindowsEqualEncode) {
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = testutil::MakeCodec(5, 3);
  ASSERT_NE(codec, nullptr);
  const StripeCoder coder(*codec, kPiece);
  for (int round = 0; round < 30; ++round) {
    ShortStripe s = MakeStripe(rng, *codec, rng.Uniform(1, 6 * kPiece));
    EncodeAndCheck(coder, s);
    if (HasFatalFailure()) return;
    const uint64_t len = s.chunk_length;
    std::vector<std::vector<uint8_t>> want(s.chunks.begin() + s.k, s.chunks.end());

    for (int p = s.k; p < s.k + s.m; ++p) std::fill(s.chunks[p].begin(), s.chunks[p].end(), 0);
    std::vector<ChunkView> views = s.Views();
    for (uint64_t at = 0; at < len;) {
      const uint64_t step = rng.OneIn(3) ? rng.Uniform(1, 5) : rng.Uniform(1, 2 * kPiece + 1);
      const uint64_t window = std::min(step, len - at);
      ASSERT_TRUE(IsOk(coder.EncodeRange(std::span(views).first(s.k), std::span(views).subspan(s.k),
                                         len, at, window)));
      ASSERT_TRUE(IsOk(coder.EncodeRange(std::span(views).first(s.k), std::span(views).subspan(s.k),
                                         len, at, 0)));
      at += window;
    }
    for (int p = 0; p < s.m; ++p) ASSERT_EQ(s.chunks[s.k + p], want[p]) << "round " << round;

    // One window over 0xEE parity: everything outside stays 0xEE.
    const uint64_t off = rng.Uniform(0, len - 1);
    const uint64_t count = rng.Uniform(1, len - off);
    for (int p = s.k; p < s.k + s.m; ++p) std::fill(s.chunks[p].begin(), s.chunks[p].end(), 0xEE);
    ASSERT_TRUE(IsOk(coder.EncodeRange(std::span(views).first(s.k), std::span(views).subspan(s.k),
                                       len, off, count)));
    for (int p = 0; p < s.m; ++p) {
      for (uint64_t b = 0; b < len; ++b) {
        const uint8_t expect = (b >= off && b < off + count) ? want[p][b] : 0xEE;
        ASSERT_EQ(s.chunks[s.k + p][b], expect) << "parity " << p << " byte " << b;
      }
    }
  }
}

// Rebuild writes each lost chunk's real bytes and nothing past them.
TEST(StripeCoderTest, RebuildEveryPatternWithShortChunks) {
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = testutil::MakeCodec(4, 3);
  ASSERT_NE(codec, nullptr);
  const StripeCoder coder(*codec, kPiece);
  const int n = codec->n();
  for (uint64_t len : {uint64_t{1}, uint64_t{500}, 2 * kPiece + 3}) {
    ShortStripe s = MakeStripe(rng, *codec, len);
    EncodeAndCheck(coder, s);
    if (HasFatalFailure()) return;
    testutil::ForEachMask(n, 1, codec->m(), [&](uint64_t lost) {
      if (HasFatalFailure()) return;
      // Backing stores one byte longer than the view, with a sentinel.
      std::vector<std::vector<uint8_t>> work = s.chunks;
      std::vector<ChunkView> views;
      for (int i = 0; i < n; ++i) {
        if (lost & ChunkBit(i)) std::fill(work[i].begin(), work[i].end(), 0xEE);
        work[i].push_back(0x5A);
        views.push_back({work[i].data(), s.chunks[i].size()});
      }
      ASSERT_TRUE(IsOk(coder.Rebuild(views, AllChunks(n) & ~lost, lost, len)))
          << MaskToString(lost);
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(work[i].back(), 0x5A) << "wrote past chunk " << i;
        work[i].pop_back();
        ASSERT_EQ(work[i], s.chunks[i]) << "chunk " << i << " lost " << MaskToString(lost);
      }
    });
  }
}

TEST(StripeCoderTest, BadInput) {
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = testutil::MakeCodec(4, 2);
  ASSERT_NE(codec, nullptr);
  const StripeCoder coder(*codec, kPiece);
  ShortStripe s = MakeStripe(rng, *codec, 1000);
  s.chunks[0].resize(1000);
  s.chunks[1] = rng.Bytes(500);  // real bytes, so a null pointer is an error
  EncodeAndCheck(coder, s);
  if (HasFatalFailure()) return;
  const std::vector<std::vector<uint8_t>> good = s.chunks;
  std::vector<ChunkView> v = s.Views();
  const std::span<const ChunkView> data = std::span(v).first(4);
  const std::span<const ChunkView> parity = std::span(v).subspan(4);

  // Span sizes.
  EXPECT_TRUE(HasCode(coder.Encode(data.first(3), parity, 1000), kInvalid));
  EXPECT_TRUE(HasCode(coder.Encode(data, parity.first(1), 1000), kInvalid));
  EXPECT_TRUE(HasCode(coder.Encode(std::span(v).first(5), parity, 1000), kInvalid));
  EXPECT_TRUE(HasCode(coder.Rebuild(std::span(v).first(5), 0b11110, 0b1, 1000), kInvalid));
  // Chunk sizes: data longer than the stripe, parity not chunk_length.
  EXPECT_TRUE(HasCode(coder.Encode(data, parity, 999), kInvalid));
  EXPECT_TRUE(HasCode(coder.Rebuild(v, 0b011111, 0b100000, 999), kInvalid));
  std::vector<ChunkView> w = v;
  w[5].size = 999;
  EXPECT_TRUE(
      HasCode(coder.Encode(std::span(w).first(4), std::span(w).subspan(4), 1000), kInvalid));
  EXPECT_TRUE(HasCode(coder.Rebuild(w, 0b011111, 0b100000, 1000), kInvalid));
  // Null pointers with bytes behind them.
  w = v;
  w[1].data = nullptr;
  EXPECT_TRUE(
      HasCode(coder.Encode(std::span(w).first(4), std::span(w).subspan(4), 1000), kInvalid));
  w = v;
  w[4].data = nullptr;
  EXPECT_TRUE(
      HasCode(coder.Encode(std::span(w).first(4), std::span(w).subspan(4), 1000), kInvalid));
  EXPECT_TRUE(HasCode(coder.Rebuild(w, 0b101111, 0b010000, 1000), kInvalid));
  // Windows outside the stripe, including ones whose end wraps around.
  for (auto [off, len] : {std::pair<uint64_t, uint64_t>{0, 1001},
                          {1000, 1},
                          {999, 2},
                          {1001, 0},
                          {~uint64_t{0}, 2},
                          {2, ~uint64_t{0}}}) {
    const Status st = coder.EncodeRange(data, parity, 1000, off, len);
    EXPECT_FALSE(st.ok()) << off << "+" << len;
    EXPECT_TRUE(st.code() == kInvalid || st.code() == StatusCode::kOutOfRange) << st.ToString();
  }
  // Masks.
  EXPECT_TRUE(HasCode(coder.Rebuild(v, 0b000111, 0b111000, 1000), StatusCode::kDataLoss));
  EXPECT_TRUE(HasCode(coder.Rebuild(v, 0b111111, 0b000001, 1000), kInvalid));
  EXPECT_TRUE(HasCode(coder.Rebuild(v, 0b111110, ChunkBit(6), 1000), kInvalid));
  EXPECT_EQ(s.chunks, good) << "a failed call wrote output";

  // Null views with zero real bytes are empty pieces, not errors.
  w = v;
  w[2] = ChunkView{};
  w[3] = ChunkView{};
  EXPECT_TRUE(IsOk(coder.Encode(std::span(w).first(4), std::span(w).subspan(4), 1000)));
  EXPECT_TRUE(IsOk(coder.Rebuild(w, 0b111101, 0b000010, 1000)));
  EXPECT_EQ(s.chunks[1], good[1]);
}

// Overlapping views are rejected as Codec rejects overlapping chunks, whether
// or not a chunk involved is short. (A short chunk's window is copied to
// scratch, which must not hide the overlap from the check.)
TEST(StripeCoderTest, OverlappingViewsAreRejectedEvenWhenShort) {
  std::unique_ptr<Codec> codec = testutil::MakeCodec(4, 2);
  ASSERT_NE(codec, nullptr);
  const StripeCoder coder(*codec, kPiece);
  constexpr uint64_t kLen = 1000;
  std::vector<std::vector<uint8_t>> own(6, std::vector<uint8_t>(kLen, 1));
  for (uint64_t real : {kLen, kLen / 2}) {
    // Encode: parity 0 written over data chunk 1's real bytes.
    std::vector<uint8_t> shared(2 * kLen, 2);
    std::vector<ChunkView> data = {
        {own[0].data(), kLen}, {shared.data(), real}, {own[2].data(), kLen}, {own[3].data(), kLen}};
    std::vector<ChunkView> parity = {{shared.data() + 100, kLen}, {own[5].data(), kLen}};
    EXPECT_TRUE(HasCode(coder.Encode(data, parity, kLen), kInvalid)) << "data size " << real;

    // Rebuild: lost chunk 1 written over surviving chunk 0.
    std::vector<ChunkView> chunks = {{shared.data(), kLen}, {shared.data() + 10, real},
                                     {own[2].data(), kLen}, {own[3].data(), kLen},
                                     {own[4].data(), kLen}, {own[5].data(), kLen}};
    EXPECT_TRUE(HasCode(coder.Rebuild(chunks, 0b111101, 0b000010, kLen), kInvalid))
        << "lost size " << real;
  }
}

// A small VerifiedRebuild fixture: k = 6, m = 3, a stripe spanning several
// pieces with short data chunks (chunk 0 is always full, chunk 1 empty).
class VerifiedRebuildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    codec_ = testutil::MakeCodec(6, 3);
    ASSERT_NE(codec_, nullptr);
    coder_ = std::make_unique<StripeCoder>(*codec_, kPiece);
    rng_ = std::make_unique<Rng>(testutil::TestRng());
    s_ = MakeStripe(*rng_, *codec_, 3 * kPiece + 11);
    s_.chunks[0] = rng_->Bytes(s_.chunk_length);
    s_.chunks[1].clear();
    s_.chunks[2] = rng_->Bytes(kPiece + 5);
    s_.chunks[3] = rng_->Bytes(2 * kPiece + 1);
    EncodeAndCheck(*coder_, s_);
    sums_ = s_.Checksums();
    work_ = s_;
  }

  Result<RebuildReport> Run(ChunkMask available, ChunkMask lost) {
    for (int i = 0; i < 9; ++i) {
      if (lost & ChunkBit(i)) std::fill(work_.chunks[i].begin(), work_.chunks[i].end(), 0xEE);
    }
    std::vector<ChunkView> views = work_.Views();
    return coder_->VerifiedRebuild(views, sums_, available, lost, s_.chunk_length);
  }

  void Corrupt(int chunk) {
    ASSERT_FALSE(work_.chunks[chunk].empty());
    work_.chunks[chunk][rng_->Uniform(0, work_.chunks[chunk].size() - 1)] ^= 0x40;
  }

  std::unique_ptr<Codec> codec_;
  std::unique_ptr<StripeCoder> coder_;
  std::unique_ptr<Rng> rng_;
  ShortStripe s_;
  ShortStripe work_;
  std::vector<uint64_t> sums_;
};

TEST_F(VerifiedRebuildTest, CleanRebuild) {
  const ChunkMask lost = ChunkBit(0) | ChunkBit(2) | ChunkBit(7);
  const ChunkMask available = AllChunks(9) & ~lost;
  Result<RebuildReport> report = Run(available, lost);
  ASSERT_TRUE(IsOk(report));
  EXPECT_EQ(report->corrupted, 0u);
  EXPECT_EQ(report->rebuilt, lost);
  EXPECT_EQ(report->read, codec_->SurvivorsFor(available));
  EXPECT_EQ(work_.chunks, s_.chunks);
  EXPECT_FALSE(report->ToString().empty());
}

TEST_F(VerifiedRebuildTest, CorruptSurvivorIsReplacedAndRebuilt) {
  for (int bad : {0, 2, 3, 6}) {  // data (full and short) and parity
    work_ = s_;
    const ChunkMask lost = ChunkBit(bad == 3 ? 4 : 3) | ChunkBit(8);
    const ChunkMask available = AllChunks(9) & ~lost;
    ASSERT_NE(codec_->SurvivorsFor(available) & ChunkBit(bad), 0u) << "bad " << bad;
    Corrupt(bad);
    Result<RebuildReport> report = Run(available, lost);
    ASSERT_TRUE(IsOk(report)) << "corrupt " << bad;
    EXPECT_EQ(report->corrupted, ChunkBit(bad)) << report->ToString();
    EXPECT_EQ(report->rebuilt, lost | ChunkBit(bad)) << report->ToString();
    EXPECT_EQ(report->read, codec_->SurvivorsFor(available & ~ChunkBit(bad))) << report->ToString();
    EXPECT_EQ(work_.chunks, s_.chunks) << "corrupt " << bad;
  }
}

// Only the chunks the decode needs are verified (stripe_coder.h): a corrupt
// chunk it does not read goes unnoticed and untouched.
TEST_F(VerifiedRebuildTest, CorruptUnreadChunkIsNotChecked) {
  const ChunkMask lost = ChunkBit(3);
  const ChunkMask available = AllChunks(9) & ~lost;
  ASSERT_EQ(codec_->SurvivorsFor(available) & ChunkBit(7), 0u);
  Corrupt(7);
  const std::vector<uint8_t> corrupt = work_.chunks[7];
  Result<RebuildReport> report = Run(available, lost);
  ASSERT_TRUE(IsOk(report));
  EXPECT_EQ(report->corrupted, 0u) << report->ToString();
  EXPECT_EQ(report->rebuilt, lost);
  EXPECT_EQ(report->read, codec_->SurvivorsFor(available));
  EXPECT_EQ(work_.chunks[3], s_.chunks[3]);
  EXPECT_EQ(work_.chunks[7], corrupt);
}

// Each corrupt chunk found pulls in the next available one, which is checked
// in turn. Nothing is lost; reading starts with {0..5}: 2 is corrupt, so 6 is
// tried, which is corrupt, so 7, also corrupt, so 8. All three are repaired.
TEST_F(VerifiedRebuildTest, CorruptReplacementIsAlsoReplaced) {
  Corrupt(2);
  Corrupt(6);
  Corrupt(7);
  Result<RebuildReport> report = Run(AllChunks(9), 0);
  ASSERT_TRUE(IsOk(report)) << report.status().ToString();
  const ChunkMask bad = ChunkBit(2) | ChunkBit(6) | ChunkBit(7);
  EXPECT_EQ(report->corrupted, bad) << report->ToString();
  EXPECT_EQ(report->rebuilt, bad) << report->ToString();
  EXPECT_EQ(report->read, AllChunks(9) & ~bad);
  EXPECT_EQ(work_.chunks, s_.chunks);
}

TEST_F(VerifiedRebuildTest, TooFewIntactIsDataLossNamingTheChunks) {
  // Two lost plus two corrupt leaves 5 < k = 6 intact.
  const ChunkMask lost = ChunkBit(4) | ChunkBit(8);
  Corrupt(0);
  Corrupt(6);
  Result<RebuildReport> report = Run(AllChunks(9) & ~lost, lost);
  ASSERT_TRUE(HasCode(report, StatusCode::kDataLoss));
  const std::string msg = report.status().message();
  EXPECT_NE(msg.find(MaskToString(ChunkBit(0) | ChunkBit(6))), std::string::npos) << msg;

  // Nothing lost, but four corrupt: also more than m bad chunks.
  work_ = s_;
  for (int bad : {0, 2, 3, 7}) Corrupt(bad);
  report = Run(AllChunks(9), 0);
  ASSERT_TRUE(HasCode(report, StatusCode::kDataLoss));
}

TEST_F(VerifiedRebuildTest, WrongExpectedChecksumOfLostChunkIsDataLoss) {
  for (int target : {0, 2, 7}) {
    work_ = s_;
    sums_ = s_.Checksums();
    sums_[target] ^= 1;
    const ChunkMask lost = ChunkBit(target);
    Result<RebuildReport> report = Run(AllChunks(9) & ~lost, lost);
    EXPECT_TRUE(HasCode(report, StatusCode::kDataLoss)) << "chunk " << target;
  }
}

TEST_F(VerifiedRebuildTest, BadInput) {
  std::vector<ChunkView> views = work_.Views();
  std::vector<uint64_t> short_sums(sums_.begin(), sums_.end() - 1);
  EXPECT_TRUE(
      HasCode(coder_->VerifiedRebuild(views, short_sums, 0b011111111, 0b100000000, s_.chunk_length),
              kInvalid));
  EXPECT_TRUE(HasCode(
      coder_->VerifiedRebuild(views, sums_, 0b111111111, 0b100000000, s_.chunk_length), kInvalid));
  EXPECT_TRUE(
      HasCode(coder_->VerifiedRebuild(views, sums_, 0b000011111, 0b111100000, s_.chunk_length),
              StatusCode::kDataLoss));
}

// One coder shared by threads rebuilding different patterns.
TEST(StripeCoderTest, SharedAcrossThreads) {
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = testutil::MakeCodec(8, 3, 4);
  ASSERT_NE(codec, nullptr);
  const StripeCoder coder(*codec, kPiece);
  ShortStripe s = MakeStripe(rng, *codec, 2 * kPiece + 9);
  EncodeAndCheck(coder, s);
  if (HasFatalFailure()) return;
  const std::vector<uint64_t> sums = s.Checksums();
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t, r = rng.Fork()]() mutable {
      for (int round = 0; round < 40 && errors[t].empty(); ++round) {
        ShortStripe work = s;
        const ChunkMask lost = r.Subset(AllChunks(11), 1 + (round + t) % 3);
        for (int i = 0; i < 11; ++i) {
          if (lost & ChunkBit(i)) std::fill(work.chunks[i].begin(), work.chunks[i].end(), 0);
        }
        std::vector<ChunkView> views = work.Views();
        Result<RebuildReport> rep =
            coder.VerifiedRebuild(views, sums, AllChunks(11) & ~lost, lost, s.chunk_length);
        if (!rep.ok() || work.chunks != s.chunks) {
          errors[t] = MaskToString(lost) + ": " + rep.status().ToString();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 3; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
}

}  // namespace
}  // namespace holdfast::ec
