// Every chunk in its own guard-page buffer (test_buffers.h): any read or write
// past a chunk's end, or before its start by more than its offset, faults.
// ISA-L's vector loops and our tail and padding handling are where an
// off-by-one would hide.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "gf_reference.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/ec/codec.h"
#include "holdfast/ec/stripe_coder.h"
#include "test_buffers.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::GuardedBuffer;
using testutil::IsOk;
using testutil::Rng;
using Placement = GuardedBuffer::Placement;

struct GuardedStripe {
  std::vector<GuardedBuffer> chunks;

  GuardedStripe(int n, const std::vector<size_t>& sizes, Placement placement, size_t offset) {
    for (int i = 0; i < n; ++i) chunks.emplace_back(sizes[i], placement, offset);
  }
  std::vector<const uint8_t*> Data(int k) const {
    std::vector<const uint8_t*> out;
    for (int i = 0; i < k; ++i) out.push_back(chunks[i].data());
    return out;
  }
  std::vector<uint8_t*> Parity(int k) {
    std::vector<uint8_t*> out;
    for (size_t i = k; i < chunks.size(); ++i) out.push_back(chunks[i].data());
    return out;
  }
  std::vector<uint8_t*> All() {
    std::vector<uint8_t*> out;
    for (auto& c : chunks) out.push_back(c.data());
    return out;
  }
  std::vector<ChunkView> Views() {
    std::vector<ChunkView> out;
    for (auto& c : chunks) out.push_back({c.data(), c.size()});
    return out;
  }
};

// The helper itself: one byte past the end, or past the front offset, faults.
TEST(GuardPageDeathTest, GuardPagesFault) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  GuardedBuffer rear(100);
  rear.FillWith(1);  // every byte inside is fine
  EXPECT_DEATH(
      {
        volatile uint8_t* p = rear.data();
        p[100] = 1;
      },
      "");
  GuardedBuffer front(100, Placement::kAfterFrontGuard, 5);
  front.FillWith(1);
  EXPECT_DEATH(
      {
        volatile uint8_t* p = front.data();
        p[-6] = 1;
      },
      "");
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(front.data()) % page, 5u);
  EXPECT_EQ((reinterpret_cast<uintptr_t>(rear.data()) + 100) % page, 0u);
}

// Encode, then decode the two worst cases (all parity lost, as many data
// chunks as possible lost), all in guarded buffers.
void CodecRoundTrip(const Codec& codec, size_t len, Placement placement, size_t offset, Rng& rng) {
  const int k = codec.k();
  const int n = codec.n();
  GuardedStripe s(n, std::vector<size_t>(n, len), placement, offset);
  std::vector<std::vector<uint8_t>> want(n);
  for (int i = 0; i < k; ++i) {
    rng.Fill(s.chunks[i].span());
    want[i].assign(s.chunks[i].data(), s.chunks[i].data() + len);
  }
  ASSERT_TRUE(IsOk(codec.Encode(s.Data(k), s.Parity(k), len)));
  std::vector<std::span<const uint8_t>> spans;
  for (int i = 0; i < k; ++i) spans.emplace_back(want[i]);
  std::vector<std::vector<uint8_t>> parity =
      testutil::RefEncodePadded(codec.generator(), k, codec.m(), spans, len);
  for (int p = 0; p < codec.m(); ++p) want[k + p] = parity[p];
  for (int i = k; i < n; ++i) {
    ASSERT_TRUE(std::equal(want[i].begin(), want[i].end(), s.chunks[i].data()))
        << "parity " << i - k << " len " << len << " offset " << offset;
  }
  for (ChunkMask lost :
       {AllChunks(n) & ~AllChunks(k), LowestChunks(AllChunks(k), std::min(k, codec.m()))}) {
    for (int i = 0; i < n; ++i) {
      if (lost & ChunkBit(i)) s.chunks[i].FillWith(0xEE);
    }
    ASSERT_TRUE(IsOk(codec.Decode(s.All(), AllChunks(n) & ~lost, lost, len)));
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(std::equal(want[i].begin(), want[i].end(), s.chunks[i].data()))
          << "chunk " << i << " lost " << MaskToString(lost) << " len " << len;
    }
  }
}

