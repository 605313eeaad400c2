// Job isolation, limits and hostile input on holdfastd's Snapshot service,
// through the real socket (docs/security.md, docs/reliability-badinput.md):
// the socket's group and mode, per-job secrets (issued, stored, derived from
// a token, kept over a restart), one job's credentials against another job's
// versions, the per-job quota and caps, and requests no client library would
// send (wrapping sizes, path-like names, calls out of order, floods). Every
// refusal has its exact status; afterwards every committed version still
// restores bit for bit.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "harness.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/proto/job_credentials.h"

namespace holdfast::testing {
namespace {

class JobSecTest : public ::testing::Test {
 protected:
  explicit JobSecTest(DaemonOptions options = {.memory_budget = "64MiB", .retain = 2})
      : daemon_(std::move(options)) {}

  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    raw_ = std::make_unique<RawClient>(daemon_.socket_path());
    tool_ = Tool("a");
    const ToolRun run = RunTool(tool_, {"save", "--steps", "1:2"});
    ASSERT_TRUE(run.ok()) << run.Describe();
  }

  ToolOptions Tool(const std::string& job) const {
    ToolOptions t;
    t.socket = daemon_.socket_path();
    t.job = job;
    t.items = 3;
    t.item_bytes = 100000;
    return t;
  }

  // Job a's committed versions are untouched and served.
  void ExpectIntact() {
    ASSERT_TRUE(daemon_.Running()) << "holdfastd died";
    EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 2));
    EXPECT_TRUE(VerifiesAs(tool_, 1, 1));
  }

  static v1::BeginSnapshotRequest Begin(const std::string& job, int64_t step,
                                        std::vector<v1::ItemSpec> items, int rank = 0) {
    v1::BeginSnapshotRequest req;
    req.set_job_id(job);
    req.set_rank(rank);
    req.set_step(step);
    for (v1::ItemSpec& item : items) *req.add_items() = std::move(item);
    return req;
  }

  Daemon daemon_;
  std::unique_ptr<RawClient> raw_;
  ToolOptions tool_;
};

// ---- the socket -----------------------------------------------------------------------

