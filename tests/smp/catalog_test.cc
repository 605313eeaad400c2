// The catalog's behaviour, one suite run against both implementations
// (CatalogTest/Memory, CatalogTest/RocksDb); the UTF-8 check they share; the
// in-memory fake's fault injection. What only RocksDB can show (reopen, other
// processes, SIGKILL, damaged records) is in catalog_rocksdb_test.cc.
#include "catalog/catalog.h"

#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catalog/batch_validation.h"
#include "catalog/memory_catalog.h"
#include "catalog/rocksdb_catalog.h"
#include "catalog_test_util.h"

// The two implementations under test. In the global namespace so that ctest
// names stay short: smp.CatalogTest.<Test><MemoryBackend>.
struct MemoryBackend {
  static holdfast::Result<std::unique_ptr<holdfast::smp::Catalog>> Open(
      const std::string& /*dir*/) {
    return std::unique_ptr<holdfast::smp::Catalog>(
        std::make_unique<holdfast::smp::MemoryCatalog>());
  }
};

struct RocksDbBackend {
  static holdfast::Result<std::unique_ptr<holdfast::smp::Catalog>> Open(const std::string& dir) {
    return holdfast::smp::OpenRocksDbCatalog(dir + "/catalog");
  }
};

namespace holdfast::smp::catalog_test {
namespace {

// ---- the behavioural suite, for both implementations ---------------------------

template <typename Backend>
class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = Backend::Open(dir_.path());
    ASSERT_TRUE(IsOk(opened));
    catalog_ = std::move(opened).value();
  }

  CatalogContents MustLoad() {
    auto loaded = catalog_->Load();
    EXPECT_TRUE(IsOk(loaded));
    return loaded.ok() ? std::move(loaded).value() : CatalogContents{};
  }

  // Applies `batch`, expecting success, and records it for Expected().
  void MustApply(const CatalogBatch& batch) {
    ASSERT_TRUE(IsOk(catalog_->Apply(batch)));
    applied_.push_back(batch);
  }

  // Load() equals what the applied batches say, record for record, in order.
  void ExpectContentsMatchApplied() {
    CatalogContents loaded = MustLoad();
    CatalogContents expected = Expected(applied_);
    expected.next_segment_id = loaded.next_segment_id;
    EXPECT_EQ(Dump(loaded), Dump(expected));
  }

  TempDir dir_;  // outlives catalog_
  std::unique_ptr<Catalog> catalog_;
  std::vector<CatalogBatch> applied_;
};

using Backends = ::testing::Types<MemoryBackend, RocksDbBackend>;
TYPED_TEST_SUITE(CatalogTest, Backends);

TYPED_TEST(CatalogTest, StartsEmpty) {
  const CatalogContents c = this->MustLoad();
  EXPECT_TRUE(c.jobs.empty());
  EXPECT_TRUE(c.manifests.empty());
  EXPECT_TRUE(c.versions.empty());
  EXPECT_TRUE(c.protections.empty());
  EXPECT_EQ(c.next_segment_id, 1u);
}

TYPED_TEST(CatalogTest, ApplyLoadRoundTrip) {
  CatalogBatch b;
  b.put_jobs = {Job("llama-70b", 16), Job("gpt", 2)};
  b.put_manifests = {Manifest("llama-70b", 100, 0, 5), Manifest("llama-70b", 100, 1, 0),
                     Manifest("gpt", 7, 3, 1)};
  b.put_versions = {Version("llama-70b", 100)};
  // A protection with and without a version record, and one of a job this
  // node has no record of (a member without ranks of it).
  b.put_protections = {Protection("llama-70b", 100), Protection("llama-70b", 90, 1),
                       Protection("elsewhere", 3, 6)};
  this->MustApply(b);
  this->ExpectContentsMatchApplied();

  // A put of an existing key replaces the record.
  CatalogBatch again;
  v1::RankManifestRecord changed = Manifest("llama-70b", 100, 1, 3);
  changed.set_segment_name("replaced");
  again.put_manifests = {changed};
  again.put_jobs = {Job("gpt", 4)};
  v1::ProtectionRecord reprotected = Protection("llama-70b", 100, 2);
  reprotected.set_round_id(77);
  reprotected.mutable_members(1)->mutable_ranks(0)->set_segment_name("moved");
  again.put_protections = {reprotected};
  this->MustApply(again);
  this->ExpectContentsMatchApplied();
  const CatalogContents c = this->MustLoad();
  ASSERT_EQ(c.manifests.size(), 3u);
  EXPECT_EQ(c.manifests[2].rank(), 1);
  EXPECT_EQ(c.manifests[2].segment_name(), "replaced");
  ASSERT_EQ(c.protections.size(), 3u);
  EXPECT_EQ(c.protections[2].round_id(), 77u);
  ASSERT_EQ(c.protections[2].members_size(), 2);
  EXPECT_EQ(c.protections[2].members(1).ranks(0).segment_name(), "moved");
  EXPECT_EQ(c.protections[2].chunk_crcs_size(), 4);
}

