// The checks of Peer requests (smp/protect/peer_requests.h), with the inputs
// tests/fuzz/peer_request_fuzz.cc is built around: requests from a peer that
// is in the cluster but names chunks, groups or manifests that are not ours.
#include "protect/peer_requests.h"

#include <gtest/gtest.h>

#include <climits>
#include <string>
#include <vector>

#include "protect/data_path.h"

namespace holdfast::smp {
namespace {

const std::vector<std::string> kGroup = {"a", "b", "c", "d", "e", "f"};

v1::ProtectRequest GoodProtect() {
  v1::ProtectRequest req;
  req.set_k(4);
  req.set_m(2);
  req.set_alignment(4096);
  for (size_t p = 0; p < kGroup.size(); ++p) {
    req.add_member_nodes(kGroup[p]);
    req.add_data_bytes(p < 4 ? 1 << 20 : 0);
  }
  return req;
}

v1::ProtectionRecord GoodRecord() {
  v1::ProtectionRecord rec;
  rec.set_job_id("j");
  rec.set_step(5);
  rec.set_k(4);
  rec.set_m(2);
  rec.set_alignment(4096);
  for (size_t p = 0; p < kGroup.size(); ++p) {
    auto* m = rec.add_members();
    m->set_node_id(kGroup[p]);
    m->set_data_bytes(uint64_t{1} << (12 + p));
  }
  rec.mutable_chunk_crcs()->Resize(36, 0);
  return rec;
}

TEST(PeerRequestsTest, ProtectAcceptsItsGroup) {
  auto layout = CheckProtectRequest(GoodProtect(), kGroup, 2);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->n(), 6);
}

TEST(PeerRequestsTest, ProtectRefusesAnotherGroup) {
  auto req = GoodProtect();
  req.set_member_nodes(5, "z");  // this node is right, another member is not
  EXPECT_EQ(CheckProtectRequest(req, kGroup, 2).status().code(), StatusCode::kInvalidArgument);
  // A larger group than ours: RunRoles would index peers past the group.
  auto big = GoodProtect();
  big.set_m(3);
  big.add_member_nodes("g");
  big.add_data_bytes(0);
  EXPECT_EQ(CheckProtectRequest(big, kGroup, 2).status().code(), StatusCode::kInvalidArgument);
}

TEST(PeerRequestsTest, ProtectRefusesCodesThatOverflow) {
  auto req = GoodProtect();
  req.set_k(INT_MAX);  // k + m would overflow before the old size check
  req.set_m(1);
  EXPECT_EQ(CheckProtectRequest(req, kGroup, 2).status().code(), StatusCode::kInvalidArgument);
  req.set_k(7);
  req.set_m(-1);  // k + m == 6 == the member count
  EXPECT_EQ(CheckProtectRequest(req, kGroup, 2).status().code(), StatusCode::kInvalidArgument);
}

TEST(PeerRequestsTest, ChunkRefsMustBeHeldHere) {
  auto layout = CheckProtectionRecord(GoodRecord(), 2, "held");
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  v1::ReadChunksRequest good;
  for (int r = 0; r < 6; ++r) {
    auto* ref = good.add_chunks();
    ref->set_stripe(r);
    ref->set_chunk((2 - r + 6) % 6);
  }
  EXPECT_TRUE(CheckChunkRefs(good, *layout, 2).ok());

  // Found reading the old check: chunk n of stripe 2 maps to node 2 (this
  // node) by (stripe + chunk) % n and read parity offsets past the table.
  // Chunk -1 of stripe 3 mapped to node 2 as well; INT_MAX overflowed.
  for (auto [stripe, chunk] : {std::pair{2, 6}, {2, 12}, {3, -1}, {1, INT_MAX}, {-4, 0}, {6, 2}}) {
    v1::ReadChunksRequest bad;
    auto* ref = bad.add_chunks();
    ref->set_stripe(stripe);
    ref->set_chunk(chunk);
    EXPECT_EQ(CheckChunkRefs(bad, *layout, 2).code(), StatusCode::kInvalidArgument)
        << "stripe " << stripe << " chunk " << chunk;
  }
}

TEST(PeerRequestsTest, ProtectionRecordShape) {
  EXPECT_TRUE(CheckProtectionRecord(GoodRecord(), 5, "r").ok());
  EXPECT_FALSE(CheckProtectionRecord(GoodRecord(), 6, "r").ok());  // position outside the group
  auto crcs = GoodRecord();
  crcs.mutable_chunk_crcs()->RemoveLast();
  EXPECT_FALSE(CheckProtectionRecord(crcs, 0, "r").ok());
  auto members = GoodRecord();
  members.mutable_members()->RemoveLast();
  EXPECT_FALSE(CheckProtectionRecord(members, 0, "r").ok());
}

TEST(PeerRequestsTest, ConcludeManifestMustMatchTheRound) {
  v1::ConcludeRequest req;
  req.set_job_id("j");
  req.set_step(5);
  EXPECT_TRUE(CheckConcludeRequest(req, 2).ok());  // abandoned: nothing to check
  req.set_protected_(true);
  *req.mutable_manifest() = GoodRecord();
  EXPECT_TRUE(CheckConcludeRequest(req, 2).ok());
  req.mutable_manifest()->set_step(6);
  EXPECT_EQ(CheckConcludeRequest(req, 2).code(), StatusCode::kInvalidArgument);
  req.mutable_manifest()->set_step(5);
  req.mutable_manifest()->set_k(0);
  EXPECT_EQ(CheckConcludeRequest(req, 2).code(), StatusCode::kInvalidArgument);
}

TEST(PeerRequestsTest, WindowsDoNotWrap) {
  using protect_internal::Windows;
  EXPECT_EQ(Windows(0, 4096), 0u);
  EXPECT_EQ(Windows(4096, 4096), 1u);
  EXPECT_EQ(Windows(4097, 4096), 2u);
  // A peer's window_bytes near 2^64: length + window - 1 wrapped to 0 windows.
  EXPECT_EQ(Windows(100, UINT64_MAX), 1u);
  EXPECT_EQ(Windows(UINT64_MAX, UINT64_MAX - 1), 2u);
}

}  // namespace
}  // namespace holdfast::smp
