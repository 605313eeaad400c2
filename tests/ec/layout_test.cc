// GroupLayout: the invariants layout.h promises, checked from first principles
// over random groups (pure arithmetic, so sizes can be huge), plus
// PlanRebuild for every set of lost nodes.
#include "holdfast/ec/layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::HasCode;
using testutil::IsOk;
using testutil::Rng;

struct Group {
  LayoutOptions options;
  std::vector<uint64_t> sizes;
  std::string Describe() const {
    std::string out = "k=" + std::to_string(options.k) + " m=" + std::to_string(options.m) +
                      " alignment=" + std::to_string(options.alignment) + " sizes=[";
    for (uint64_t s : sizes) out += std::to_string(s) + " ";
    return out + "]";
  }
};

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// Sizes chosen to hit the awkward cases: empty, one byte, not a multiple of
// k or the alignment, exact multiples, and nodes 2^30 times larger than their
// neighbours.
uint64_t RandomSize(Rng& rng, int k, uint64_t alignment) {
  switch (rng.UniformInt(0, 7)) {
    case 0:
      return 0;
    case 1:
      return 1;
    case 2:
      return rng.Uniform(2, 100);
    case 3:
      return rng.Uniform(100, 100000);
    case 4:
      return static_cast<uint64_t>(k) * alignment * rng.Uniform(1, 50);
    case 5:
      return static_cast<uint64_t>(k) * alignment * rng.Uniform(1, 50) + 1;
    case 6:
      return rng.Uniform(1, 1000) * static_cast<uint64_t>(k) - 1;
    default:
      return rng.Uniform(uint64_t{1} << 32, uint64_t{1} << 44);
  }
}

Group RandomGroup(Rng& rng, int max_n) {
  Group g;
  const int n = rng.UniformInt(2, max_n);
  g.options.m = rng.UniformInt(1, std::min(kMaxParityChunks, n - 1));
  g.options.k = n - g.options.m;
  g.options.alignment = uint64_t{1} << rng.UniformInt(0, 16);
  for (int i = 0; i < n; ++i) g.sizes.push_back(RandomSize(rng, g.options.k, g.options.alignment));
  return g;
}

Result<GroupLayout> Make(const Group& g) { return GroupLayout::Create(g.options, g.sizes); }

// Every invariant of layout.h that does not involve rebuilding.
void CheckInvariants(const GroupLayout& layout, const Group& g) {
  SCOPED_TRACE(g.Describe());
  const int k = g.options.k;
  const int m = g.options.m;
  const int n = k + m;
  ASSERT_EQ(layout.k(), k);
  ASSERT_EQ(layout.m(), m);
  ASSERT_EQ(layout.n(), n);
  ASSERT_EQ(layout.num_stripes(), n);

  for (int node = 0; node < n; ++node) {
    const uint64_t s = g.sizes[node];
    ASSERT_EQ(layout.data_bytes(node), s);
    ASSERT_EQ(layout.piece_bytes(node), RoundUp((s + k - 1) / k, g.options.alignment))
        << "node " << node;
  }

  for (int r = 0; r < n; ++r) {
    // Each stripe touches each node exactly once, and NodeOf/ChunkOf invert.
    uint64_t nodes = 0;
    uint64_t longest = 0;
    for (int c = 0; c < n; ++c) {
      const int node = layout.NodeOf(r, c);
      ASSERT_EQ(node, (r + c) % n);
      ASSERT_EQ(layout.ChunkOf(r, node), c);
      nodes |= uint64_t{1} << node;
      const Extent e = layout.ChunkExtent(r, c);
      ASSERT_EQ(e.node, node) << "stripe " << r << " chunk " << c;
      if (c < k) {
        ASSERT_EQ(e.buffer, Extent::Buffer::kData) << "stripe " << r << " chunk " << c;
        // Piece c of the node: [c * P, min((c + 1) * P, S)).
        const uint64_t p = layout.piece_bytes(node);
        const uint64_t s = g.sizes[node];
        const uint64_t begin = std::min(static_cast<uint64_t>(c) * p, s);
        ASSERT_EQ(e.length, std::min(p, s - begin)) << "stripe " << r << " chunk " << c;
        if (e.length > 0) {
          ASSERT_EQ(e.offset, begin) << "stripe " << r << " chunk " << c;
          ASSERT_EQ(e.offset % g.options.alignment, 0u);
        }
        // Even an empty piece must point inside (or at the end of) the buffer.
        ASSERT_LE(e.offset, s) << "stripe " << r << " chunk " << c;
        ASSERT_LE(e.length, s - e.offset);
        longest = std::max(longest, e.length);
      } else {
        ASSERT_EQ(e.buffer, Extent::Buffer::kParity) << "stripe " << r << " chunk " << c;
      }
    }
    ASSERT_EQ(nodes, AllChunks(n)) << "stripe " << r;
    ASSERT_EQ(layout.chunk_length(r), longest) << "stripe " << r;
    for (int c = k; c < n; ++c) {
      ASSERT_EQ(layout.ChunkExtent(r, c).length, layout.chunk_length(r));
    }
  }

  uint64_t total_parity = 0;
  uint64_t total_chunks = 0;
  for (int r = 0; r < n; ++r) total_chunks += layout.chunk_length(r);
  for (int node = 0; node < n; ++node) {
    // Data: pieces 0..k-1 (piece c is chunk c of stripe node - c) tile the
    // buffer in order, without gaps or overlap.
    uint64_t cursor = 0;
    for (int c = 0; c < k; ++c) {
      const int r = (node - c + n) % n;
      ASSERT_EQ(layout.ChunkOf(r, node), c);
      const Extent e = layout.ChunkExtent(r, c);
      if (e.length == 0) continue;
      ASSERT_EQ(e.offset, cursor) << "node " << node << " piece " << c;
      cursor += e.length;
    }
    ASSERT_EQ(cursor, g.sizes[node]) << "node " << node;

    // Parity: one chunk per parity index p (chunk k + p of stripe
    // node - k - p), concatenated in order of p.
    cursor = 0;
    for (int p = 0; p < m; ++p) {
      const int r = ((node - k - p) % n + n) % n;
      ASSERT_EQ(layout.ChunkOf(r, node), k + p);
      const Extent e = layout.ChunkExtent(r, k + p);
      ASSERT_EQ(e.offset, cursor) << "node " << node << " parity " << p;
      ASSERT_EQ(e.length, layout.chunk_length(r));
      cursor += e.length;
    }
    ASSERT_EQ(layout.parity_bytes(node), cursor) << "node " << node;
    total_parity += cursor;
  }
  ASSERT_EQ(total_parity, static_cast<uint64_t>(m) * total_chunks);
}