TEST(DaemonSocketTest, SocketIs0660OfTheConfiguredGroup) {
  const struct group* g = getgrnam("nogroup");
  if (g == nullptr) GTEST_SKIP() << "no group 'nogroup' on this machine";
  const gid_t gid = g->gr_gid;
  Daemon daemon({.extra_args = {"--socket-group", "nogroup"}});
  ASSERT_TRUE(daemon.Start());
  struct stat st;
  ASSERT_EQ(stat(daemon.socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, gid);
  // Restarted, the same again (the stale socket is replaced).
  ASSERT_TRUE(daemon.Restart());
  ASSERT_EQ(stat(daemon.socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, gid);
}

TEST(DaemonSocketTest, UnknownGroupStopsTheDaemonWithAClearError) {
  Daemon daemon({.extra_args = {"--socket-group", "hf-no-such-group"}});
  EXPECT_FALSE(daemon.Start());
  auto exit = daemon.WaitExit(Scaled(10s));
  ASSERT_TRUE(exit.has_value());
  EXPECT_TRUE(exit->exited && exit->code == 1) << exit->ToString();
  EXPECT_NE(daemon.Log().find("socket_group: no group named \"hf-no-such-group\""),
            std::string::npos)
      << daemon.Log();
}

// ---- job secrets ----------------------------------------------------------------------

TEST_F(JobSecTest, RegistrationIssuesASecretEveryCallMustCarry) {
  ASSERT_TRUE(IsOk(raw_->RegisterJob("b", 1, {0})));
  const std::string secret = raw_->Secret("b");
  EXPECT_TRUE(proto::WellFormedSecret(secret)) << secret;
  EXPECT_NE(secret, raw_->Secret("a")) << "each job gets its own";

  v1::ListVersionsRequest list;
  list.set_job_id("b");
  v1::ListVersionsResponse versions;
  EXPECT_TRUE(HasStatus(raw_->stub().ListVersions(raw_->ContextWith("b", "").get(), list, &versions),
                        grpc::StatusCode::PERMISSION_DENIED, "job b requires its secret"));
  const std::string wrong(64, '0');
  EXPECT_TRUE(HasStatus(
      raw_->stub().ListVersions(raw_->ContextWith("b", wrong).get(), list, &versions),
      grpc::StatusCode::PERMISSION_DENIED, "wrong secret for job b"));
  // Not hex, too short, too long: wrong all the same.
  for (const std::string& bad : {std::string("zz"), secret.substr(1), secret + "0"}) {
    EXPECT_TRUE(HasStatus(
        raw_->stub().ListVersions(raw_->ContextWith("b", bad).get(), list, &versions),
        grpc::StatusCode::PERMISSION_DENIED, "job b"))
        << bad;
  }
  EXPECT_TRUE(IsOk(raw_->stub().ListVersions(raw_->ContextWith("b", secret).get(), list,
                                             &versions)));
  // Re-registering needs it too; with it, registration is idempotent.
  v1::RegisterJobRequest reg;
  reg.set_job_id("b");
  reg.set_world_size(1);
  reg.add_local_ranks(0);
  v1::RegisterJobResponse resp;
  EXPECT_TRUE(HasStatus(raw_->stub().RegisterJob(raw_->ContextWith("b", wrong).get(), reg, &resp),
                        grpc::StatusCode::PERMISSION_DENIED, "wrong secret for job b"));
  EXPECT_TRUE(IsOk(raw_->stub().RegisterJob(raw_->ContextWith("b", secret).get(), reg, &resp)));
  EXPECT_TRUE(resp.job_secret().empty()) << "issued once only";
  ExpectIntact();
}

TEST_F(JobSecTest, AnotherJobsCredentialsCannotReadListOrDrop) {
  ASSERT_TRUE(IsOk(raw_->RegisterJob("b", 1, {0})));
  const std::string b = raw_->Secret("b");
  auto as_b = [&] { return raw_->ContextWith("b", b); };

  v1::ListVersionsRequest list;
  list.set_job_id("a");
  v1::ListVersionsResponse versions;
  EXPECT_TRUE(HasStatus(raw_->stub().ListVersions(as_b().get(), list, &versions),
                        grpc::StatusCode::PERMISSION_DENIED, "wrong secret for job a"));
  // "Every job" is the caller's job only.
  list.set_job_id("");
  ASSERT_TRUE(IsOk(raw_->stub().ListVersions(as_b().get(), list, &versions)));
  EXPECT_EQ(versions.versions_size(), 0) << "b has none; a's are not shown";
  EXPECT_TRUE(HasStatus(
      raw_->stub().ListVersions(raw_->ContextWith("", "").get(), list, &versions),
      grpc::StatusCode::PERMISSION_DENIED, "operator call"));

  v1::OpenRestoreRequest restore;
  restore.set_job_id("a");
  restore.set_rank(0);
  restore.set_latest(true);
  v1::OpenRestoreResponse opened;
  EXPECT_TRUE(HasStatus(raw_->stub().OpenRestore(as_b().get(), restore, &opened),
                        grpc::StatusCode::PERMISSION_DENIED, "wrong secret for job a"));

  v1::DropVersionsRequest drop;
  drop.set_job_id("a");
  drop.set_all(true);
  drop.set_force(true);
  v1::DropVersionsResponse dropped;
  EXPECT_TRUE(HasStatus(raw_->stub().DropVersions(as_b().get(), drop, &dropped),
                        grpc::StatusCode::PERMISSION_DENIED, "wrong secret for job a"));

  v1::BeginSnapshotResponse reserved;
  EXPECT_TRUE(HasStatus(
      raw_->stub().BeginSnapshot(as_b().get(), Begin("a", 3, {U8Item("w", 4096)}), &reserved),
      grpc::StatusCode::PERMISSION_DENIED, "wrong secret for job a"));

  // A lease of a, closed with b's credentials: not found for b.
  ASSERT_TRUE(IsOk(raw_->OpenRestore(restore, &opened)));
  v1::CloseRestoreRequest close;
  close.set_lease_id(opened.lease_id());
  close.set_verified(false);  // would make the daemon re-check a's version
  v1::CloseRestoreResponse closed;
  EXPECT_TRUE(HasStatus(raw_->stub().CloseRestore(as_b().get(), close, &closed),
                        grpc::StatusCode::NOT_FOUND, "of this caller's job"));
  ASSERT_TRUE(IsOk(raw_->CloseRestore(opened.lease_id(), true)));

  // a's write, committed or aborted under b's name: b has no such write, and
  // the answer does not name a.
  ASSERT_TRUE(IsOk(raw_->Begin(Begin("a", 3, {U8Item("w", 4096)}), &reserved)));
  v1::CommitSnapshotRequest commit;
  commit.set_job_id("b");
  commit.set_rank(0);
  commit.set_step(3);
  commit.set_write_id(reserved.write_id());
  commit.add_checksums(0);
  v1::CommitSnapshotResponse committed;
  const grpc::Status s = raw_->stub().CommitSnapshot(as_b().get(), commit, &committed);
  EXPECT_TRUE(HasStatus(s, grpc::StatusCode::NOT_FOUND, "for job b"));
  EXPECT_EQ(s.error_message().find("job a"), std::string::npos) << s.error_message();
  v1::AbortSnapshotRequest abort;
  abort.set_job_id("b");
  abort.set_rank(0);
  abort.set_write_id(reserved.write_id());
  v1::AbortSnapshotResponse aborted;
  EXPECT_TRUE(HasStatus(raw_->stub().AbortSnapshot(as_b().get(), abort, &aborted),
                        grpc::StatusCode::NOT_FOUND, "for job b rank 0"));
  abort.set_job_id("a");
  ASSERT_TRUE(IsOk(raw_->Abort(abort)));

  // GetStatus on the Snapshot service shows the caller's job only; without
  // credentials, no job.
  v1::GetStatusResponse status;
  ASSERT_TRUE(IsOk(raw_->stub().GetStatus(as_b().get(), v1::GetStatusRequest(), &status)));
  ASSERT_EQ(status.jobs_size(), 1);
  EXPECT_EQ(status.jobs(0).job_id(), "b");
  ASSERT_TRUE(IsOk(
      raw_->stub().GetStatus(raw_->ContextWith("", "").get(), v1::GetStatusRequest(), &status)));
  EXPECT_EQ(status.jobs_size(), 0);
  EXPECT_GT(status.memory_used_bytes(), 0u) << "node figures stay";
  // The operators' view (Admin, on the same socket) has both.
  ASSERT_TRUE(IsOk(raw_->GetStatus(&status)));
  EXPECT_EQ(status.jobs_size(), 2);
  ExpectIntact();
}

TEST_F(JobSecTest, TheSecretSurvivesADaemonRestartAndIsKeptInTheCatalog) {
  const std::string secret = raw_->Secret("a");
  ASSERT_TRUE(proto::WellFormedSecret(secret));
  ASSERT_TRUE(daemon_.Restart(/*hard=*/true));
  RawClient raw(daemon_.socket_path());
  v1::ListVersionsRequest list;
  list.set_job_id("a");
  v1::ListVersionsResponse versions;
  EXPECT_TRUE(HasStatus(raw.stub().ListVersions(raw.ContextWith("a", "").get(), list, &versions),
                        grpc::StatusCode::PERMISSION_DENIED, "job a requires its secret"));
  // A restarted trainer (the tool, a new process) finds the stored secret.
  ExpectIntact();
  const ToolRun run = RunTool(tool_, {"save", "--steps", "3:3"});
  ASSERT_TRUE(run.ok()) << run.Describe();
  EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 3));
  EXPECT_EQ(raw.Secret("a"), secret);
}

