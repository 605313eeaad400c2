// What only the RocksDB catalog can show: contents and segment ids across
// reopen, the documented key layout, a second open from this process or
// another, damaged records, and SIGKILL in the middle of a write.
//
// The binary has its own main(): started as
//   holdfast_smp_catalog_rocksdb_test --catalog-child <mode> <args...>
// it is a helper process (fork() + exec of /proc/self/exe, so that the child
// does not inherit RocksDB's background threads half-copied) and runs no tests.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catalog/catalog.h"
#include "catalog/rocksdb_catalog.h"
#include "catalog_test_util.h"

namespace holdfast::smp::catalog_test {
namespace {

// ---- helper processes ---------------------------------------------------------

constexpr char kChildFlag[] = "--catalog-child";

// Starts this binary as a helper: `--catalog-child args...`. `keep_fd`, when
// not -1, stays open in the child (its number is one of `args`). Call from the
// test's main thread: the child's death signal follows the forking thread.
pid_t SpawnChild(const std::vector<std::string>& args, int keep_fd = -1) {
  std::vector<std::string> all = {"holdfast_smp_catalog_rocksdb_test", kChildFlag};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls until exec. The child dies with the test
    // (it loops forever in "apply-loop").
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (keep_fd >= 0) fcntl(keep_fd, F_SETFD, 0);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  return pid;
}

// Waits for `pid`; its exit code, or 128 + signal.
int WaitChild(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// --- the kill test's workload, shared by the child that writes it and the
// parent that checks what survived.
//
// Batch n (n = 0, 1, ...) rewrites job "train" with world_size n + 1, adds
// version n with kLoopRanks manifests and its protection, drops version
// n - kLoopKeep and the protection of n - kLoopKeepProtected (protections
// outlive versions, as a member's may). So the whole catalog is a function of
// how many batches were applied, and a torn batch shows as a mismatch.
// Manifests carry enough items (~15 KB a batch) that a batch spans RocksDB's
// 32 KiB log blocks.
constexpr char kLoopJob[] = "train";
constexpr int kLoopRanks = 8;
constexpr int64_t kLoopKeep = 4;
constexpr int64_t kLoopKeepProtected = 6;
constexpr int kLoopItems = 40;

CatalogBatch LoopBatch(int64_t n, uint64_t first_segment_id) {
  CatalogBatch b;
  b.put_jobs.push_back(Job(kLoopJob, static_cast<int>(n + 1)));
  for (int r = 0; r < kLoopRanks; ++r) {
    v1::RankManifestRecord m = Manifest(kLoopJob, n, r, kLoopItems);
    m.set_segment_name(std::to_string(first_segment_id + static_cast<uint64_t>(r)));
    b.put_manifests.push_back(std::move(m));
  }
  b.put_versions.push_back(Version(kLoopJob, n));
  b.put_protections.push_back(Protection(kLoopJob, n));
  if (n >= kLoopKeep) b.delete_versions.push_back({kLoopJob, n - kLoopKeep});
  if (n >= kLoopKeepProtected) b.delete_protections.push_back({kLoopJob, n - kLoopKeepProtected});
  return b;
}

// What the child reports after each applied batch.
struct LoopReport {
  uint64_t batches_applied;
  uint64_t next_segment_id;  // every id below this was handed out
};

// Child: applies LoopBatch after LoopBatch to the catalog in `dir`, forever,
// reporting each to `fd`. Returns only on error.
int ChildApplyLoop(const std::string& dir, int fd) {
  auto opened = OpenRocksDbCatalog(dir);
  if (!opened.ok()) {
    std::fprintf(stderr, "child: %s\n", opened.status().ToString().c_str());
    return 2;
  }
  Catalog& catalog = **opened;
  auto loaded = catalog.Load();
  if (!loaded.ok()) {
    std::fprintf(stderr, "child: %s\n", loaded.status().ToString().c_str());
    return 3;
  }
  int64_t n = loaded->jobs.empty() ? 0 : loaded->jobs[0].world_size();
  for (;; ++n) {
    auto first = catalog.AllocateSegmentIds(kLoopRanks);
    if (!first.ok()) return 4;
    const Status applied = catalog.Apply(LoopBatch(n, *first));
    if (!applied.ok()) {
      std::fprintf(stderr, "child: %s\n", applied.ToString().c_str());
      return 5;
    }
    const LoopReport report{static_cast<uint64_t>(n + 1), *first + kLoopRanks};
    if (write(fd, &report, sizeof(report)) != sizeof(report)) return 6;
  }
}

int ChildMain(int argc, char** argv) {
  const std::string mode = argc > 2 ? argv[2] : "";
  if (mode == "open" && argc == 4) {
    // Exit code: the StatusCode of opening the catalog.
    auto opened = OpenRocksDbCatalog(argv[3]);
    if (!opened.ok()) std::fprintf(stderr, "child: %s\n", opened.status().ToString().c_str());
    return static_cast<int>(opened.status().code());
  }
  if (mode == "apply-loop" && argc == 5) return ChildApplyLoop(argv[3], std::atoi(argv[4]));
  std::fprintf(stderr, "unknown child invocation\n");
  return 100;
}

// ---- RocksDB only ----------------------------------------------------------------

class CatalogRocksDbTest : public ::testing::Test {
 protected:
  std::string db_path() const { return dir_.path() + "/catalog"; }

  std::unique_ptr<Catalog> MustOpen() {
    auto opened = OpenRocksDbCatalog(db_path());
    EXPECT_TRUE(IsOk(opened));
    return opened.ok() ? std::move(opened).value() : nullptr;
  }

  // Writes `key` -> `value` behind the catalog's back (it must be closed).
  void RawPut(const std::string& key, const std::string& value) {
    rocksdb::Options options;
    options.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, db_path(), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, value).ok());
  }

