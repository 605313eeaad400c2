// Bad input to holdfastd through the real socket: each request gets its exact
// gRPC status code and a message that says what was wrong; afterwards the
// committed versions still verify bit for bit and the daemon serves other
// clients. Also garbage bytes on the socket, a flood of connections past
// grpc.max_connections, and clients that disappear in the middle of a
// snapshot (their reservation goes back to the pool).
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "harness.h"
#include "holdfast/ec/checksum.h"

namespace holdfast::testing {
namespace {

constexpr int kMaxItems = 64;

class DaemonBadInputTest : public ::testing::Test {
 protected:
  DaemonBadInputTest() : daemon_({.memory_budget = "64MiB", .retain = 2, .max_items = kMaxItems}) {}

  void SetUp() override {
    ASSERT_TRUE(daemon_.Start());
    raw_ = std::make_unique<RawClient>(daemon_.socket_path());
    tool_.socket = daemon_.socket_path();
    tool_.items = 3;
    tool_.item_bytes = 100000;  // not a multiple of the item alignment
    const ToolRun run = RunTool(tool_, {"save", "--steps", "1:2"});
    ASSERT_TRUE(run.ok()) << run.Describe();
  }

  // The committed versions are untouched and the daemon serves them.
  void ExpectIntact() {
    ASSERT_TRUE(daemon_.Running()) << "holdfastd died";
    EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 2));
    EXPECT_TRUE(VerifiesAs(tool_, 1, 1));
  }

  v1::BeginSnapshotRequest BeginRequest(int64_t step, std::vector<v1::ItemSpec> items,
                                        const std::string& job = "job", int rank = 0) const {
    v1::BeginSnapshotRequest req;
    req.set_job_id(job);
    req.set_rank(rank);
    req.set_step(step);
    for (v1::ItemSpec& item : items) *req.add_items() = std::move(item);
    return req;
  }

  v1::CommitSnapshotRequest CommitRequest(const v1::BeginSnapshotRequest& begin,
                                          const v1::BeginSnapshotResponse& reserved,
                                          std::vector<uint64_t> checksums) const {
    v1::CommitSnapshotRequest req;
    req.set_job_id(begin.job_id());
    req.set_rank(begin.rank());
    req.set_step(begin.step());
    req.set_write_id(reserved.write_id());
    for (uint64_t c : checksums) req.add_checksums(c);
    return req;
  }

  Daemon daemon_;
  std::unique_ptr<RawClient> raw_;
  ToolOptions tool_;
};

// The same daemon, verifying every commit before recording it.
class DaemonCommitVerifyTest : public DaemonBadInputTest {
 protected:
  DaemonCommitVerifyTest() { daemon_.options().verify = "commit"; }
};

// The same daemon, verifying commits after answering them.
class DaemonBackgroundVerifyTest : public DaemonBadInputTest {
 protected:
  DaemonBackgroundVerifyTest() { daemon_.options().verify = "background"; }
};