TEST_F(JobSecTest, RanksRegisteringAtOnceShareTheIssuedSecretThroughA0600File) {
  // Four ranks of one job, four processes, registering at the same moment:
  // one gets the secret issued and stores it, the others read it.
  std::vector<std::unique_ptr<ToolProcess>> ranks;
  for (int r = 0; r < 4; ++r) {
    ToolOptions t = Tool("r");
    t.rank = r;
    t.world_size = 4;
    t.local_ranks = {0, 1, 2, 3};
    t.seed = 10 + r;
    ranks.push_back(std::make_unique<ToolProcess>(t, std::vector<std::string>{"save", "--steps",
                                                                              "1:1"}));
  }
  for (auto& p : ranks) {
    const ToolRun run = p->Wait();
    EXPECT_TRUE(run.ok()) << run.Describe();
  }
  EXPECT_EQ(LatestStep(*raw_, "r"), 1);
  // The file: 0600 in a 0700 directory of this user.
  const char* dir = std::getenv("HOLDFAST_SECRET_DIR");
  ASSERT_NE(dir, nullptr);
  struct stat st;
  ASSERT_EQ(stat(dir, &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.size() < 2 || name.substr(name.size() - 2) != "-r") continue;
    ++files;
    ASSERT_EQ(stat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
    EXPECT_EQ(ReadFile(entry.path().string()), raw_->Secret("r") + "\n");
  }
  EXPECT_EQ(files, 1);
}

TEST_F(JobSecTest, ASecretDirectoryOthersCanWriteIsRefused) {
  const std::string dir = daemon_.root() + "/open-secrets";
  ASSERT_TRUE(std::filesystem::create_directory(dir));
  ASSERT_EQ(chmod(dir.c_str(), 0777), 0);
  const std::string saved = std::getenv("HOLDFAST_SECRET_DIR");
  setenv("HOLDFAST_SECRET_DIR", dir.c_str(), 1);
  const ToolRun run = RunTool(Tool("o"), {"save", "--steps", "1:1"});
  setenv("HOLDFAST_SECRET_DIR", saved.c_str(), 1);
  EXPECT_FALSE(run.ok());
  EXPECT_NE(run.err.find("must be a directory of this user, not writable by others"),
            std::string::npos)
      << run.Describe();
  ExpectIntact();
}

TEST_F(JobSecTest, RanksSharingATokenDeriveTheSameSecret) {
  const std::string token = "token-of-job-t-" + std::to_string(TestSeed());
  setenv("HOLDFAST_JOB_TOKEN", token.c_str(), 1);
  ToolOptions rank0 = Tool("t");
  rank0.world_size = 2;
  rank0.local_ranks = {0, 1};
  ToolOptions rank1 = rank0;
  rank1.rank = 1;
  rank1.seed = 2;
  ToolProcess p0(rank0, {"save", "--steps", "1:2"});
  ToolProcess p1(rank1, {"save", "--steps", "1:2"});
  const ToolRun r0 = p0.Wait();
  const ToolRun r1 = p1.Wait();
  EXPECT_TRUE(r0.ok()) << r0.Describe();
  EXPECT_TRUE(r1.ok()) << r1.Describe();
  EXPECT_TRUE(VerifiesAs(rank0, std::nullopt, 2));
  EXPECT_TRUE(VerifiesAs(rank1, 1, 1));
  unsetenv("HOLDFAST_JOB_TOKEN");
  // Nothing stored for t: the token is the only way in.
  EXPECT_EQ(raw_->Secret("t"), "");
  v1::ListVersionsRequest list;
  list.set_job_id("t");
  v1::ListVersionsResponse versions;
  EXPECT_TRUE(HasStatus(raw_->stub().ListVersions(raw_->ContextWith("t", "").get(), list, &versions),
                        grpc::StatusCode::PERMISSION_DENIED, "job t requires its secret"));
  ASSERT_TRUE(IsOk(raw_->stub().ListVersions(
      raw_->ContextWith("t", proto::SecretFromToken(token, "t")).get(), list, &versions)));
  EXPECT_EQ(versions.versions_size(), 2);
  // Another token is another secret.
  EXPECT_TRUE(HasStatus(raw_->stub().ListVersions(
                            raw_->ContextWith("t", proto::SecretFromToken(token + "x", "t")).get(),
                            list, &versions),
                        grpc::StatusCode::PERMISSION_DENIED, "wrong secret for job t"));
  ExpectIntact();
}

// ---- limits ---------------------------------------------------------------------------

class JobQuotaTest : public JobSecTest {
 protected:
  // Job a's two versions: 3 items of 100000 bytes at 256-byte alignment end
  // at 300192, a segment of 303104 bytes (whole pages) each.
  JobQuotaTest()
      : JobSecTest({.memory_budget = "64MiB",
                    .retain = 2,
                    .write_timeout_s = 2,
                    .extra_args = {"--job-quota", "2MiB", "--max-writes-per-job", "3",
                                   "--max-sessions-per-job", "2", "--max-jobs", "3"}}) {}
};

TEST_F(JobQuotaTest, BeginBeyondTheJobsQuotaIsResourceExhausted) {
  v1::BeginSnapshotResponse reserved;
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {U8Item("w", 2 << 20)}), &reserved),
                        grpc::StatusCode::RESOURCE_EXHAUSTED, "of its quota 2097152 bytes"));
  const grpc::Status s = raw_->Begin(Begin("a", 3, {U8Item("w", 2 << 20)}), &reserved);
  EXPECT_NE(s.error_message().find("job a uses 606208 bytes"), std::string::npos)
      << s.error_message();
  // Within the quota it works, and another job has its own.
  ASSERT_TRUE(IsOk(raw_->Begin(Begin("a", 3, {U8Item("w", 1 << 20)}), &reserved)));
  const ToolRun b = RunTool(Tool("b"), {"save", "--steps", "1:2"});
  EXPECT_TRUE(b.ok()) << b.Describe();
  ExpectIntact();
  EXPECT_TRUE(VerifiesAs(Tool("b"), std::nullopt, 2));
}