  // Every key and value, in order, read behind the catalog's back.
  std::vector<std::pair<std::string, std::string>> RawScan() {
    std::vector<std::pair<std::string, std::string>> out;
    rocksdb::DB* raw = nullptr;
    EXPECT_TRUE(rocksdb::DB::OpenForReadOnly(rocksdb::Options(), db_path(), &raw).ok());
    if (raw == nullptr) return out;
    std::unique_ptr<rocksdb::DB> db(raw);
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      out.emplace_back(it->key().ToString(), it->value().ToString());
    }
    EXPECT_TRUE(it->status().ok());
    return out;
  }

  TempDir dir_;
};

TEST_F(CatalogRocksDbTest, ContentsSurviveReopen) {
  CatalogBatch b;
  b.put_jobs = {Job("a"), Job("b")};
  b.put_manifests = {Manifest("a", 1, 0, 7), Manifest("a", 1, 1), Manifest("b", 0, 0)};
  b.put_versions = {Version("a", 1)};
  b.put_protections = {Protection("a", 1), Protection("a", 0), Protection("b", 0),
                       Protection("c", 9)};
  CatalogBatch del;
  del.delete_jobs = {"b"};
  del.delete_protections = {{"a", 0}};
  std::string before;
  {
    auto catalog = MustOpen();
    ASSERT_NE(catalog, nullptr);
    ASSERT_TRUE(IsOk(catalog->Apply(b)));
    ASSERT_TRUE(IsOk(catalog->Apply(del)));
    ASSERT_TRUE(IsOk(catalog->AllocateSegmentIds(3)));
    auto loaded = catalog->Load();
    ASSERT_TRUE(IsOk(loaded));
    before = Dump(*loaded);
  }
  CatalogContents expected = Expected({b, del});
  expected.next_segment_id = 4;
  EXPECT_EQ(before, Dump(expected));
  ASSERT_EQ(expected.protections.size(), 2u);  // a/1 and c/9
  auto catalog = MustOpen();
  ASSERT_NE(catalog, nullptr);
  auto loaded = catalog->Load();
  ASSERT_TRUE(IsOk(loaded));
  EXPECT_EQ(Dump(*loaded), before);
}

TEST_F(CatalogRocksDbTest, KeyLayoutIsAsDocumented) {
  {
    auto catalog = MustOpen();
    ASSERT_NE(catalog, nullptr);
    CatalogBatch b;
    b.put_jobs = {Job("jb")};
    b.put_manifests = {Manifest("jb", 0x0102, 0x0304)};
    b.put_versions = {Version("jb", -2)};
    b.put_protections = {Protection("jb", 0x0506)};
    ASSERT_TRUE(IsOk(catalog->Apply(b)));
    ASSERT_TRUE(IsOk(catalog->AllocateSegmentIds(0x41)));
  }
  using namespace std::string_literals;
  const auto scan = RawScan();
  std::vector<std::string> keys;
  for (const auto& [k, v] : scan) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "j/jb"s,
                      "m/jb\0\x80\0\0\0\0\0\x01\x02\0\0\x03\x04"s,
                      "p/jb\0\x80\0\0\0\0\0\x05\x06"s,
                      "s/next"s,
                      "v/jb\0\x7f\xff\xff\xff\xff\xff\xff\xfe"s,
                  }));
  ASSERT_EQ(scan.size(), 5u);
  EXPECT_EQ(scan[3].second, "\0\0\0\0\0\0\0\x42"s);
}