TEST_F(DaemonBadInputTest, UnknownJobIsNotFound) {
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item("a", 10)}, "nosuchjob"), &resp),
                        grpc::StatusCode::NOT_FOUND, "job nosuchjob is not registered"));
  v1::OpenRestoreRequest restore;
  restore.set_job_id("nosuchjob");
  restore.set_latest(true);
  v1::OpenRestoreResponse lease;
  EXPECT_TRUE(HasStatus(raw_->OpenRestore(restore, &lease), grpc::StatusCode::NOT_FOUND,
                        "job nosuchjob is not registered"));
  v1::ListVersionsResponse list;
  EXPECT_TRUE(HasStatus(raw_->List("nosuchjob", &list), grpc::StatusCode::NOT_FOUND,
                        "job nosuchjob is not registered"));
  v1::DropVersionsRequest drop;
  drop.set_job_id("nosuchjob");
  drop.set_all(true);
  v1::DropVersionsResponse dropped;
  EXPECT_TRUE(HasStatus(raw_->stub().DropVersions(raw_->Context().get(), drop, &dropped),
                        grpc::StatusCode::NOT_FOUND, "job nosuchjob is not registered"));
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, BadRegistrationIsRefused) {
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("job", 2, {0}), grpc::StatusCode::FAILED_PRECONDITION,
                        "is registered with world size 1"));
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("bad/job", 1, {0}), grpc::StatusCode::INVALID_ARGUMENT,
                        "job id may hold only"));
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("", 1, {0}), grpc::StatusCode::INVALID_ARGUMENT,
                        "job id must be 1 to 128 characters"));
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("other", 2, {2}), grpc::StatusCode::INVALID_ARGUMENT,
                        "local rank 2 is outside the world size 2"));
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("other", 2, {1, 1}), grpc::StatusCode::INVALID_ARGUMENT,
                        "local rank 1 is listed twice"));
  EXPECT_TRUE(HasStatus(raw_->RegisterJob("other", 0, {}), grpc::StatusCode::INVALID_ARGUMENT,
                        "world size must be >= 1"));
  EXPECT_TRUE(IsOk(raw_->RegisterJob("job", 1, {0}))) << "re-registering is idempotent";
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, WrongRankIsInvalidArgument) {
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item("a", 10)}, "job", 1), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT,
                        "rank 1 is not a local rank of job job"));
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item("a", 10)}, "job", -1), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "rank -1 is not a local rank"));
  v1::OpenRestoreRequest restore;
  restore.set_job_id("job");
  restore.set_rank(7);
  restore.set_latest(true);
  v1::OpenRestoreResponse lease;
  EXPECT_TRUE(HasStatus(raw_->OpenRestore(restore, &lease), grpc::StatusCode::INVALID_ARGUMENT,
                        "rank 7 is not a local rank"));
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, DuplicateItemNamesAreInvalidArgument) {
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(
      raw_->Begin(BeginRequest(3, {U8Item("w", 10), U8Item("b", 20), U8Item("w", 30)}), &resp),
      grpc::StatusCode::INVALID_ARGUMENT, "duplicate item name 'w'"));
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item("", 10)}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "name must be 1 to"));
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item(std::string("a\0b", 3), 10)}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "name contains a NUL byte"));
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, NbytesDisagreeingWithDtypeAndShapeAreInvalidArgument) {
  v1::ItemSpec f32;
  f32.set_name("f32");
  f32.set_dtype(v1::DTYPE_FLOAT32);
  f32.add_shape(3);
  f32.add_shape(5);
  f32.set_nbytes(59);
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {f32}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT,
                        "item 'f32': nbytes 59 disagrees with dtype and shape (60 bytes)"));
  v1::ItemSpec bf16;
  bf16.set_name("bf16");
  bf16.set_dtype(v1::DTYPE_BFLOAT16);
  bf16.add_shape(4);
  bf16.set_nbytes(4);
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item("ok", 1), bf16}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT,
                        "item 'bf16': nbytes 4 disagrees with dtype and shape (8 bytes)"));
  v1::ItemSpec blob;
  blob.set_name("blob");
  blob.set_dtype(v1::DTYPE_BYTES);
  blob.add_shape(4);
  blob.set_nbytes(4);
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {blob}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "a DTYPE_BYTES blob has no shape"));
  v1::ItemSpec unknown = U8Item("unknown", 4);
  unknown.set_dtype(static_cast<v1::DType>(99));
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {unknown}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "unknown dtype 99"));
  v1::ItemSpec unspecified = U8Item("unspecified", 4);
  unspecified.set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {unspecified}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "unknown dtype 0"));
  v1::ItemSpec huge;
  huge.set_name("huge");
  huge.set_dtype(v1::DTYPE_FLOAT64);
  huge.add_shape(int64_t{1} << 40);
  huge.add_shape(int64_t{1} << 40);
  huge.set_nbytes(0);
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {huge}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "shape overflows 64 bits"));

  // The right size is accepted (and given back).
  f32.set_nbytes(60);
  ASSERT_TRUE(IsOk(raw_->Begin(BeginRequest(3, {f32}), &resp)));
  v1::AbortSnapshotRequest abort;
  abort.set_job_id("job");
  abort.set_write_id(resp.write_id());
  EXPECT_TRUE(IsOk(raw_->Abort(abort)));
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, NegativeDimensionsAreInvalidArgument) {
  v1::ItemSpec item;
  item.set_name("neg");
  item.set_dtype(v1::DTYPE_INT32);
  item.add_shape(4);
  item.add_shape(-4);
  item.set_nbytes(64);  // |4 x -4| x 4 bytes: must not pass by accident
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {item}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "item 'neg': negative dimension -4"));
  item.clear_shape();
  item.add_shape(-1);
  item.add_shape(-16);
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {item}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "negative dimension -1"));
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, StepNotNewerThanTheLatestIsFailedPrecondition) {
  v1::BeginSnapshotResponse resp;
  for (int64_t step : {2, 1, 0}) {
    EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(step, {U8Item("a", 10)}), &resp),
                          grpc::StatusCode::FAILED_PRECONDITION,
                          "step " + std::to_string(step) +
                              " is not newer than the latest complete step 2 of job job"));
  }
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(-1, {U8Item("a", 10)}), &resp),
                        grpc::StatusCode::INVALID_ARGUMENT, "step must be >= 0, got -1"));
  // The tool too: its commit of an old step is refused, and it says so.
  const ToolRun old = RunTool(tool_, {"save", "--steps", "2:2"});
  EXPECT_TRUE(old.exit.exited && old.exit.code == 1) << old.Describe();
  EXPECT_NE(old.err.find("FAILED_PRECONDITION"), std::string::npos) << old.Describe();

  // A commit that names another step than its write is refused as well.
  const auto begin = BeginRequest(3, {U8Item("a", 10)});
  ASSERT_TRUE(IsOk(raw_->Begin(begin, &resp)));
  auto commit = CommitRequest(begin, resp, {0});
  commit.set_step(2);
  v1::CommitSnapshotResponse committed;
  EXPECT_TRUE(HasStatus(raw_->Commit(commit, &committed), grpc::StatusCode::INVALID_ARGUMENT,
                        "belongs to job job rank 0 step 3"));
  // (A commit-time FAILED_PRECONDITION, the step overtaken while being
  // written, cannot be provoked: a rank has one write at a time, so no newer
  // step of the same rank can complete meanwhile.)
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, SnapshotBeyondTheBudgetIsResourceExhausted) {
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item("big", (64 << 20) + 1)}), &resp),
                        grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "snapshot larger than 67108864 bytes (at item 'big')"));
  EXPECT_TRUE(HasStatus(
      raw_->Begin(BeginRequest(3, {U8Item("a", 40 << 20), U8Item("b", 40 << 20)}), &resp),
      grpc::StatusCode::RESOURCE_EXHAUSTED, "snapshot larger than 67108864 bytes (at item 'b')"));
  v1::ItemSpec blob;
  blob.set_name("blob");
  blob.set_dtype(v1::DTYPE_BYTES);
  blob.set_nbytes(UINT64_MAX);
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, {U8Item("a", 100), blob}), &resp),
                        grpc::StatusCode::RESOURCE_EXHAUSTED, "snapshot larger than"));
  const auto memory = GetMemory(*raw_);
  ASSERT_TRUE(memory.has_value());
  EXPECT_EQ(memory->in_flight(), 0u) << "a refused Begin reserved memory";
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, TooManyItemsIsResourceExhausted) {
  std::vector<v1::ItemSpec> items;
  for (int i = 0; i <= kMaxItems; ++i) items.push_back(U8Item("i" + std::to_string(i), 8));
  v1::BeginSnapshotResponse resp;
  EXPECT_TRUE(HasStatus(raw_->Begin(BeginRequest(3, items), &resp),
                        grpc::StatusCode::RESOURCE_EXHAUSTED, "65 items, the limit is 64"));
  items.pop_back();
  ASSERT_TRUE(IsOk(raw_->Begin(BeginRequest(3, items), &resp))) << "the limit itself is fine";
  EXPECT_EQ(resp.offsets_size(), kMaxItems);
  ExpectIntact();
}