TYPED_TEST(CatalogTest, EmptyBatchChangesNothing) {
  this->MustApply(CatalogBatch{});
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, LoadSortsByJobThenStepThenRank) {
  // "a" < "a\x01" < "ab" < "a\u00e9" < "b" bytewise (unsigned: é is C3 A9),
  // and steps sort numerically across byte boundaries, 2^40 and below 0.
  const std::vector<std::string> jobs = {"b", "a\xc3\xa9", "ab", "a", std::string("a\x01")};
  const std::vector<int64_t> steps = {int64_t{1} << 40, 256, 0, 10, 1, 255, -1, 2};
  const std::vector<int32_t> ranks = {256, 0, 7, 1, 65536};
  std::vector<CatalogBatch> parts(5);
  SCOPED_TRACE(SeedTrace());
  std::mt19937_64 rng = TestRng();
  for (const auto& job : jobs) {
    for (int64_t step : steps) {
      parts[rng() % parts.size()].put_versions.push_back(Version(job, step));
      parts[rng() % parts.size()].put_protections.push_back(Protection(job, step, 1));
      for (int32_t rank : ranks) {
        parts[rng() % parts.size()].put_manifests.push_back(Manifest(job, step, rank));
      }
    }
  }
  for (auto& part : parts) {
    std::shuffle(part.put_manifests.begin(), part.put_manifests.end(), rng);
    std::shuffle(part.put_versions.begin(), part.put_versions.end(), rng);
    std::shuffle(part.put_protections.begin(), part.put_protections.end(), rng);
    this->MustApply(part);
  }
  const CatalogContents c = this->MustLoad();
  std::vector<ManifestId> want_manifests;
  std::vector<VersionId> want_versions;
  for (const auto& job : jobs) {
    for (int64_t step : steps) {
      want_versions.emplace_back(job, step);
      for (int32_t rank : ranks) want_manifests.emplace_back(job, step, rank);
    }
  }
  std::sort(want_manifests.begin(), want_manifests.end());
  std::sort(want_versions.begin(), want_versions.end());
  ASSERT_EQ(want_manifests.front(), ManifestId("a", -1, 0));  // the yardstick sorts unsigned
  EXPECT_EQ(ManifestIds(c), want_manifests);
  EXPECT_EQ(VersionIds(c), want_versions);
  EXPECT_EQ(ProtectionIds(c), want_versions);
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, DeleteVersionRemovesOnlyThatVersion) {
  CatalogBatch b;
  for (const std::string job : {"a", "ab"}) {
    for (int64_t step : {int64_t{1}, int64_t{10}, int64_t{256}, (int64_t{1} << 40) + 1}) {
      b.put_versions.push_back(Version(job, step));
      b.put_protections.push_back(Protection(job, step));
      for (int32_t rank : {0, 1, 2}) b.put_manifests.push_back(Manifest(job, step, rank));
    }
  }
  b.put_jobs = {Job("a"), Job("ab")};
  this->MustApply(b);

  CatalogBatch del;
  del.delete_versions = {{"a", 1}};
  this->MustApply(del);
  const CatalogContents c = this->MustLoad();
  for (const auto& [job, step, rank] : ManifestIds(c)) {
    EXPECT_FALSE(job == "a" && step == 1) << "manifest of a/1 rank " << rank << " survived";
  }
  EXPECT_EQ(c.manifests.size(), 7u * 3u);  // a/10, a/256, a/2^40+1 and ab/* untouched
  EXPECT_EQ(c.versions.size(), 7u);
  // Protections are independent of versions: a/1 stays protected.
  EXPECT_EQ(c.protections.size(), 8u);
  this->ExpectContentsMatchApplied();

  // Deleting a version that is not there is not an error.
  CatalogBatch missing;
  missing.delete_versions = {{"a", 1}, {"zz", 5}, {"a", 2}};
  this->MustApply(missing);
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, DeleteVersionRemovesTornManifests) {
  // Manifests of a version that never completed (no version record).
  CatalogBatch b;
  for (int32_t rank : {0, 3}) b.put_manifests.push_back(Manifest("a", 5, rank));
  b.put_manifests.push_back(Manifest("a", 6, 0));
  this->MustApply(b);
  CatalogBatch del;
  del.delete_versions = {{"a", 5}};
  this->MustApply(del);
  EXPECT_EQ(ManifestIds(this->MustLoad()), (std::vector<ManifestId>{{"a", 6, 0}}));
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, DeletePartRemovesOneRankManifestOnly) {
  CatalogBatch b;
  for (int32_t rank : {0, 1, 3}) b.put_manifests.push_back(Manifest("a", 5, rank));
  b.put_manifests.push_back(Manifest("ab", 5, 1));
  b.put_protections.push_back(Protection("a", 5));
  this->MustApply(b);
  // One batch replaces rank 1's part of a/5 and removes rank 0's, as a
  // commit that discards an abandoned run's part does.
  CatalogBatch change;
  change.put_manifests.push_back(Manifest("a", 5, 1));
  change.delete_parts = {{"a", 5, 0}, {"a", 7, 0}};  // a/7 is not there: not an error
  this->MustApply(change);
  EXPECT_EQ(ManifestIds(this->MustLoad()),
            (std::vector<ManifestId>{{"a", 5, 1}, {"a", 5, 3}, {"ab", 5, 1}}));
  EXPECT_EQ(this->MustLoad().protections.size(), 1u);
  this->ExpectContentsMatchApplied();
  CatalogBatch bad;
  bad.delete_parts = {{"a", 5, -1}};
  EXPECT_EQ(this->catalog_->Apply(bad).code(), StatusCode::kInvalidArgument);
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, DeleteProtectionRemovesOnlyThatProtection) {
  CatalogBatch b;
  b.put_jobs = {Job("a"), Job("ab")};
  const std::string jobs[] = {"a", "ab", std::string("a\x01")};
  for (const std::string& job : jobs) {
    for (int64_t step : {int64_t{1}, int64_t{2}, int64_t{257}}) {
      b.put_versions.push_back(Version(job, step));
      b.put_manifests.push_back(Manifest(job, step, 0));
      b.put_protections.push_back(Protection(job, step));
    }
  }
  this->MustApply(b);

  CatalogBatch del;
  del.delete_protections = {{"a", 1}, {"a", 257}};
  this->MustApply(del);
  const CatalogContents c = this->MustLoad();
  const std::vector<VersionId> want = {{"a", 2},
                                       {std::string("a\x01"), 1},
                                       {std::string("a\x01"), 2},
                                       {std::string("a\x01"), 257},
                                       {"ab", 1},
                                       {"ab", 2},
                                       {"ab", 257}};
  EXPECT_EQ(ProtectionIds(c), want);
  // The versions, their manifests and the jobs stay.
  EXPECT_EQ(c.versions.size(), 9u);
  EXPECT_EQ(c.manifests.size(), 9u);
  EXPECT_EQ(JobIds(c), (std::set<std::string>{"a", "ab"}));
  this->ExpectContentsMatchApplied();

  // Deleting a protection that is not there is not an error.
  CatalogBatch missing;
  missing.delete_protections = {{"a", 1}, {"zz", 5}, {"a", 3}};
  this->MustApply(missing);
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, DeletionsCoverPutsOfTheSameBatch) {
  CatalogBatch first;
  first.put_manifests = {Manifest("a", 3, 5)};
  first.put_jobs = {Job("gone")};
  first.put_versions = {Version("gone", 1)};
  first.put_protections = {Protection("gone", 1), Protection("a", 5)};
  this->MustApply(first);

  // Puts are applied before deletions, so this batch leaves nothing of a/3
  // but its protection (delete_versions leaves protections), no protection
  // of a/4 or a/5, and nothing of job "gone", whether written earlier or now.
  CatalogBatch b;
  b.put_manifests = {Manifest("a", 3, 0), Manifest("a", 3, 1), Manifest("a", 4, 0),
                     Manifest("gone", 2, 0)};
  b.put_versions = {Version("a", 3), Version("gone", 2)};
  b.put_jobs = {Job("gone"), Job("a")};
  b.put_protections = {Protection("a", 3), Protection("a", 4), Protection("gone", 2)};
  b.delete_versions = {{"a", 3}};
  b.delete_protections = {{"a", 4}, {"a", 5}};
  b.delete_jobs = {"gone"};
  this->MustApply(b);
  const CatalogContents c = this->MustLoad();
  EXPECT_EQ(JobIds(c), std::set<std::string>{"a"});
  EXPECT_EQ(ManifestIds(c), (std::vector<ManifestId>{{"a", 4, 0}}));
  EXPECT_TRUE(c.versions.empty());
  EXPECT_EQ(ProtectionIds(c), (std::vector<VersionId>{{"a", 3}}));
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, DeleteJobRemovesOnlyThatJob) {
  const std::string jobs[] = {"a", "ab", std::string("a\x01"), "b"};
  CatalogBatch b;
  for (const auto& job : jobs) {
    b.put_jobs.push_back(Job(job));
    for (int64_t step : {0, 1}) {
      b.put_versions.push_back(Version(job, step));
      b.put_manifests.push_back(Manifest(job, step, 0));
      b.put_protections.push_back(Protection(job, step));
    }
  }
  // A job this node holds only protections of: no job record, no versions.
  b.put_protections.push_back(Protection("only-protected", 4));
  b.put_protections.push_back(Protection("only-protected", 5));
  this->MustApply(b);
  CatalogBatch del;
  del.delete_jobs = {"a", "never-existed", "only-protected"};
  this->MustApply(del);
  const CatalogContents c = this->MustLoad();
  EXPECT_EQ(JobIds(c), (std::set<std::string>{"ab", std::string("a\x01"), "b"}));
  EXPECT_EQ(c.manifests.size(), 6u);
  EXPECT_EQ(c.versions.size(), 6u);
  EXPECT_EQ(c.protections.size(), 6u);
  for (const auto& m : c.manifests) EXPECT_NE(m.job_id(), "a");
  for (const auto& v : c.versions) EXPECT_NE(v.job_id(), "a");
  for (const auto& p : c.protections) {
    EXPECT_NE(p.job_id(), "a");
    EXPECT_NE(p.job_id(), "only-protected");
  }
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, RejectsJobIdsWithNul) {
  CatalogBatch base;
  base.put_jobs = {Job("a")};
  base.put_manifests = {Manifest("a", 1, 0)};
  this->MustApply(base);

  const std::string bad("x\0y", 3);
  std::vector<CatalogBatch> batches(7);
  for (auto& b : batches) {
    // Valid records first: none of them may land.
    b.put_jobs = {Job("new")};
    b.put_manifests = {Manifest("new", 1, 0)};
    b.put_protections = {Protection("new", 1)};
    b.delete_jobs = {"a"};
  }
  batches[0].put_jobs.push_back(Job(bad));
  batches[1].put_manifests.push_back(Manifest(bad, 1, 0));
  batches[2].put_versions.push_back(Version(bad, 1));
  batches[3].delete_versions.push_back({bad, 1});
  batches[4].delete_jobs.push_back(bad);
  batches[5].put_protections.push_back(Protection(bad, 1));
  batches[6].delete_protections.push_back({bad, 1});
  for (size_t i = 0; i < batches.size(); ++i) {
    const Status s = this->catalog_->Apply(batches[i]);
    EXPECT_TRUE(HasCode(s, StatusCode::kInvalidArgument)) << "batch " << i;
    EXPECT_NE(s.message().find("x\\x00y"), std::string::npos) << s.message();
  }
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, RejectsStringsThatAreNotUtf8) {
  // Protobuf would write these and then refuse to parse them back.
  std::vector<CatalogBatch> batches(8);
  batches[0].put_jobs = {Job("bad\xff")};
  batches[1].put_manifests = {Manifest("a", 1, 0)};
  batches[1].put_manifests[0].set_segment_name("\xc0\x80");  // overlong NUL
  batches[2].put_manifests = {Manifest("a", 1, 0, 3)};
  batches[2].put_manifests[0].mutable_items(2)->mutable_spec()->set_name("\xed\xa0\x80");
  batches[3].put_versions = {Version("caf\xe9", 1)};  // Latin-1
  batches[4].put_protections = {Protection("caf\xe9", 1)};
  batches[5].put_protections = {Protection("a", 1)};
  batches[5].put_protections[0].set_parity_segment("\xf4\x90\x80\x80");  // above U+10FFFF
  batches[6].put_protections = {Protection("a", 1)};
  batches[6].put_protections[0].mutable_members(2)->set_node_id("\xff");
  // Deep in the group manifest: a member's rank part's item name.
  batches[7].put_protections = {Protection("a", 1), Protection("a", 2)};
  batches[7]
      .put_protections[1]
      .mutable_members(1)
      ->mutable_ranks(1)
      ->mutable_items(0)
      ->mutable_spec()
      ->set_name("\xed\xa0\x80");
  const std::map<size_t, std::string> paths = {
      {2, "items[2].spec.name"},
      {5, "put_protections[0]: parity_segment"},
      {6, "put_protections[0]: members[2].node_id"},
      {7, "put_protections[1]: members[1].ranks[1].items[0].spec.name"},
  };
  for (size_t i = 0; i < batches.size(); ++i) {
    const Status s = this->catalog_->Apply(batches[i]);
    EXPECT_TRUE(HasCode(s, StatusCode::kInvalidArgument)) << "batch " << i;
    if (auto path = paths.find(i); path != paths.end()) {
      EXPECT_NE(s.message().find(path->second), std::string::npos) << s.ToString();
    }
  }
  this->ExpectContentsMatchApplied();

  // Any valid UTF-8 is fine.
  CatalogBatch good;
  good.put_jobs = {
      Job("j\xc3\xb6"
          "b-\xe3\x82\xb8\xe3\x83\xa7\xe3\x83\x96-\xf0\x9f\x9a\x80")};
  good.put_manifests = {Manifest(good.put_jobs[0].job_id(), 1, 0)};
  good.put_protections = {Protection(good.put_jobs[0].job_id(), 1)};
  this->MustApply(good);
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, RejectsNegativeRanks) {
  CatalogBatch b;
  b.put_jobs = {Job("a")};
  b.put_manifests = {Manifest("a", 1, 0), Manifest("a", 1, -1)};
  EXPECT_TRUE(HasCode(this->catalog_->Apply(b), StatusCode::kInvalidArgument));
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, RejectsNegativeProtectionFields) {
  struct Case {
    const char* want;
    void (*spoil)(v1::ProtectionRecord*);
  };
  const Case cases[] = {
      {"put_protections[1]: negative position -1",
       [](v1::ProtectionRecord* p) { p->set_position(-1); }},
      {"put_protections[1]: negative k -2", [](v1::ProtectionRecord* p) { p->set_k(-2); }},
      {"put_protections[1]: negative m -3", [](v1::ProtectionRecord* p) { p->set_m(-3); }},
  };
  for (const Case& c : cases) {
    CatalogBatch b;
    b.put_jobs = {Job("a")};
    b.put_protections = {Protection("a", 1), Protection("a", 2)};
    c.spoil(&b.put_protections[1]);
    const Status s = this->catalog_->Apply(b);
    EXPECT_TRUE(HasCode(s, StatusCode::kInvalidArgument)) << c.want;
    EXPECT_EQ(s.message(), c.want);
  }
  this->ExpectContentsMatchApplied();

  // Zero is allowed (position 0 is the first member).
  CatalogBatch zero;
  zero.put_protections = {Protection("a", 1)};
  zero.put_protections[0].set_position(0);
  zero.put_protections[0].set_m(0);
  this->MustApply(zero);
  this->ExpectContentsMatchApplied();
}