TEST_F(JobQuotaTest, AFloodOfBeginsIsCappedAndExpires) {
  ASSERT_TRUE(IsOk(raw_->RegisterJob("f", 8, {0, 1, 2, 3, 4, 5, 6, 7})));
  v1::BeginSnapshotResponse reserved;
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_TRUE(IsOk(raw_->Begin(Begin("f", 1, {U8Item("w", 4096)}, rank), &reserved)));
  }
  for (int rank = 3; rank < 8; ++rank) {
    EXPECT_TRUE(HasStatus(raw_->Begin(Begin("f", 1, {U8Item("w", 4096)}, rank), &reserved),
                          grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "job f has 3 snapshots open for writing, its limit (jobs.max_writes)"));
  }
  // The same ranks again: each replaces its own write, the count stays.
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(IsOk(raw_->Begin(Begin("f", 1, {U8Item("w", 4096)}, i % 3), &reserved)));
  }
  std::optional<Memory> m = GetMemory(*raw_);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->in_flight(), 3u * 4096) << "bounded by the cap, not by the flood";
  // Other jobs are not held back by f's flood.
  const ToolRun a3 = RunTool(tool_, {"save", "--steps", "3:3"});
  EXPECT_TRUE(a3.ok()) << a3.Describe();
  // Abandoned, they expire by the write timeout (2 s).
  EXPECT_TRUE(WaitSettled(*raw_, 10s));
  EXPECT_TRUE(IsOk(raw_->Begin(Begin("f", 1, {U8Item("w", 4096)}, 5), &reserved)));
  EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 3));
  EXPECT_TRUE(VerifiesAs(tool_, 2, 2));
}