TEST_F(DaemonBadInputTest, RequestLargerThanTheMaxMessageSizeIsRefused) {
  // holdfastd parses at most 256 MiB per request; an item name of 257 MiB
  // makes a request that must be refused before it is parsed.
  std::vector<v1::ItemSpec> items = {U8Item(std::string((257 << 20), 'n'), 8)};
  const auto req = BeginRequest(3, std::move(items));
  v1::BeginSnapshotResponse resp;
  RawClient big(daemon_.socket_path(), Scaled(60s));
  const grpc::Status s = big.Begin(req, &resp);
  EXPECT_TRUE(HasStatus(s, grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"));
  v1::GetStatusResponse status;
  EXPECT_TRUE(IsOk(big.GetStatus(&status))) << "the same channel still works";
  ExpectIntact();
}

TEST_F(DaemonCommitVerifyTest, BytesWrittenPastAnItemAreDataLoss) {
  std::mt19937_64 rng = TestRng();
  // Item 0 ends at 1000; item 1 starts at the next 256-byte boundary, 1024.
  const auto begin = BeginRequest(3, {U8Item("item0", 1000), U8Item("item1", 5000)});
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(IsOk(raw_->Begin(begin, &reserved)));
  ASSERT_EQ(reserved.offsets_size(), 2);
  const uint64_t off0 = reserved.offsets(0);
  const uint64_t off1 = reserved.offsets(1);
  ASSERT_GE(off1, off0 + 1000);
  ASSERT_LE(off1 + 5000, reserved.segment().bytes());
  const std::vector<uint8_t> item0 = RandomBytes(rng, 1000);
  const std::vector<uint8_t> item1 = RandomBytes(rng, 5000);
  {
    MappedSegment seg(reserved.segment().path(), reserved.segment().bytes());
    ASSERT_NE(seg.data(), nullptr);
    std::memcpy(seg.data() + off1, item1.data(), item1.size());
    // Item 0, then 200 bytes more: through the padding into item 1.
    std::memcpy(seg.data() + off0, item0.data(), item0.size());
    const std::vector<uint8_t> spill = RandomBytes(rng, off1 - off0 - 1000 + 200);
    std::memcpy(seg.data() + off0 + 1000, spill.data(), spill.size());
  }
  // Checksums of what the client meant to write.
  const auto commit = CommitRequest(begin, reserved, {ec::Checksum(item0), ec::Checksum(item1)});
  v1::CommitSnapshotResponse committed;
  EXPECT_TRUE(HasStatus(raw_->Commit(commit, &committed), grpc::StatusCode::DATA_LOSS,
                        "item 'item1' (5000 bytes at offset " + std::to_string(off1) +
                            ") does not match its checksum"));
  EXPECT_TRUE(NotServed(tool_, 3));
  ASSERT_TRUE(WaitSettled(*raw_));
  ExpectIntact();
  // The failed write is gone; the same step can be saved properly.
  EXPECT_TRUE(HasStatus(raw_->Commit(commit, &committed), grpc::StatusCode::NOT_FOUND,
                        "no snapshot in progress with write id"));
  const ToolRun run = RunTool(tool_, {"save", "--steps", "3:3"});
  ASSERT_TRUE(run.ok()) << run.Describe();
  EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 3));
  EXPECT_TRUE(VerifiesAs(tool_, 2, 2));
}