// The plan for one set of lost nodes, recomputed from the definitions.
void CheckPlan(const GroupLayout& layout, NodeMask lost_nodes) {
  const int n = layout.n();
  Result<std::vector<StripeRebuild>> plan = layout.PlanRebuild(lost_nodes);
  ASSERT_TRUE(IsOk(plan)) << "lost nodes " << MaskToString(lost_nodes);
  size_t next = 0;
  for (int r = 0; r < n; ++r) {
    ChunkMask lost = 0;
    for (int c = 0; c < n; ++c) {
      if (lost_nodes & (uint64_t{1} << layout.NodeOf(r, c))) lost |= ChunkBit(c);
    }
    if (lost == 0) continue;
    ASSERT_LT(next, plan->size()) << "stripe " << r << " missing";
    const StripeRebuild& s = (*plan)[next++];
    ASSERT_EQ(s.stripe, r);
    ASSERT_EQ(s.lost, lost) << "stripe " << r;
    ASSERT_EQ(std::popcount(s.read), layout.k()) << "stripe " << r;
    ASSERT_EQ(s.read & lost, 0u) << "stripe " << r;
    ASSERT_EQ(s.read, LowestChunks(AllChunks(n) & ~lost, layout.k())) << "stripe " << r;
    for (ChunkMask rd = s.read; rd != 0; rd &= rd - 1) {
      const int node = layout.NodeOf(r, std::countr_zero(rd));
      ASSERT_FALSE(lost_nodes & (uint64_t{1} << node)) << "stripe " << r << " reads a lost node";
    }
  }
  ASSERT_EQ(next, plan->size()) << "extra stripes in the plan";
}

TEST(LayoutTest, PaperExampleFromTheHeader) {
  // n = 3, k = 2, m = 1 as drawn in layout.h.
  Group g{{2, 1, 1}, {10, 10, 10}};
  Result<GroupLayout> layout = Make(g);
  ASSERT_TRUE(IsOk(layout));
  CheckInvariants(*layout, g);
  EXPECT_EQ(layout->ChunkExtent(0, 0), (Extent{0, Extent::Buffer::kData, 0, 5}));
  EXPECT_EQ(layout->ChunkExtent(0, 1), (Extent{1, Extent::Buffer::kData, 5, 5}));
  EXPECT_EQ(layout->ChunkExtent(0, 2), (Extent{2, Extent::Buffer::kParity, 0, 5}));
  EXPECT_EQ(layout->ChunkExtent(1, 2), (Extent{0, Extent::Buffer::kParity, 0, 5}));
  EXPECT_EQ(layout->ChunkExtent(2, 0), (Extent{2, Extent::Buffer::kData, 0, 5}));
  EXPECT_EQ(layout->ChunkExtent(2, 1), (Extent{0, Extent::Buffer::kData, 5, 5}));
  for (int node = 0; node < 3; ++node) EXPECT_EQ(layout->parity_bytes(node), 5u);
}