TEST_F(CatalogRocksDbTest, SegmentIdsNeverRepeatAcrossReopen) {
  std::set<uint64_t> seen;
  for (int round = 0; round < 5; ++round) {
    auto catalog = MustOpen();
    ASSERT_NE(catalog, nullptr);
    for (uint64_t count : {1, 2, 7}) {
      auto first = catalog->AllocateSegmentIds(count);
      ASSERT_TRUE(IsOk(first));
      for (uint64_t i = 0; i < count; ++i) {
        EXPECT_TRUE(seen.insert(*first + i).second) << "id " << *first + i << " handed out twice";
      }
    }
  }
  EXPECT_EQ(*seen.begin(), 1u);
  EXPECT_EQ(*seen.rbegin(), seen.size());  // dense: 1..N
}

TEST_F(CatalogRocksDbTest, SecondOpenInSameProcessIsUnavailable) {
  auto first = MustOpen();
  ASSERT_NE(first, nullptr);
  auto second = OpenRocksDbCatalog(db_path());
  EXPECT_TRUE(HasCode(second, StatusCode::kUnavailable));
  EXPECT_NE(second.status().message().find("another holdfastd"), std::string::npos)
      << second.status().message();
  // The failed open leaves the first one working.
  CatalogBatch b;
  b.put_jobs = {Job("a")};
  EXPECT_TRUE(IsOk(first->Apply(b)));
  first.reset();
  EXPECT_NE(MustOpen(), nullptr);
}

TEST_F(CatalogRocksDbTest, SecondOpenFromAnotherProcessIsUnavailable) {
  auto first = MustOpen();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(WaitChild(SpawnChild({"open", db_path()})), static_cast<int>(StatusCode::kUnavailable));
  first.reset();
  // Closed here, the other process may open it.
  EXPECT_EQ(WaitChild(SpawnChild({"open", db_path()})), 0);
}

TEST_F(CatalogRocksDbTest, UnparsableValueIsDataLossNamingTheKey) {
  using namespace std::string_literals;
  const std::pair<std::string, std::string> cases[] = {
      {"m/broken-job\0\x80\0\0\0\0\0\0\x05\0\0\0\x01"s, "m/broken-job"},
      {"p/broken-job\0\x80\0\0\0\0\0\0\x05"s, "p/broken-job"},
  };
  for (const auto& [key, printed] : cases) {
    SCOPED_TRACE(printed);
    std::filesystem::remove_all(db_path());
    { ASSERT_NE(MustOpen(), nullptr); }
    // Field 1, length-delimited, claiming 127 bytes that are not there.
    RawPut(key, "\x0a\x7f garbage"s);
    auto catalog = MustOpen();
    ASSERT_NE(catalog, nullptr);
    auto loaded = catalog->Load();
    EXPECT_TRUE(HasCode(loaded, StatusCode::kDataLoss));
    EXPECT_NE(loaded.status().message().find(printed), std::string::npos)
        << loaded.status().message();
  }
}

TEST_F(CatalogRocksDbTest, MalformedKeysAreDataLoss) {
  using namespace std::string_literals;
  const std::string valid_version = Version("a", 1).SerializeAsString();
  const std::string valid_protection = Protection("a", 1).SerializeAsString();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"m/no-nul-here"s, Manifest("a", 1, 0).SerializeAsString()},
      {"m/a\0\x80\0\0\0\0\0\0\x01\0\0"s, Manifest("a", 1, 0).SerializeAsString()},  // short
      {"v/a\0\x80\0\0\0\0\0\0\x01\x00"s, valid_version},                            // long
      {"p/a\0\x80\0\0\0\0\0\x01"s, valid_protection},                               // short
      {"x/unknown"s, "whatever"},
      // Parsable, but the record is not the one its key names.
      {"v/a\0\x80\0\0\0\0\0\0\x02"s, valid_version},
      {"p/b\0\x80\0\0\0\0\0\0\x01"s, valid_protection},
      {"j/b"s, Job("a").SerializeAsString()},
  };
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(::testing::PrintToString(key));
    std::filesystem::remove_all(db_path());
    { ASSERT_NE(MustOpen(), nullptr); }
    RawPut(key, value);
    auto catalog = MustOpen();
    ASSERT_NE(catalog, nullptr);
    auto loaded = catalog->Load();
    EXPECT_TRUE(HasCode(loaded, StatusCode::kDataLoss));
  }
}

TEST_F(CatalogRocksDbTest, DamagedSegmentCounterFailsOpen) {
  { ASSERT_NE(MustOpen(), nullptr); }
  RawPut("s/next", "abc");
  auto opened = OpenRocksDbCatalog(db_path());
  EXPECT_TRUE(HasCode(opened, StatusCode::kDataLoss));
  EXPECT_NE(opened.status().message().find("s/next"), std::string::npos);
}