TYPED_TEST(CatalogTest, SegmentIdsAreNeverHandedOutTwice) {
  auto a = this->catalog_->AllocateSegmentIds(1);
  auto b = this->catalog_->AllocateSegmentIds(5);
  auto c = this->catalog_->AllocateSegmentIds(1);
  ASSERT_TRUE(IsOk(a));
  ASSERT_TRUE(IsOk(b));
  ASSERT_TRUE(IsOk(c));
  EXPECT_EQ(*a, 1u);
  EXPECT_EQ(*b, 2u);
  EXPECT_EQ(*c, 7u);
  EXPECT_EQ(this->MustLoad().next_segment_id, 8u);
  EXPECT_TRUE(HasCode(this->catalog_->AllocateSegmentIds(0), StatusCode::kInvalidArgument));
  EXPECT_TRUE(
      HasCode(this->catalog_->AllocateSegmentIds(~uint64_t{0}), StatusCode::kResourceExhausted));
  EXPECT_EQ(this->MustLoad().next_segment_id, 8u);
}

TYPED_TEST(CatalogTest, ConcurrentCallersSeeAtomicBatchesAndDistinctIds) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 40;
  std::vector<std::vector<uint64_t>> ids(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string job = "job" + std::to_string(t);
      for (int i = 0; i < kRounds; ++i) {
        auto first = this->catalog_->AllocateSegmentIds(3);
        if (!first.ok()) {
          ++failures;
          continue;
        }
        for (uint64_t k = 0; k < 3; ++k) ids[t].push_back(*first + k);
        CatalogBatch b;
        b.put_versions = {Version(job, i)};
        b.put_manifests = {Manifest(job, i, 0), Manifest(job, i, 1)};
        b.put_protections = {Protection(job, i)};
        if (i >= 2) b.delete_versions = {{job, i - 2}};
        if (i >= 3) b.delete_protections = {{job, i - 3}};
        if (!this->catalog_->Apply(b).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  std::set<uint64_t> all;
  for (const auto& v : ids) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), size_t{kThreads} * kRounds * 3);
  const CatalogContents c = this->MustLoad();
  EXPECT_EQ(c.next_segment_id, *all.rbegin() + 1);
  EXPECT_EQ(c.versions.size(), size_t{kThreads} * 2);
  EXPECT_EQ(c.manifests.size(), size_t{kThreads} * 2 * 2);
  EXPECT_EQ(c.protections.size(), size_t{kThreads} * 3);
  for (const auto& v : c.versions) EXPECT_GE(v.step(), kRounds - 2);
  for (const auto& m : c.manifests) EXPECT_GE(m.step(), kRounds - 2);
  for (const auto& p : c.protections) EXPECT_GE(p.step(), kRounds - 3);
}

