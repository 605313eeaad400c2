// End to end: a group of nodes with real buffers, laid out by GroupLayout and
// coded by StripeCoder. For every set of up to m lost nodes, the lost nodes'
// data and parity buffers are wiped and rebuilt from the plan's `read`
// chunks, and must come back byte for byte.
//
// Node buffers are guard-page buffers ending at a PROT_NONE page, so a coder
// that reads or writes a data piece past its real size faults.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "gf_reference.h"
#include "holdfast/ec/codec.h"
#include "holdfast/ec/layout.h"
#include "holdfast/ec/stripe_coder.h"
#include "test_buffers.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::GuardedBuffer;
using testutil::IsOk;
using testutil::Rng;

constexpr uint64_t kPiece = 4096;  // small, so chunks span several pieces

class Group {
 public:
  Group(Rng& rng, const LayoutOptions& options, const std::vector<uint64_t>& sizes)
      : options_(options), sizes_(sizes) {
    Result<GroupLayout> layout = GroupLayout::Create(options, sizes);
    EXPECT_TRUE(IsOk(layout)) << Describe();
    if (!layout.ok()) return;
    layout_ = std::make_unique<GroupLayout>(std::move(layout).value());
    codec_ = testutil::MakeCodec(options.k, options.m);
    coder_ = std::make_unique<StripeCoder>(*codec_, kPiece);
    for (int i = 0; i < layout_->n(); ++i) {
      data_.emplace_back(sizes[i]);
      rng.Fill(data_.back().span());
      parity_.emplace_back(layout_->parity_bytes(i));
      parity_.back().FillWith(0xCC);
    }
  }

  bool ok() const { return layout_ != nullptr && codec_ != nullptr; }
  const GroupLayout& layout() const { return *layout_; }
  const StripeCoder& coder() const { return *coder_; }
  const Codec& codec() const { return *codec_; }

  std::string Describe() const {
    std::string out = "k=" + std::to_string(options_.k) + " m=" + std::to_string(options_.m) +
                      " alignment=" + std::to_string(options_.alignment) + " sizes=[";
    for (uint64_t s : sizes_) out += std::to_string(s) + " ";
    return out + "]";
  }

  // The chunk views of one stripe, straight into the node buffers.
  std::vector<ChunkView> Views(int stripe) {
    std::vector<ChunkView> views;
    for (int c = 0; c < layout_->n(); ++c) {
      const Extent e = layout_->ChunkExtent(stripe, c);
      GuardedBuffer& buf = e.buffer == Extent::Buffer::kData ? data_[e.node] : parity_[e.node];
      EXPECT_LE(e.offset + e.length, buf.size()) << "stripe " << stripe << " chunk " << c;
      views.push_back({e.length == 0 ? nullptr : buf.data() + e.offset, e.length});
    }
    return views;
  }

  void EncodeAll() {
    const int k = layout_->k();
    for (int r = 0; r < layout_->n(); ++r) {
      std::vector<ChunkView> v = Views(r);
      ASSERT_TRUE(IsOk(
          coder_->Encode(std::span(v).first(k), std::span(v).subspan(k), layout_->chunk_length(r))))
          << "stripe " << r;
    }
  }

  // Every stripe's stored parity against the reference on padded copies.
  void CheckParityAgainstReference() {
    const int k = layout_->k();
    for (int r = 0; r < layout_->n(); ++r) {
      std::vector<ChunkView> v = Views(r);
      std::vector<std::span<const uint8_t>> data;
      for (int c = 0; c < k; ++c) data.emplace_back(v[c].data, v[c].size);
      const std::vector<std::vector<uint8_t>> want = testutil::RefEncodePadded(
          codec_->generator(), k, layout_->m(), data, layout_->chunk_length(r));
      for (int p = 0; p < layout_->m(); ++p) {
        const ChunkView& got = v[k + p];
        ASSERT_EQ(got.size, want[p].size());
        ASSERT_TRUE(std::equal(want[p].begin(), want[p].end(), got.data))
            << "stripe " << r << " parity " << p;
      }
    }
  }