TEST(LayoutTest, RandomGroupsKeepEveryInvariant) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 400; ++round) {
    const Group g = RandomGroup(rng, 16);
    Result<GroupLayout> layout = Make(g);
    ASSERT_TRUE(IsOk(layout)) << g.Describe();
    CheckInvariants(*layout, g);
    if (HasFatalFailure()) return;
  }
}

TEST(LayoutTest, LimitShapes) {
  Rng rng = testutil::TestRng();
  for (auto [k, m] : {std::pair{1, 1}, std::pair{1, 8}, std::pair{56, 8}, std::pair{63, 1}}) {
    Group g{{k, m, 4096}, {}};
    for (int i = 0; i < k + m; ++i) g.sizes.push_back(RandomSize(rng, k, 4096));
    Result<GroupLayout> layout = Make(g);
    ASSERT_TRUE(IsOk(layout)) << g.Describe();
    CheckInvariants(*layout, g);
    CheckPlan(*layout, AllChunks(k + m) & ~AllChunks(k));  // the top m nodes
    CheckPlan(*layout, AllChunks(m));
  }
}

// With equal sizes S every stripe is P = min(piece, S) long and each node
// stores m of them: m/k of its data, up to rounding.
TEST(LayoutTest, EqualSizesGiveMOverKParity) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 100; ++round) {
    Group g = RandomGroup(rng, 16);
    const uint64_t s = round < 3 ? static_cast<uint64_t>(round) : RandomSize(rng, 1, 64);
    std::fill(g.sizes.begin(), g.sizes.end(), s);
    Result<GroupLayout> layout = Make(g);
    ASSERT_TRUE(IsOk(layout)) << g.Describe();
    CheckInvariants(*layout, g);
    const int k = g.options.k;
    const int m = g.options.m;
    const uint64_t piece = RoundUp((s + k - 1) / k, g.options.alignment);
    for (int node = 0; node < k + m; ++node) {
      EXPECT_EQ(layout->parity_bytes(node), static_cast<uint64_t>(m) * std::min(piece, s));
      const double ideal = static_cast<double>(m) * static_cast<double>(s) / k;
      EXPECT_LE(std::abs(static_cast<double>(layout->parity_bytes(node)) - ideal),
                static_cast<double>(m) * static_cast<double>(g.options.alignment + 1))
          << g.Describe();
    }
  }
}

TEST(LayoutTest, PlanRebuildEverySetOfLostNodes) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 60; ++round) {
    const Group g = RandomGroup(rng, round < 40 ? 10 : 16);
    SCOPED_TRACE(g.Describe());
    Result<GroupLayout> layout = Make(g);
    ASSERT_TRUE(IsOk(layout));
    const int n = layout->n();
    const int m = layout->m();
    CheckPlan(*layout, 0);
    EXPECT_TRUE(layout->PlanRebuild(0)->empty());
    if (n <= 10) {
      testutil::ForEachMask(n, 1, m, [&](uint64_t lost) {
        if (!HasFatalFailure()) CheckPlan(*layout, lost);
      });
    } else {
      for (int i = 0; i < 200; ++i)
        CheckPlan(*layout, rng.Subset(AllChunks(n), rng.UniformInt(1, m)));
    }
    if (HasFatalFailure()) return;
  }
}

TEST(LayoutTest, PlanRebuildErrors) {
  Rng rng = testutil::TestRng();
  for (int round = 0; round < 40; ++round) {
    const Group g = RandomGroup(rng, 12);
    Result<GroupLayout> layout = Make(g);
    ASSERT_TRUE(IsOk(layout));
    const int n = layout->n();
    const int m = layout->m();
    for (int lose = m + 1; lose <= n; ++lose) {
      const NodeMask lost = rng.Subset(AllChunks(n), lose);
      Result<std::vector<StripeRebuild>> plan = layout->PlanRebuild(lost);
      ASSERT_TRUE(HasCode(plan, StatusCode::kDataLoss)) << MaskToString(lost);
      EXPECT_NE(plan.status().message().find(MaskToString(lost)), std::string::npos)
          << "message should name the lost nodes: " << plan.status().ToString();
    }
    EXPECT_TRUE(HasCode(layout->PlanRebuild(uint64_t{1} << n), StatusCode::kInvalidArgument));
    EXPECT_TRUE(HasCode(layout->PlanRebuild(uint64_t{1} << 63), StatusCode::kInvalidArgument));
    EXPECT_TRUE(HasCode(layout->PlanRebuild(1 | (uint64_t{1} << n)), StatusCode::kInvalidArgument));
  }
}