TEST(GuardPageTest, CodecAgainstRearGuard) {
  Rng rng = testutil::TestRng();
  for (auto [k, m] : {std::pair{1, 1}, std::pair{4, 2}, std::pair{10, 4}, std::pair{5, 8}}) {
    std::unique_ptr<Codec> codec = testutil::MakeCodec(k, m);
    ASSERT_NE(codec, nullptr);
    for (size_t len : {1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 4095, 4096, 4097, 65537}) {
      CodecRoundTrip(*codec, len, Placement::kAgainstRearGuard, 0, rng);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(GuardPageTest, CodecAtEveryMisalignment) {
  Rng rng = testutil::TestRng();
  std::unique_ptr<Codec> codec = testutil::MakeCodec(6, 3);
  ASSERT_NE(codec, nullptr);
  for (size_t offset = 1; offset < 64; ++offset) {
    for (size_t len : {size_t{33}, size_t{64}, size_t{1000}}) {
      CodecRoundTrip(*codec, len, Placement::kAfterFrontGuard, offset, rng);
      // Against the rear guard, len + offset moves the start by -offset.
      CodecRoundTrip(*codec, len + offset, Placement::kAgainstRearGuard, 0, rng);
      if (HasFatalFailure()) return;
    }
  }
}

// Short data chunks end at a guard page: reading a short chunk past its real
// size (instead of padding with zeros) faults, and so does rebuilding a lost
// short chunk past its real size.
TEST(GuardPageTest, StripeCoderShortChunksAgainstGuard) {
  Rng rng = testutil::TestRng();
  constexpr int k = 4;
  constexpr int m = 2;
  constexpr int n = k + m;
  std::unique_ptr<Codec> codec = testutil::MakeCodec(k, m);
  ASSERT_NE(codec, nullptr);
  const StripeCoder coder(*codec, 4096);
  for (size_t chunk_length : {size_t{1}, size_t{4095}, size_t{4096}, size_t{3 * 4096 + 5}}) {
    for (int round = 0; round < 6; ++round) {
      std::vector<size_t> sizes(n, chunk_length);
      for (int i = 1; i < k; ++i) sizes[i] = rng.Uniform(0, chunk_length);
      GuardedStripe s(n, sizes,
                      round % 2 ? Placement::kAfterFrontGuard : Placement::kAgainstRearGuard,
                      round % 2 ? rng.Uniform(1, 63) : 0);
      for (int i = 0; i < k; ++i) rng.Fill(s.chunks[i].span());
      std::vector<ChunkView> views = s.Views();
      ASSERT_TRUE(
          IsOk(coder.Encode(std::span(views).first(k), std::span(views).subspan(k), chunk_length)));
      std::vector<std::span<const uint8_t>> spans;
      for (int i = 0; i < k; ++i) spans.push_back(s.chunks[i].span());
      const std::vector<std::vector<uint8_t>> parity =
          testutil::RefEncodePadded(codec->generator(), k, m, spans, chunk_length);
      std::vector<std::vector<uint8_t>> want;
      for (auto& c : s.chunks) want.emplace_back(c.span().begin(), c.span().end());
      for (int p = 0; p < m; ++p) ASSERT_EQ(want[k + p], parity[p]) << "parity " << p;

      const ChunkMask lost = rng.Subset(AllChunks(n), rng.UniformInt(1, m));
      for (int i = 0; i < n; ++i) {
        if (lost & ChunkBit(i)) s.chunks[i].FillWith(0xEE);
      }
      ASSERT_TRUE(IsOk(coder.Rebuild(views, AllChunks(n) & ~lost, lost, chunk_length)));
      std::vector<uint64_t> sums;
      for (int i = 0; i < n; ++i) {
        ASSERT_TRUE(std::equal(want[i].begin(), want[i].end(), s.chunks[i].data()))
            << "chunk " << i << " lost " << MaskToString(lost);
        sums.push_back(Checksum(want[i]));
      }
      // Verified rebuild checks (reads) every real byte it may use.
      for (int i = 0; i < n; ++i) {
        if (lost & ChunkBit(i)) s.chunks[i].FillWith(0x11);
      }
      Result<RebuildReport> report =
          coder.VerifiedRebuild(views, sums, AllChunks(n) & ~lost, lost, chunk_length);
      ASSERT_TRUE(IsOk(report));
      EXPECT_EQ(report->corrupted, 0u);
      for (int i = 0; i < n; ++i) {
        ASSERT_TRUE(std::equal(want[i].begin(), want[i].end(), s.chunks[i].data()));
      }
    }
  }
}

}  // namespace
}  // namespace holdfast::ec
