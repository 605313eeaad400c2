// Helpers shared by the catalog tests (catalog_test.cc,
// catalog_rocksdb_test.cc): the seeded RNG, Status assertions, a temporary
// directory, record builders, and an independent model of what a sequence of
// batches should leave in the catalog.
#ifndef HOLDFAST_TESTS_SMP_CATALOG_TEST_UTIL_H_
#define HOLDFAST_TESTS_SMP_CATALOG_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "catalog/catalog.h"
#include "holdfast/testing/seed.h"
#include "holdfast/testing/status_matchers.h"

namespace holdfast::smp::catalog_test {

// HOLDFAST_TEST_SEED (decimal or 0x-hex) or a fixed default.
using holdfast::testing::SuiteSeed;

// "HOLDFAST_TEST_SEED=0x...": tests that draw from TestRng() SCOPED_TRACE it,
// so that a failure says how to replay it.
std::string SeedTrace();

// Seeded from the suite seed and the running test's name.
std::mt19937_64 TestRng();

using holdfast::testing::HasCode;
using holdfast::testing::IsOk;

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it
// at the end.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

v1::JobRecord Job(const std::string& job_id, int world_size = 8);
// A manifest whose contents are a function of (job, step, rank), so that a
// mixed-up record shows.
v1::RankManifestRecord Manifest(const std::string& job_id, int64_t step, int32_t rank,
                                int items = 2);
v1::VersionRecord Version(const std::string& job_id, int64_t step);
// A protection of (job, step) whose contents, nested group manifest
// included, are a function of (job, step): `members` members of two ranks
// each, their rank parts made by Manifest().
v1::ProtectionRecord Protection(const std::string& job_id, int64_t step, int members = 3);

using ManifestId = std::tuple<std::string, int64_t, int32_t>;
using VersionId = std::pair<std::string, int64_t>;

std::vector<ManifestId> ManifestIds(const CatalogContents& c);
std::vector<VersionId> VersionIds(const CatalogContents& c);
std::vector<VersionId> ProtectionIds(const CatalogContents& c);
std::set<std::string> JobIds(const CatalogContents& c);

// Every record, one per line, in load order (jobs sorted: their order is not
// part of the contract).
std::string Dump(const CatalogContents& c);

// The contents `batches` should produce, computed independently of both
// implementations: a map per record kind, sorted the way Load must sort.
// next_segment_id is left at its default.
CatalogContents Expected(const std::vector<CatalogBatch>& batches);

}  // namespace holdfast::smp::catalog_test

#endif  // HOLDFAST_TESTS_SMP_CATALOG_TEST_UTIL_H_