TEST_F(JobQuotaTest, SessionsAndJobsAreCapped) {
  ASSERT_TRUE(IsOk(raw_->RegisterJob("b", 1, {0})));
  RawSession s1(*raw_, "b", 0);
  RawSession s2(*raw_, "b", 0);
  ASSERT_NE(s1.id(), 0u);
  ASSERT_NE(s2.id(), 0u);
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata(proto::kJobIdMetadata, "b");
    ctx.AddMetadata(proto::kJobSecretMetadata, raw_->Secret("b"));
    ctx.set_deadline(std::chrono::system_clock::now() + Scaled(10s));
    v1::OpenSessionRequest req;
    req.set_job_id("b");
    auto reader = raw_->stub().OpenSession(&ctx, req);
    v1::SessionEvent ev;
    EXPECT_FALSE(reader->Read(&ev));
    EXPECT_TRUE(HasStatus(reader->Finish(), grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "job b holds 2 sessions, its limit (jobs.max_sessions)"));
  }
  // Another job's sessions are its own.
  RawSession a1(*raw_, "a", 0);
  EXPECT_NE(a1.id(), 0u);
  // A closed session makes room.
  s1.Cancel();
  bool reopened = false;
  for (int i = 0; i < 200 && !reopened; ++i) {
    grpc::ClientContext ctx;
    ctx.AddMetadata(proto::kJobIdMetadata, "b");
    ctx.AddMetadata(proto::kJobSecretMetadata, raw_->Secret("b"));
    v1::OpenSessionRequest req;
    req.set_job_id("b");
    auto reader = raw_->stub().OpenSession(&ctx, req);
    v1::SessionEvent ev;
    reopened = reader->Read(&ev);
    ctx.TryCancel();
    (void)reader->Finish();
    if (!reopened) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(reopened);

  // Jobs: a, b, then one more; the fourth is refused.
  ASSERT_TRUE(IsOk(raw_->RegisterJob("c", 1, {0})));
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("d", 1, {0}), grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "the daemon holds 3 jobs, its limit (jobs.max)"));
  ExpectIntact();
}