  // Copies of every node's buffers.
  std::vector<std::vector<uint8_t>> Snapshot() const {
    std::vector<std::vector<uint8_t>> out;
    for (const auto& b : data_) out.emplace_back(b.span().begin(), b.span().end());
    for (const auto& b : parity_) out.emplace_back(b.span().begin(), b.span().end());
    return out;
  }

  void Wipe(NodeMask lost, Rng& rng) {
    for (int i = 0; i < layout_->n(); ++i) {
      if (!(lost & (uint64_t{1} << i))) continue;
      rng.Fill(data_[i].span());
      rng.Fill(parity_[i].span());
    }
  }

  // Rebuilds after losing `lost`, reading only the plan's chunks.
  void Rebuild(NodeMask lost) {
    Result<std::vector<StripeRebuild>> plan = layout_->PlanRebuild(lost);
    ASSERT_TRUE(IsOk(plan)) << MaskToString(lost);
    for (const StripeRebuild& s : *plan) {
      std::vector<ChunkView> v = Views(s.stripe);
      // Unread chunks get null views: reading one would fault.
      for (int c = 0; c < layout_->n(); ++c) {
        if (!((s.read | s.lost) & ChunkBit(c))) v[c] = ChunkView{nullptr, v[c].size};
      }
      ASSERT_TRUE(IsOk(coder_->Rebuild(v, s.read, s.lost, layout_->chunk_length(s.stripe))))
          << "stripe " << s.stripe << " lost " << MaskToString(s.lost) << " read "
          << MaskToString(s.read);
    }
  }

 private:
  LayoutOptions options_;
  std::vector<uint64_t> sizes_;
  std::unique_ptr<GroupLayout> layout_;
  std::unique_ptr<Codec> codec_;
  std::unique_ptr<StripeCoder> coder_;
  std::vector<GuardedBuffer> data_;
  std::vector<GuardedBuffer> parity_;
};

// Sizes that make pieces of several 4 KiB coding pieces with a partial last
// one, plus empty, one-byte and odd nodes.
std::vector<uint64_t> RandomSizes(Rng& rng, int n, int k) {
  std::vector<uint64_t> sizes;
  for (int i = 0; i < n; ++i) {
    switch (rng.UniformInt(0, 5)) {
      case 0:
        sizes.push_back(0);
        break;
      case 1:
        sizes.push_back(rng.Uniform(1, 3));
        break;
      case 2:
        sizes.push_back(rng.Uniform(4, 5000));
        break;
      default:
        sizes.push_back(k * rng.Uniform(2 * kPiece, 4 * kPiece) + rng.Uniform(0, k));
        break;
    }
  }
  return sizes;
}

LayoutOptions Options(int k, int m, uint64_t alignment) {
  LayoutOptions o;
  o.k = k;
  o.m = m;
  o.alignment = alignment;
  return o;
}

void LoseEverySetAndRebuild(Group& g, Rng& rng, bool exhaustive) {
  SCOPED_TRACE(g.Describe());
  g.EncodeAll();
  if (::testing::Test::HasFatalFailure()) return;
  g.CheckParityAgainstReference();
  if (::testing::Test::HasFatalFailure()) return;
  const std::vector<std::vector<uint8_t>> pristine = g.Snapshot();
  const int n = g.layout().n();
  auto one = [&](NodeMask lost) {
    if (::testing::Test::HasFatalFailure()) return;
    g.Wipe(lost, rng);
    g.Rebuild(lost);
    const std::vector<std::vector<uint8_t>> now = g.Snapshot();
    for (size_t b = 0; b < now.size(); ++b) {
      const int node = static_cast<int>(b % n);
      ASSERT_EQ(testutil::FirstDifference(now[b], pristine[b]), -1)
          << (b < static_cast<size_t>(n) ? "data" : "parity") << " of node " << node
          << " after losing nodes " << MaskToString(lost);
    }
  };
  if (exhaustive) {
    testutil::ForEachMask(n, 1, g.layout().m(), one);
  } else {
    for (int i = 0; i < 60; ++i) one(rng.Subset(AllChunks(n), rng.UniformInt(1, g.layout().m())));
  }
}