// Every extent lies inside its node's buffer, without wrapping around, and
// each node's data extents add up to its size.
void CheckExtentsInsideBuffers(const GroupLayout& layout) {
  const int n = layout.n();
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < n; ++c) {
      const Extent e = layout.ChunkExtent(r, c);
      const uint64_t limit = e.buffer == Extent::Buffer::kData ? layout.data_bytes(e.node)
                                                               : layout.parity_bytes(e.node);
      ASSERT_LE(e.offset, limit) << "stripe " << r << " chunk " << c;
      ASSERT_LE(e.length, limit - e.offset) << "stripe " << r << " chunk " << c;
    }
  }
  for (int node = 0; node < n; ++node) {
    uint64_t total = 0;
    for (int c = 0; c < layout.k(); ++c) total += layout.ChunkExtent((node - c + n) % n, c).length;
    ASSERT_EQ(total, layout.data_bytes(node)) << "node " << node;
  }
}

// Sizes near 2^64 (they can come from the wire): Create must reject a group
// whose offsets it cannot represent rather than wrap around. Node sizes that
// fit are fine; what overflows is k pieces of an aligned piece size, or a
// node's m parity chunks added up.
TEST(LayoutTest, OverflowingSizesAreRejected) {
  struct Case {
    int k;
    int m;
    uint64_t alignment;
    uint64_t size;
  };
  const Case cases[] = {
      {1, 8, 1, uint64_t{1} << 62},             // parity: 8 * 2^62 bytes per node
      {3, 1, uint64_t{1} << 63, ~uint64_t{0}},  // pieces: 3 * 2^63 bytes per node
      {2, 1, 1, ~uint64_t{0}},                  // piece 1 is [2^63, 2^64 - 1): its end
                                                // must not be computed as 2^63 + 2^63
  };
  for (const Case& c : cases) {
    LayoutOptions options;
    options.k = c.k;
    options.m = c.m;
    options.alignment = c.alignment;
    std::vector<uint64_t> sizes(c.k + c.m, c.size);
    Result<GroupLayout> layout = GroupLayout::Create(options, sizes);
    SCOPED_TRACE("k=" + std::to_string(c.k) + " m=" + std::to_string(c.m) +
                 " alignment=" + std::to_string(c.alignment) + " size=" + std::to_string(c.size));
    if (!layout.ok()) {
      EXPECT_TRUE(HasCode(layout, StatusCode::kInvalidArgument));
      continue;
    }
    CheckExtentsInsideBuffers(*layout);
  }
}

TEST(LayoutTest, CreateRejectsBadOptions) {
  auto create = [](int k, int m, uint64_t alignment, size_t nodes) {
    LayoutOptions options;
    options.k = k;
    options.m = m;
    options.alignment = alignment;
    std::vector<uint64_t> sizes(nodes, 1000);
    return GroupLayout::Create(options, sizes).status();
  };
  constexpr StatusCode kInvalid = StatusCode::kInvalidArgument;
  EXPECT_TRUE(HasCode(create(0, 2, 4096, 2), kInvalid));
  EXPECT_TRUE(HasCode(create(-1, 2, 4096, 1), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 0, 4096, 4), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 9, 4096, 13), kInvalid));
  EXPECT_TRUE(HasCode(create(57, 8, 4096, 65), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 2, 0, 6), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 2, 3, 6), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 2, 4097, 6), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 2, (uint64_t{1} << 40) + 1, 6), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 2, 4096, 5), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 2, 4096, 7), kInvalid));
  EXPECT_TRUE(HasCode(create(4, 2, 4096, 0), kInvalid));

  EXPECT_TRUE(IsOk(create(4, 2, 1, 6)));
  EXPECT_TRUE(IsOk(create(4, 2, uint64_t{1} << 20, 6)));
  EXPECT_TRUE(IsOk(create(56, 8, 4096, 64)));
  EXPECT_TRUE(IsOk(create(1, 1, 4096, 2)));
}

}  // namespace
}  // namespace holdfast::ec