// ---- hostile input ---------------------------------------------------------------------

TEST_F(JobSecTest, WrappingSizesAreRefused) {
  v1::BeginSnapshotResponse reserved;
  // One item of 2^64-1 bytes; two whose sum wraps to a small number.
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {U8Item("w", UINT64_MAX)}), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "negative dimension -1"));
  v1::ItemSpec huge;
  huge.set_name("blob");
  huge.set_dtype(v1::DTYPE_BYTES);
  huge.set_nbytes(UINT64_MAX);
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {huge}), &reserved),
                        grpc::StatusCode::RESOURCE_EXHAUSTED, "snapshot larger than"));
  v1::ItemSpec half = huge;
  half.set_nbytes((uint64_t{1} << 63) + 4096);
  v1::ItemSpec half2 = half;
  half2.set_name("blob2");
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {half, half2}), &reserved),
                        grpc::StatusCode::RESOURCE_EXHAUSTED, "snapshot larger than"));
  // A shape whose product wraps; dims as int64 beyond 2^63.
  v1::ItemSpec wrap = U8Item("w", 0);
  wrap.clear_shape();
  wrap.add_shape(int64_t{1} << 32);
  wrap.add_shape(int64_t{1} << 32);
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {wrap}), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "shape overflows 64 bits"));
  v1::ItemSpec deep = U8Item("w", 1);
  deep.clear_shape();
  for (int i = 0; i < 65; ++i) deep.add_shape(1);
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {deep}), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "65 dimensions, the limit is 64"));
  // Negative and huge steps, ranks and world sizes.
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", -1, {U8Item("w", 8)}), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "step must be >= 0"));
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", INT64_MIN, {U8Item("w", 8)}), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "step must be >= 0"));
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {U8Item("w", 8)}, INT32_MIN), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "rank -2147483648 is not a local rank"));
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("w", INT32_MIN, {0}),
                        grpc::StatusCode::INVALID_ARGUMENT, "world size must be >= 1"));
  std::vector<int> many(1025);
  for (int i = 0; i < 1025; ++i) many[i] = i;
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("w", 4096, many), grpc::StatusCode::INVALID_ARGUMENT,
                        "1025 local ranks, the limit is 1024"));
  // A step at the top of int64 is a step like any other.
  ASSERT_TRUE(IsOk(raw_->Begin(Begin("a", INT64_MAX, {U8Item("w", 8)}), &reserved)));
  v1::AbortSnapshotRequest abort;
  abort.set_job_id("a");
  abort.set_write_id(reserved.write_id());
  ASSERT_TRUE(IsOk(raw_->Abort(abort)));
  ExpectIntact();
}

TEST_F(JobSecTest, PathLikeNamesNeverBecomePaths) {
  // Job ids are file-name safe or refused.
  for (const std::string& job : {std::string("../a"), std::string("a/b"), std::string("/etc"),
                                 std::string("a\0b", 3), std::string(129, 'j'), std::string()}) {
    EXPECT_TRUE(HasStatus(raw_->RegisterJob(job, 1, {0}), grpc::StatusCode::INVALID_ARGUMENT,
                          "job id"))
        << job;
  }
  // Item names are labels, not paths: "../" and "/" are kept as given and
  // the segment is still one of the daemon's files; NUL and over-long
  // names are refused.
  const auto before = daemon_.ShmFiles();
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(IsOk(raw_->Begin(
      Begin("a", 3, {U8Item("../../../../etc/passwd", 8), U8Item("/dev/sda", 8)}), &reserved)));
  EXPECT_EQ(std::filesystem::path(reserved.segment().path()).parent_path(),
            std::filesystem::path(daemon_.shm_dir()));
  v1::AbortSnapshotRequest abort;
  abort.set_job_id("a");
  abort.set_write_id(reserved.write_id());
  ASSERT_TRUE(IsOk(raw_->Abort(abort)));
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {U8Item(std::string("a\0b", 3), 8)}), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "name contains a NUL byte"));
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 3, {U8Item(std::string(1025, 'n'), 8)}), &reserved),
                        grpc::StatusCode::INVALID_ARGUMENT, "name must be 1 to 1024 bytes"));
  // Restoring by a path-like name finds no such item.
  v1::OpenRestoreRequest restore;
  restore.set_job_id("a");
  restore.set_latest(true);
  restore.add_names("../../etc/passwd");
  v1::OpenRestoreResponse opened;
  EXPECT_TRUE(HasStatus(raw_->OpenRestore(restore, &opened), grpc::StatusCode::NOT_FOUND,
                        "no item '../../etc/passwd' in job a step 2"));
  ExpectIntact();
}