TEST(LayoutCoderTest, FixedShapesEveryLossSet) {
  Rng rng = testutil::TestRng();
  for (auto [k, m] : {std::pair{2, 1}, std::pair{4, 2}, std::pair{8, 2}, std::pair{6, 4}}) {
    for (uint64_t alignment : {uint64_t{1}, uint64_t{64}, uint64_t{4096}}) {
      Group g(rng, Options(k, m, alignment), RandomSizes(rng, k + m, k));
      ASSERT_TRUE(g.ok());
      LoseEverySetAndRebuild(g, rng, /*exhaustive=*/true);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(LayoutCoderTest, RandomGroups) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 8; ++round) {
    const int n = rng.UniformInt(2, round < 6 ? 10 : 16);
    const int m = rng.UniformInt(1, std::min(4, n - 1));
    const uint64_t alignment = uint64_t{1} << rng.UniformInt(0, 12);
    Group g(rng, Options(n - m, m, alignment), RandomSizes(rng, n, n - m));
    ASSERT_TRUE(g.ok());
    LoseEverySetAndRebuild(g, rng, /*exhaustive=*/n <= 10);
    if (HasFatalFailure()) return;
  }
}

// Very different sizes: one large node among empty and tiny ones, so most
// stripes are almost all virtual zeros.
TEST(LayoutCoderTest, OneLargeNodeAmongTinyOnes) {
  Rng rng = testutil::TestRng();
  std::vector<uint64_t> sizes = {0, 1, 5 * 4 * kPiece + 3, 0, 2, 0};
  Group g(rng, Options(4, 2, 1), sizes);
  ASSERT_TRUE(g.ok());
  LoseEverySetAndRebuild(g, rng, /*exhaustive=*/true);
}

// Coding each stripe a window at a time, in any split, stores the same
// parity as Encode.
TEST(LayoutCoderTest, EncodeRangeWindowsEqualEncode) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 6; ++round) {
    const int n = rng.UniformInt(3, 10);
    const int m = rng.UniformInt(1, std::min(4, n - 1));
    Group g(rng, Options(n - m, m, 1), RandomSizes(rng, n, n - m));
    ASSERT_TRUE(g.ok());
    g.EncodeAll();
    const std::vector<std::vector<uint8_t>> encoded = g.Snapshot();
    const int k = n - m;
    for (int r = 0; r < n; ++r) {
      const uint64_t len = g.layout().chunk_length(r);
      std::vector<ChunkView> v = g.Views(r);
      std::vector<std::vector<uint8_t>> parity(m, std::vector<uint8_t>(len, 0x33));
      std::vector<ChunkView> pv;
      for (auto& p : parity) pv.push_back({p.empty() ? nullptr : p.data(), len});
      for (uint64_t at = 0; at < len;) {
        const uint64_t window = std::min(len - at, rng.Uniform(1, 3 * kPiece));
        ASSERT_TRUE(IsOk(g.coder().EncodeRange(std::span(v).first(k), pv, len, at, window)));
        at += window;
      }
      for (int p = 0; p < m; ++p) {
        ASSERT_TRUE(std::equal(parity[p].begin(), parity[p].end(), v[k + p].data))
            << "stripe " << r << " parity " << p;
      }
    }
    EXPECT_EQ(g.Snapshot(), encoded) << "EncodeRange into side buffers touched the nodes";
  }
}

}  // namespace
}  // namespace holdfast::ec
