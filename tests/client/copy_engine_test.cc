// CopyEngine: every byte lands, and every checksum equals the single-pass
// checksum of the destination, for any split into slices and any thread count.
#include "copy_engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "holdfast/ec/checksum.h"
#include "holdfast/testing/random_bytes.h"
#include "holdfast/testing/seed.h"

namespace holdfast::client::internal {
namespace {

// Copies `sizes` with `engine` and checks bytes and checksums.
void CheckCopy(CopyEngine& engine, const std::vector<size_t>& sizes, std::mt19937_64& rng) {
  std::vector<std::vector<uint8_t>> srcs;
  std::vector<std::vector<uint8_t>> dsts;
  std::vector<CopyJob> jobs;
  for (size_t n : sizes) {
    srcs.push_back(testing::RandomBytes(rng, n));
    dsts.emplace_back(n, 0xA5);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    jobs.push_back({dsts[i].data(), srcs[i].data(), sizes[i]});
  }
  std::vector<uint64_t> sums(jobs.size(), 0xDEAD);
  engine.CopyAndChecksum(jobs, sums);
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_EQ(dsts[i], srcs[i]) << "job " << i << " of " << sizes[i] << " bytes";
    ASSERT_EQ(sums[i], ec::Checksum(srcs[i])) << "job " << i << " of " << sizes[i] << " bytes";
  }
}

class CopyEngineThreads : public ::testing::TestWithParam<int> {};

TEST_P(CopyEngineThreads, CopiesAndChecksumsAcrossSlices) {
  std::mt19937_64 rng(testing::SuiteSeed());
  CopyEngine engine(GetParam());
  constexpr size_t kSlice = CopyEngine::kSlice;
  // Empty, tiny, piece and slice boundaries, several slices with a tail.
  CheckCopy(engine, {0, 1, 4095, CopyEngine::kPiece + 3, kSlice - 1, kSlice, kSlice + 1,
                     2 * kSlice + 12345, 0, 7},
            rng);
}

TEST_P(CopyEngineThreads, SmallCallsRunInline) {
  std::mt19937_64 rng(testing::SuiteSeed() + 1);
  CopyEngine engine(GetParam());
  for (int round = 0; round < 50; ++round) {
    std::vector<size_t> sizes;
    const int n = static_cast<int>(rng() % 6);
    for (int i = 0; i < n; ++i) sizes.push_back(rng() % 100000);
    CheckCopy(engine, sizes, rng);
  }
}

TEST_P(CopyEngineThreads, ManyRandomCallsReuseTheWorkers) {
  std::mt19937_64 rng(testing::SuiteSeed() + 2);
  CopyEngine engine(GetParam());
  for (int round = 0; round < 6; ++round) {
    std::vector<size_t> sizes;
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) sizes.push_back(rng() % (2 * CopyEngine::kSlice + 1));
    CheckCopy(engine, sizes, rng);
  }
}

// src == nullptr: the bytes are already in dst (a device copy put them
// there); only the checksum is taken, and dst is left alone.
TEST_P(CopyEngineThreads, ChecksumOnlyJobs) {
  std::mt19937_64 rng(testing::SuiteSeed() + 3);
  CopyEngine engine(GetParam());
  std::vector<std::vector<uint8_t>> bufs;
  for (size_t n : {size_t{0}, size_t{5}, CopyEngine::kSlice * 2 + 99, CopyEngine::kPiece}) {
    bufs.push_back(testing::RandomBytes(rng, n));
  }
  const std::vector<std::vector<uint8_t>> before = bufs;
  std::vector<CopyJob> jobs;
  for (auto& b : bufs) jobs.push_back({b.data(), nullptr, b.size()});
  std::vector<uint64_t> sums(jobs.size());
  engine.CopyAndChecksum(jobs, sums);
  for (size_t i = 0; i < bufs.size(); ++i) {
    EXPECT_EQ(bufs[i], before[i]);
    EXPECT_EQ(sums[i], ec::Checksum(bufs[i])) << "job " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, CopyEngineThreads, ::testing::Values(0, 1, 2, 3, 5));

// Calls from several threads take turns; each gets its own results.
TEST(CopyEngineTest, ConcurrentCallersAreSerialized) {
  CopyEngine engine(2);
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&engine, t] {
      std::mt19937_64 rng(testing::SuiteSeed() + 100 + t);
      for (int round = 0; round < 4; ++round) {
        CheckCopy(engine, {CopyEngine::kSlice * 2 + 77, 1000, CopyEngine::kSlice / 2}, rng);
      }
    });
  }
  for (std::thread& c : callers) c.join();
}

TEST(CopyEngineTest, ThreadCountCountsTheCaller) {
  EXPECT_EQ(CopyEngine(1).threads(), 1);
  EXPECT_EQ(CopyEngine(3).threads(), 3);
  const int automatic = CopyEngine(0).threads();
  EXPECT_GE(automatic, 1);
  EXPECT_LE(automatic, 4);
}

}  // namespace
}  // namespace holdfast::client::internal