TEST_F(DaemonCommitVerifyTest, WrongChecksumIsDataLoss) {
  std::mt19937_64 rng = TestRng();
  const auto begin = BeginRequest(3, {U8Item("a", 4096)});
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(IsOk(raw_->Begin(begin, &reserved)));
  const std::vector<uint8_t> bytes = RandomBytes(rng, 4096);
  {
    MappedSegment seg(reserved.segment().path(), reserved.segment().bytes());
    ASSERT_NE(seg.data(), nullptr);
    std::memcpy(seg.data() + reserved.offsets(0), bytes.data(), bytes.size());
  }
  v1::CommitSnapshotResponse committed;
  EXPECT_TRUE(
      HasStatus(raw_->Commit(CommitRequest(begin, reserved, {ec::Checksum(bytes) ^ 1}), &committed),
                grpc::StatusCode::DATA_LOSS, "item 'a' (4096 bytes at offset"));
  ASSERT_TRUE(WaitSettled(*raw_));
  ExpectIntact();
}

// The commit succeeds; the daemon's check after it finds the mismatch and
// discards the version, and the previous one is served, bit for bit.
TEST_F(DaemonBackgroundVerifyTest, WrongChecksumIsCommittedThenDiscarded) {
  std::mt19937_64 rng = TestRng();
  const auto begin = BeginRequest(3, {U8Item("weights", 3 << 20)});
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(IsOk(raw_->Begin(begin, &reserved)));
  const std::vector<uint8_t> bytes = RandomBytes(rng, 3 << 20);
  {
    MappedSegment seg(reserved.segment().path(), reserved.segment().bytes());
    ASSERT_NE(seg.data(), nullptr);
    std::memcpy(seg.data() + reserved.offsets(0), bytes.data(), bytes.size());
  }
  v1::CommitSnapshotResponse committed;
  ASSERT_TRUE(
      IsOk(raw_->Commit(CommitRequest(begin, reserved, {ec::Checksum(bytes) ^ 1}), &committed)));
  EXPECT_TRUE(committed.version_complete());
  EXPECT_EQ(committed.verify_micros(), 0);

  ASSERT_TRUE(WaitSettled(*raw_));
  EXPECT_EQ(LatestStep(*raw_, "job"), 2);
  // Step 3 counted as one of the two retained versions while it waited for
  // its check (step 2 being verified), so step 1 retired when it committed.
  v1::ListVersionsResponse list;
  ASSERT_TRUE(IsOk(raw_->List("job", &list)));
  std::vector<int64_t> steps;
  for (const v1::VersionInfo& v : list.versions()) steps.push_back(v.step());
  EXPECT_EQ(steps, (std::vector<int64_t>{2}));
  v1::GetStatusResponse status;
  ASSERT_TRUE(IsOk(raw_->GetStatus(&status)));
  EXPECT_EQ(status.damaged_versions(), 1u);
  EXPECT_TRUE(NotServed(tool_, 3));
  ASSERT_TRUE(daemon_.Running()) << "holdfastd died";
  EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 2));
  const std::string log = daemon_.Log();
  EXPECT_NE(log.find("job job step 3 rank 0 failed background verification"), std::string::npos);
  EXPECT_NE(log.find("item 'weights'"), std::string::npos);
  EXPECT_NE(log.find("verify background"), std::string::npos);

  // The step can be saved again, properly, and becomes the newest.
  const ToolRun run = RunTool(tool_, {"save", "--steps", "3:3"});
  ASSERT_TRUE(run.ok()) << run.Describe();
  ASSERT_TRUE(WaitSettled(*raw_));
  EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 3));
  EXPECT_TRUE(VerifiesAs(tool_, 2, 2));
  ASSERT_TRUE(IsOk(raw_->GetStatus(&status)));
  EXPECT_EQ(status.damaged_versions(), 1u);
}