TEST_F(JobSecTest, CallsOutOfOrderAreRefused) {
  // Commit before any Begin.
  v1::CommitSnapshotRequest commit;
  commit.set_job_id("a");
  commit.set_step(3);
  commit.set_write_id(987654321);
  v1::CommitSnapshotResponse committed;
  EXPECT_TRUE(HasStatus(raw_->Commit(commit, &committed), grpc::StatusCode::NOT_FOUND,
                        "no snapshot in progress with write id 987654321"));
  // A step already committed: neither begun again nor committed again.
  v1::BeginSnapshotResponse reserved;
  EXPECT_TRUE(HasStatus(raw_->Begin(Begin("a", 2, {U8Item("w", 8)}), &reserved),
                        grpc::StatusCode::FAILED_PRECONDITION, "is not newer than"));
  // A write committed twice (the second finds it gone).
  ASSERT_TRUE(IsOk(raw_->Begin(Begin("a", 3, {U8Item("w", 8)}), &reserved)));
  {
    MappedSegment seg(reserved.segment().path(), reserved.segment().bytes());
    ASSERT_NE(seg.data(), nullptr);
    std::memset(seg.data() + reserved.offsets(0), 7, 8);
    commit.set_write_id(reserved.write_id());
    commit.add_checksums(ec::Checksum({seg.data() + reserved.offsets(0), 8}));
  }
  ASSERT_TRUE(IsOk(raw_->Commit(commit, &committed)));
  EXPECT_TRUE(HasStatus(raw_->Commit(commit, &committed), grpc::StatusCode::NOT_FOUND,
                        "no snapshot in progress"));
  // Abort after commit.
  v1::AbortSnapshotRequest abort;
  abort.set_job_id("a");
  abort.set_write_id(reserved.write_id());
  EXPECT_TRUE(HasStatus(raw_->Abort(abort), grpc::StatusCode::NOT_FOUND, "no snapshot in progress"));
  // Restore of a step being written: not a complete version.
  ASSERT_TRUE(IsOk(raw_->Begin(Begin("a", 4, {U8Item("w", 8)}), &reserved)));
  v1::OpenRestoreRequest restore;
  restore.set_job_id("a");
  restore.set_step(4);
  v1::OpenRestoreResponse opened;
  EXPECT_TRUE(HasStatus(raw_->OpenRestore(restore, &opened), grpc::StatusCode::NOT_FOUND,
                        "job a has no complete version at step 4"));
  // Close a lease never opened, twice.
  EXPECT_TRUE(HasStatus(raw_->CloseRestore(123456789, true), grpc::StatusCode::NOT_FOUND,
                        "no restore lease 123456789"));
  abort.set_write_id(reserved.write_id());
  ASSERT_TRUE(IsOk(raw_->Abort(abort)));
  // Step 3 is the newest now; 1 retired by retention (retain 2).
  EXPECT_TRUE(VerifiesAs(tool_, 2, 2));
  EXPECT_EQ(LatestStep(*raw_, "a"), 3);
}

TEST_F(JobSecTest, OversizedMetadataIsRefusedAndTheDaemonServesOn) {
  v1::ListVersionsRequest list;
  list.set_job_id("a");
  v1::ListVersionsResponse versions;
  auto ctx = raw_->ContextWith("a", raw_->Secret("a"));
  ctx->AddMetadata("x-padding", std::string(64 << 10, 'p'));
  const grpc::Status s = raw_->stub().ListVersions(ctx.get(), list, &versions);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  ExpectIntact();
}

}  // namespace
}  // namespace holdfast::testing