// ---- the UTF-8 check both implementations share -------------------------------

// catalog_internal::IsValidUtf8 must accept exactly what protobuf's parser
// accepts in a proto3 string: stricter, and valid records would be refused;
// looser, and the RocksDB catalog would write records that Load rejects.
TEST(CatalogUtf8Test, AgreesWithProtobufParser) {
  google::protobuf::LogHandler* old_handler = google::protobuf::SetLogHandler(nullptr);
  int checked = 0;
  int mismatches = 0;
  const auto check = [&](const std::string& s) {
    v1::VersionRecord record;
    record.set_job_id(s);
    v1::VersionRecord parsed;
    const bool protobuf_ok = parsed.ParseFromString(record.SerializeAsString());
    const bool ours_ok = catalog_internal::IsValidUtf8(s);
    ++checked;
    if (protobuf_ok != ours_ok && ++mismatches <= 10) {
      ADD_FAILURE() << ::testing::PrintToString(s) << ": protobuf " << protobuf_ok << ", ours "
                    << ours_ok;
    }
  };
  // Every string of one and two bytes.
  for (int a = 0; a < 256; ++a) {
    check(std::string(1, static_cast<char>(a)));
    for (int b = 0; b < 256; ++b) check({static_cast<char>(a), static_cast<char>(b)});
  }
  // Longer sequences: every lead byte and second byte (where the overlong,
  // surrogate and U+10FFFF limits are), and the continuation-byte boundaries
  // for the bytes after them.
  const int edges[] = {0x7f, 0x80, 0xbf, 0xc0};
  for (int a = 0x80; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      for (int c : edges) {
        check({static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)});
        if (a < 0xf0) continue;  // a fourth byte matters only after F0..FF
        for (int d : edges) {
          check({static_cast<char>(a), static_cast<char>(b), static_cast<char>(c),
                 static_cast<char>(d)});
        }
      }
    }
  }
  google::protobuf::SetLogHandler(old_handler);
  EXPECT_EQ(mismatches, 0) << "of " << checked;
}