TEST_F(DaemonBadInputTest, WrongChecksumCountIsInvalidArgument) {
  std::mt19937_64 rng = TestRng();
  const auto begin = BeginRequest(3, {U8Item("a", 3000), U8Item("b", 3000)});
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(IsOk(raw_->Begin(begin, &reserved)));
  const std::vector<uint8_t> a = RandomBytes(rng, 3000);
  const std::vector<uint8_t> b = RandomBytes(rng, 3000);
  {
    MappedSegment seg(reserved.segment().path(), reserved.segment().bytes());
    ASSERT_NE(seg.data(), nullptr);
    std::memcpy(seg.data() + reserved.offsets(0), a.data(), a.size());
    std::memcpy(seg.data() + reserved.offsets(1), b.data(), b.size());
  }
  v1::CommitSnapshotResponse committed;
  EXPECT_TRUE(HasStatus(raw_->Commit(CommitRequest(begin, reserved, {ec::Checksum(a)}), &committed),
                        grpc::StatusCode::INVALID_ARGUMENT,
                        "commit carries 1 checksums for 2 items"));
  EXPECT_TRUE(
      HasStatus(raw_->Commit(CommitRequest(begin, reserved, {ec::Checksum(a), ec::Checksum(b), 0}),
                             &committed),
                grpc::StatusCode::INVALID_ARGUMENT, "commit carries 3 checksums for 2 items"));
  EXPECT_TRUE(HasStatus(raw_->Commit(CommitRequest(begin, reserved, {}), &committed),
                        grpc::StatusCode::INVALID_ARGUMENT, "commit carries 0 checksums"));
  ExpectIntact();
  // The refused commits left the write as it was: the right one succeeds.
  ASSERT_TRUE(IsOk(raw_->Commit(CommitRequest(begin, reserved, {ec::Checksum(a), ec::Checksum(b)}),
                                &committed)));
  EXPECT_TRUE(committed.version_complete());
  EXPECT_EQ(LatestStep(*raw_, "job"), 3);
}

TEST_F(DaemonBadInputTest, UnknownWriteIdIsNotFound) {
  v1::CommitSnapshotRequest commit;
  commit.set_job_id("job");
  commit.set_step(3);
  commit.set_write_id(987654321);
  v1::CommitSnapshotResponse committed;
  EXPECT_TRUE(HasStatus(raw_->Commit(commit, &committed), grpc::StatusCode::NOT_FOUND,
                        "no snapshot in progress with write id 987654321"));
  v1::AbortSnapshotRequest abort;
  abort.set_job_id("job");
  abort.set_write_id(987654321);
  EXPECT_TRUE(HasStatus(raw_->Abort(abort), grpc::StatusCode::NOT_FOUND,
                        "no snapshot in progress with write id 987654321"));
  EXPECT_TRUE(HasStatus(raw_->CloseRestore(987654321, true), grpc::StatusCode::NOT_FOUND,
                        "no restore lease 987654321"));

  // A write superseded by a newer Begin of the same rank is gone too.
  const auto first = BeginRequest(3, {U8Item("a", 10)});
  v1::BeginSnapshotResponse r1, r2;
  ASSERT_TRUE(IsOk(raw_->Begin(first, &r1)));
  ASSERT_TRUE(IsOk(raw_->Begin(BeginRequest(4, {U8Item("a", 10)}), &r2)));
  EXPECT_TRUE(HasStatus(raw_->Commit(CommitRequest(first, r1, {0}), &committed),
                        grpc::StatusCode::NOT_FOUND, "(aborted, expired or superseded)"));
  // Another rank's write id is not ours to commit...
  auto foreign = CommitRequest(BeginRequest(4, {U8Item("a", 10)}), r2, {0});
  foreign.set_rank(1);
  EXPECT_TRUE(HasStatus(raw_->Commit(foreign, &committed), grpc::StatusCode::INVALID_ARGUMENT,
                        "belongs to job job rank 0 step 4"));
  // ...nor another job's, and the answer does not name that job
  // (docs/security.md).
  foreign.set_rank(0);
  foreign.set_job_id("other");
  EXPECT_TRUE(HasStatus(raw_->Commit(foreign, &committed), grpc::StatusCode::NOT_FOUND,
                        "no snapshot in progress with write id " +
                            std::to_string(r2.write_id()) + " for job other"));
  ExpectIntact();
}