TEST_F(CatalogRocksDbTest, OpenOnARegularFileFails) {
  {
    std::FILE* f = std::fopen(db_path().c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  auto opened = OpenRocksDbCatalog(db_path());
  EXPECT_FALSE(opened.ok());
  EXPECT_NE(opened.status().message().find(db_path()), std::string::npos)
      << opened.status().ToString();
}

// A second process applies batches in a loop and is SIGKILLed at a random
// point; after each kill the catalog must hold a prefix of the batches, each
// whole, including every batch the child saw Apply return for.
TEST_F(CatalogRocksDbTest, SigkillMidApplyLeavesWholeBatches) {
  constexpr int kIterations = 24;
  std::mt19937_64 rng = TestRng();
  uint64_t total_reports = 0;
  uint64_t acknowledged = 0;  // batches the child saw applied, over all children
  uint64_t handed_out = 1;    // every id below this was handed out by some child
  for (int iter = 0; iter < kIterations; ++iter) {
    SCOPED_TRACE("iteration " + std::to_string(iter) + ", " + SeedTrace());
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    const pid_t pid = SpawnChild({"apply-loop", db_path(), std::to_string(fds[1])}, fds[1]);
    ASSERT_GT(pid, 0);
    close(fds[1]);

    // Let it apply a random number of batches (0: kill it while it starts or
    // recovers), then kill it after a random pause of up to ~2 batches, so
    // that the kill lands anywhere in a batch. The pause is jitter only:
    // nothing depends on how long it is.
    const int wait_for = static_cast<int>(rng() % 8);
    const auto jitter = std::chrono::microseconds(rng() % 1500);
    LoopReport report{};
    int reports = 0;
    while (reports < wait_for && read(fds[0], &report, sizeof(report)) == sizeof(report)) {
      ++reports;
      acknowledged = std::max(acknowledged, report.batches_applied);
      handed_out = std::max(handed_out, report.next_segment_id);
    }
    std::this_thread::sleep_for(jitter);
    kill(pid, SIGKILL);
    const int exit_code = WaitChild(pid);
    ASSERT_EQ(exit_code, 128 + SIGKILL) << "the child stopped on its own (see its stderr)";
    while (read(fds[0], &report, sizeof(report)) == sizeof(report)) {  // what it wrote last
      ++reports;
      acknowledged = std::max(acknowledged, report.batches_applied);
      handed_out = std::max(handed_out, report.next_segment_id);
    }
    close(fds[0]);
    total_reports += static_cast<uint64_t>(reports);

    auto catalog = MustOpen();
    ASSERT_NE(catalog, nullptr);
    auto loaded = catalog->Load();
    ASSERT_TRUE(IsOk(loaded));
    const CatalogContents& c = *loaded;
    const int64_t n = c.jobs.empty() ? 0 : c.jobs[0].world_size();
    ASSERT_GE(static_cast<uint64_t>(n), acknowledged) << "an acknowledged batch was lost";
    ASSERT_LE(static_cast<uint64_t>(n), acknowledged + 1) << "more batches than were started";
    ASSERT_GE(c.next_segment_id, handed_out) << "segment ids would be handed out again";

    // The exact contents after n whole batches (segment names aside: they
    // depend on ids lost to earlier kills).
    CatalogContents want;
    if (n > 0) want.jobs.push_back(Job(kLoopJob, static_cast<int>(n)));
    std::set<uint64_t> segment_ids;
    for (int64_t step = std::max<int64_t>(0, n - kLoopKeep); step < n; ++step) {
      want.versions.push_back(Version(kLoopJob, step));
      for (int r = 0; r < kLoopRanks; ++r) {
        want.manifests.push_back(Manifest(kLoopJob, step, r, kLoopItems));
      }
    }
    for (int64_t step = std::max<int64_t>(0, n - kLoopKeepProtected); step < n; ++step) {
      want.protections.push_back(Protection(kLoopJob, step));
    }
    CatalogContents got = c;
    for (size_t i = 0; i < got.manifests.size(); ++i) {
      const uint64_t id = std::strtoull(got.manifests[i].segment_name().c_str(), nullptr, 10);
      EXPECT_TRUE(segment_ids.insert(id).second);
      EXPECT_LT(id, c.next_segment_id);
      if (i < want.manifests.size()) {
        got.manifests[i].set_segment_name(want.manifests[i].segment_name());
      }
    }
    want.next_segment_id = got.next_segment_id;
    ASSERT_EQ(Dump(got), Dump(want)) << "after " << n << " batches";
    handed_out = c.next_segment_id;
    acknowledged = static_cast<uint64_t>(n);
  }
  EXPECT_GT(total_reports, 0u) << "no child ever applied a batch";
  EXPECT_GT(acknowledged, 0u);
}
}  // namespace
}  // namespace holdfast::smp::catalog_test

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], holdfast::smp::catalog_test::kChildFlag) == 0) {
    return holdfast::smp::catalog_test::ChildMain(argc, argv);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