// ---- MemoryCatalog only ---------------------------------------------------------

TEST(CatalogMemoryTest, InjectedFailuresChangeNothing) {
  MemoryCatalog catalog;
  CatalogBatch base;
  base.put_jobs = {Job("a")};
  base.put_manifests = {Manifest("a", 1, 0), Manifest("a", 2, 0)};
  base.put_versions = {Version("a", 1), Version("a", 2)};
  base.put_protections = {Protection("a", 1), Protection("a", 2)};
  ASSERT_TRUE(IsOk(catalog.Apply(base)));
  EXPECT_EQ(catalog.applies(), 1);
  auto before = catalog.Load();
  ASSERT_TRUE(IsOk(before));

  CatalogBatch change;
  change.put_jobs = {Job("b")};
  change.put_manifests = {Manifest("b", 1, 0)};
  change.put_versions = {Version("b", 1)};
  change.put_protections = {Protection("b", 1)};
  change.delete_versions = {{"a", 1}};
  change.delete_protections = {{"a", 2}};
  change.delete_jobs = {"a"};
  catalog.FailNextApplies(2, Status::Unavailable("injected"));
  for (int i = 0; i < 2; ++i) {
    const Status s = catalog.Apply(change);
    EXPECT_TRUE(HasCode(s, StatusCode::kUnavailable));
    EXPECT_EQ(s.message(), "injected");
    auto now = catalog.Load();
    ASSERT_TRUE(IsOk(now));
    EXPECT_EQ(Dump(*now), Dump(*before));
  }
  EXPECT_EQ(catalog.applies(), 1);

  // A batch of protections alone fails the same way.
  CatalogBatch protections_only;
  protections_only.put_protections = {Protection("c", 1)};
  protections_only.delete_protections = {{"a", 1}};
  catalog.FailNextApplies(1, Status::Unavailable("injected"));
  EXPECT_TRUE(HasCode(catalog.Apply(protections_only), StatusCode::kUnavailable));
  {
    auto now = catalog.Load();
    ASSERT_TRUE(IsOk(now));
    EXPECT_EQ(Dump(*now), Dump(*before));
  }

  // An invalid batch is rejected as such and does not use up a failure.
  catalog.FailNextApplies(1, Status::Internal("injected"));
  CatalogBatch invalid;
  invalid.delete_jobs = {std::string("\0", 1)};
  EXPECT_TRUE(HasCode(catalog.Apply(invalid), StatusCode::kInvalidArgument));
  EXPECT_TRUE(HasCode(catalog.Apply(change), StatusCode::kInternal));

  ASSERT_TRUE(IsOk(catalog.Apply(change)));
  EXPECT_EQ(catalog.applies(), 2);
  auto after = catalog.Load();
  ASSERT_TRUE(IsOk(after));
  EXPECT_EQ(JobIds(*after), std::set<std::string>{"b"});
  EXPECT_EQ(ProtectionIds(*after), (std::vector<VersionId>{{"b", 1}}));

  // FailNextApplies(0, ...) cancels what is left.
  catalog.FailNextApplies(3, Status::Internal("injected"));
  catalog.FailNextApplies(0, Status::Internal("unused"));
  EXPECT_TRUE(IsOk(catalog.Apply(base)));
}

}  // namespace
}  // namespace holdfast::smp::catalog_test