// Connects to the daemon's socket and sends `bytes`; closes unless `keep`.
int SendRaw(const std::string& socket_path, const std::vector<uint8_t>& bytes, bool keep) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0) << std::strerror(errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << std::strerror(errno);
  // The daemon may hang up before reading everything: that is fine.
  (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  if (keep) return fd;
  close(fd);
  return -1;
}

TEST_F(DaemonBadInputTest, GarbageOnTheSocketLeavesOtherClientsServed) {
  std::mt19937_64 rng = TestRng();
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  std::vector<std::vector<uint8_t>> payloads;
  payloads.push_back(RandomBytes(rng, 1));
  payloads.push_back(RandomBytes(rng, 4096));
  payloads.push_back(RandomBytes(rng, 1 << 20));
  const std::string http1 = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  payloads.emplace_back(http1.begin(), http1.end());
  // A valid preface followed by nonsense frames.
  std::vector<uint8_t> framed(preface.begin(), preface.end());
  const std::vector<uint8_t> junk = RandomBytes(rng, 10000);
  framed.insert(framed.end(), junk.begin(), junk.end());
  payloads.push_back(framed);
  // A preface and a frame header announcing 16 MiB that never comes.
  std::vector<uint8_t> truncated(preface.begin(), preface.end());
  truncated.insert(truncated.end(), {0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01});
  payloads.push_back(truncated);

  // A connection that sends half a preface and then hangs stays open while
  // everything else goes on.
  const std::vector<uint8_t> half(preface.begin(), preface.begin() + 10);
  const int stalled = SendRaw(daemon_.socket_path(), half, /*keep=*/true);
  for (size_t i = 0; i < payloads.size(); ++i) {
    SCOPED_TRACE("payload " + std::to_string(i));
    (void)SendRaw(daemon_.socket_path(), payloads[i], /*keep=*/false);
    v1::GetStatusResponse status;
    EXPECT_TRUE(IsOk(raw_->GetStatus(&status)));
  }
  // Held open: garbage from a client that does not hang up.
  const int held = SendRaw(daemon_.socket_path(), RandomBytes(rng, 65536), /*keep=*/true);
  ExpectIntact();
  const ToolRun run = RunTool(tool_, {"save", "--steps", "3:4"});
  EXPECT_TRUE(run.ok()) << run.Describe();
  EXPECT_TRUE(VerifiesAs(tool_, std::nullopt, 4));
  if (held >= 0) close(held);
  if (stalled >= 0) close(stalled);
  v1::GetStatusResponse status;
  EXPECT_TRUE(IsOk(raw_->GetStatus(&status)));
  EXPECT_TRUE(daemon_.Running());
}

int DescriptorsOf(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// True when the daemon closed this connection within `wait` (it was refused).
bool ClosedByDaemon(int fd, std::chrono::milliseconds wait) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  if (poll(&p, 1, static_cast<int>(wait.count())) <= 0) return false;
  char byte;
  return recv(fd, &byte, 1, MSG_DONTWAIT) <= 0;
}

// grpc.max_connections: a local flood of connections is refused past the
// cap, costs the daemon a bounded number of descriptors, and leaves the
// committed versions and the connected clients served; the slots come back
// when the connections close.
TEST(DaemonLimitsTest, ConnectionsBeyondTheCapAreRefusedUntilSomeClose) {
  constexpr int kCap = 6;
  constexpr int kFlood = 40;
  Daemon daemon({.memory_budget = "64MiB",
                 .retain = 2,
                 .extra_args = {"--grpc-max-connections", std::to_string(kCap)}});
  ASSERT_TRUE(daemon.Start());
  ToolOptions tool;
  tool.socket = daemon.socket_path();
  tool.items = 2;
  tool.item_bytes = 65536;
  ToolRun run = RunTool(tool, {"save", "--steps", "1:2"});
  ASSERT_TRUE(run.ok()) << run.Describe();
  RawClient raw(daemon.socket_path());  // connected before the flood, and stays served
  v1::GetStatusResponse status;
  ASSERT_TRUE(IsOk(raw.GetStatus(&status)));
  const int fds_before = DescriptorsOf(daemon.pid());

  // Connections that send half an HTTP/2 preface and hang.
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  const std::vector<uint8_t> half(preface.begin(), preface.begin() + 10);
  std::vector<int> held;
  int refused = 0;
  for (int i = 0; i < kFlood; ++i) {
    const int fd = SendRaw(daemon.socket_path(), half, /*keep=*/true);
    ASSERT_GE(fd, 0);
    if (ClosedByDaemon(fd, Scaled(300ms))) {
      close(fd);
      ++refused;
    } else {
      held.push_back(fd);
    }
  }
  // The client above holds one slot (the snapshot tool's is gone).
  EXPECT_EQ(static_cast<int>(held.size()), kCap - 1);
  EXPECT_EQ(refused, kFlood - (kCap - 1));
  EXPECT_LE(DescriptorsOf(daemon.pid()), fds_before + 2 * kCap + 4);
  EXPECT_NE(daemon.Log().find("refused"), std::string::npos);
  EXPECT_NE(daemon.Log().find("grpc.max_connections 6"), std::string::npos);

  // Full: the connected client is still served; a new one is not.
  EXPECT_TRUE(IsOk(raw.GetStatus(&status)));
  run = RunTool(tool, {"verify"}, Scaled(30s));
  EXPECT_FALSE(run.ok()) << "a client got past the connection cap";

  // Slots come back as connections close.
  for (const int fd : held) close(fd);
  bool served = false;
  for (auto deadline = std::chrono::steady_clock::now() + Scaled(10s);
       !served && std::chrono::steady_clock::now() < deadline;) {
    served = VerifiesAs(tool, std::nullopt, 2);
    if (!served) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(served);
  EXPECT_TRUE(VerifiesAs(tool, 1, 1));
  run = RunTool(tool, {"save", "--steps", "3:3"});
  EXPECT_TRUE(run.ok()) << run.Describe();
  EXPECT_TRUE(daemon.Running());
}

TEST(DaemonDisconnectTest, SessionCancelledAfterBeginReleasesTheReservation) {
  // Room for two 1 MiB segments: the committed version and one write.
  Daemon daemon({.memory_budget = "2MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  ToolOptions tool;
  tool.socket = daemon.socket_path();
  tool.items = 4;
  tool.item_bytes = 256 << 10;
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:1"}).ok());
  RawClient raw(daemon.socket_path());
  ASSERT_TRUE(IsOk(raw.RegisterJob("other", 1, {0})));

  auto begin = [](const std::string& job, int64_t step, uint64_t session) {
    v1::BeginSnapshotRequest req;
    req.set_job_id(job);
    req.set_step(step);
    req.set_session_id(session);
    *req.add_items() = U8Item("all", 1 << 20);
    return req;
  };
  auto session = std::make_unique<RawSession>(raw, "job", 0);
  ASSERT_NE(session->id(), 0u);
  v1::BeginSnapshotResponse held;
  ASSERT_TRUE(IsOk(raw.Begin(begin("job", 2, session->id()), &held)));
  {
    // Half-written, as by a client that dies while copying.
    MappedSegment seg(held.segment().path(), held.segment().bytes());
    ASSERT_NE(seg.data(), nullptr);
    std::memset(seg.data(), 0xab, 1 << 19);
  }
  // The budget is full: the other job cannot begin.
  v1::BeginSnapshotResponse other;
  EXPECT_TRUE(HasStatus(raw.Begin(begin("other", 1, 0), &other),
                        grpc::StatusCode::RESOURCE_EXHAUSTED, "cannot be evicted"));
  const auto before = GetMemory(raw);
  ASSERT_TRUE(before.has_value());
  EXPECT_EQ(before->in_flight(), uint64_t{1} << 20);

  session->Cancel();  // the client is gone
  ASSERT_TRUE(WaitSettled(raw));
  const auto after = GetMemory(raw);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->pooled, before->pooled + (1 << 20)) << "the reservation went back to the pool";
  v1::CommitSnapshotResponse committed;
  v1::CommitSnapshotRequest commit;
  commit.set_job_id("job");
  commit.set_step(2);
  commit.set_write_id(held.write_id());
  commit.add_checksums(0);
  EXPECT_TRUE(HasStatus(raw.Commit(commit, &committed), grpc::StatusCode::NOT_FOUND,
                        "no snapshot in progress"));
  // Now the other job fits, in the released segment.
  ASSERT_TRUE(IsOk(raw.Begin(begin("other", 1, 0), &other)));
  EXPECT_EQ(other.segment().path(), held.segment().path());
  EXPECT_TRUE(NotServed(tool, 2));
  EXPECT_TRUE(VerifiesAs(tool, std::nullopt, 1));
  // A Begin naming a session that is closed is refused.
  v1::BeginSnapshotResponse stale;
  EXPECT_TRUE(HasStatus(raw.Begin(begin("job", 2, session->id()), &stale),
                        grpc::StatusCode::NOT_FOUND, "is not open"));
}

TEST(DaemonDisconnectTest, WriterKilledBetweenBeginAndCommitReleasesTheReservation) {
  // Big items so that the copy between Begin and Commit takes a while, and a
  // budget with room for the committed version plus one write only.
  constexpr uint64_t kItemBytes = 16 << 20;
  constexpr uint64_t kSegment = 4 * kItemBytes;
  Daemon daemon({.memory_budget = "128MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  ToolOptions tool;
  tool.socket = daemon.socket_path();
  tool.items = 4;
  tool.item_bytes = kItemBytes;
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:1"}).ok());
  RawClient raw(daemon.socket_path());

  // Kill the writer as soon as its reservation shows; if the kill comes too
  // late (the step committed), try again with the next step.
  bool caught = false;
  int64_t latest = 1;
  for (int attempt = 0; attempt < 5 && !caught; ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    ToolProcess writer(
        tool, {"save", "--steps", std::to_string(latest + 1) + ":" + std::to_string(latest + 1)});
    const auto deadline = std::chrono::steady_clock::now() + Scaled(30s);
    bool reserved = false;
    while (std::chrono::steady_clock::now() < deadline && writer.process().Running()) {
      const auto m = GetMemory(raw);
      ASSERT_TRUE(m.has_value());
      if (m->used > m->pooled + m->versions) {
        reserved = true;
        break;
      }
    }
    const ToolRun run = writer.Kill();
    ASSERT_TRUE(WaitSettled(raw));
    const auto served = LatestStep(raw, "job");
    ASSERT_TRUE(served.has_value());
    if (!reserved || !run.exit.killed_by(SIGKILL) || *served == latest + 1) {
      latest = *served;  // too late: it committed
      continue;
    }
    caught = true;
    EXPECT_TRUE(run.committed.empty()) << run.Describe();
    EXPECT_EQ(*served, latest);
    const auto m = GetMemory(raw);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->pooled, kSegment) << "the dead writer's segment went back to the pool";
    EXPECT_TRUE(NotServed(tool, latest + 1));
    EXPECT_TRUE(VerifiesAs(tool, std::nullopt, latest));
    // The room is back: another job's snapshot of the same size fits.
    ToolOptions other = tool;
    other.job = "other";
    const ToolRun run2 = RunTool(other, {"save", "--steps", "1:1"});
    EXPECT_TRUE(run2.ok()) << run2.Describe();
  }
  EXPECT_TRUE(caught) << "never killed the writer between Begin and Commit";
}

TEST(DaemonDisconnectTest, ReservationWithoutASessionExpires) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2, .write_timeout_s = 1});
  ASSERT_TRUE(daemon.Start());
  RawClient raw(daemon.socket_path());
  ASSERT_TRUE(IsOk(raw.RegisterJob("job", 1, {0})));
  v1::BeginSnapshotRequest req;
  req.set_job_id("job");
  req.set_step(1);
  *req.add_items() = U8Item("a", 100000);
  v1::BeginSnapshotResponse reserved;
  ASSERT_TRUE(IsOk(raw.Begin(req, &reserved)));  // session 0: only the timeout ends it
  const auto held = GetMemory(raw);
  ASSERT_TRUE(held.has_value());
  EXPECT_GT(held->in_flight(), 0u);
  ASSERT_TRUE(WaitSettled(raw, 10s)) << "the write did not expire";
  v1::CommitSnapshotRequest commit;
  commit.set_job_id("job");
  commit.set_step(1);
  commit.set_write_id(reserved.write_id());
  commit.add_checksums(0);
  v1::CommitSnapshotResponse committed;
  EXPECT_TRUE(HasStatus(raw.Commit(commit, &committed), grpc::StatusCode::NOT_FOUND,
                        "(aborted, expired or superseded)"));
  EXPECT_NE(daemon.Log().find("write timeout"), std::string::npos);
}

TEST(DaemonDisconnectTest, ReaderThatDiesReleasesItsLease) {
  Daemon daemon({.memory_budget = "64MiB", .retain = 2});
  ASSERT_TRUE(daemon.Start());
  ToolOptions tool;
  tool.socket = daemon.socket_path();
  ASSERT_TRUE(RunTool(tool, {"save", "--steps", "1:1"}).ok());
  RawClient raw(daemon.socket_path());
  // A version still being verified would go back to the pool when dropped.
  ASSERT_TRUE(WaitSettled(raw));
  auto session = std::make_unique<RawSession>(raw, "job", 0);
  v1::OpenRestoreRequest open;
  open.set_job_id("job");
  open.set_latest(true);
  open.set_session_id(session->id());
  v1::OpenRestoreResponse lease;
  ASSERT_TRUE(IsOk(raw.OpenRestore(open, &lease)));
  EXPECT_EQ(lease.step(), 1);

  // A leased version cannot be dropped...
  v1::DropVersionsRequest drop;
  drop.set_job_id("job");
  drop.set_all(true);
  v1::DropVersionsResponse dropped;
  EXPECT_TRUE(HasStatus(raw.stub().DropVersions(raw.ContextFor("job").get(), drop, &dropped),
                        grpc::StatusCode::FAILED_PRECONDITION, "is being restored (1 leases)"));
  // ...until its reader is gone.
  session->Cancel();
  const auto deadline = std::chrono::steady_clock::now() + Scaled(10s);
  grpc::Status s;
  do {
    dropped.Clear();
    s = raw.stub().DropVersions(raw.ContextFor("job").get(), drop, &dropped);
  } while (!s.ok() && std::chrono::steady_clock::now() < deadline);
  ASSERT_TRUE(IsOk(s)) << "the dead reader's lease was not released";
  ASSERT_EQ(dropped.dropped_steps_size(), 1);
  EXPECT_EQ(dropped.dropped_steps(0), 1);
  EXPECT_TRUE(NotServed(tool, 1));
  EXPECT_TRUE(daemon.SegmentFiles().empty()) << "a drop gives the memory back";
}

}  // namespace
}  // namespace holdfast::testing
