// Test harness for holdfastd integration and fault-injection tests: real
// daemon processes on private sockets, data directories and shared-memory
// directories; the snapshot tool as a writer/verifier process; raw gRPC
// requests for inputs the client library would never send.
//
//   Daemon ----spawns----> holdfastd  (socket, data dir, /dev/shm/hf-test-<pid>-<n>/)
//     | Start/Stop/Kill/WaitExit, restart on the same dirs, log to a file
//     | (printed when the test fails), everything removed by the destructor
//   RunTool / ToolProcess --spawns--> holdfast_snapshot_tool (stdout/stderr to files)
//   RawClient: a Snapshot stub on its own channel, every call with a deadline
//
// Randomness: TestSeed() is HOLDFAST_TEST_SEED (decimal or 0x-hex) or a fixed
// default; tests print it (and a listener prints it again next to a failure).
// Trial counts come from HOLDFAST_TRIALS when set. HOLDFAST_TEST_PRINT_LOGS=1
// prints every daemon's log, not only those of failed tests.
//
// Processes: children are started with fork/exec and die with the test
// process (PR_SET_PDEATHSIG), so a test killed by ctest's timeout leaves no
// daemon behind. Spawn them from the test's main thread only: the death
// signal follows the thread that forked.
//
// Thread-safety: none of these classes is thread-safe; use them from the
// test's main thread.
#ifndef HOLDFAST_TESTS_SMP_HARNESS_H_
#define HOLDFAST_TESTS_SMP_HARNESS_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "holdfast/testing/random_bytes.h"
#include "holdfast/v1/admin.grpc.pb.h"
#include "holdfast/v1/snapshot.grpc.pb.h"

namespace holdfast::testing {

using namespace std::chrono_literals;

// True in the ASan/UBSan build (HOLDFAST_SANITIZE=ON): every process of a
// test (daemon, tools, the test) runs several times slower there.
#ifdef HOLDFAST_TEST_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// True when holdfastd was built with named failpoints (HOLDFAST_FAILPOINTS).
#if HOLDFAST_TEST_FAILPOINTS
inline constexpr bool kFailpoints = true;
#else
inline constexpr bool kFailpoints = false;
#endif

// HOLDFAST_TEST_SEED or the default, parsed once; aborts on a malformed value.
uint64_t TestSeed();

// A generator seeded from TestSeed() and the running test's name, so a
// test's draws do not depend on which other tests ran. Prints the seed.
std::mt19937_64 TestRng();

// HOLDFAST_TRIALS when set (> 0), else `ci_default`.
int Trials(int ci_default);

// Deadlines scale with the sanitizers' slowdown.
std::chrono::milliseconds Scaled(std::chrono::milliseconds base);

// `count` different TCP ports on 127.0.0.1 that were free a moment ago,
// drawn at random below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), so no outgoing connection of a test running
// alongside can take one before the daemon binds it. All are held bound until
// the set is complete, so no port appears twice.
std::vector<int> FreePorts(int count);

// ---- child processes ---------------------------------------------------------

// How a child ended.
struct ExitInfo {
  bool exited = false;  // normal exit: `code` is valid
  int code = -1;
  int signal = 0;  // killed by this signal
  bool killed_by(int sig) const { return !exited && signal == sig; }
  std::string ToString() const;
};

// A child process started with fork/exec, stdout and stderr to files.
// Move-only; the destructor SIGKILLs and reaps it if it still runs.
class ChildProcess {
 public:
  // `env` entries ("NAME=value") are added to (or override) this process's
  // environment. Fails the current test and returns an invalid child when the
  // executable cannot be started.
  static ChildProcess Spawn(const std::vector<std::string>& argv,
                            const std::map<std::string, std::string>& env,
                            const std::string& stdout_path, const std::string& stderr_path);

  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool valid() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // False once it has been reaped (or never started).
  bool Running();
  void Signal(int sig);
  // Waits up to `timeout` for the child to end; nullopt if it still runs.
  std::optional<ExitInfo> Wait(std::chrono::milliseconds timeout);
  // SIGKILL and reap.
  ExitInfo Kill();

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  std::optional<ExitInfo> exit_;
};

std::string ReadFile(const std::string& path);

// ---- holdfastd ---------------------------------------------------------------------

struct DaemonOptions {
  std::string memory_budget = "256MiB";
  int retain = 2;
  // --spares: 0 here, since most tests count segment files and pool bytes
  // step by step; DaemonSparesTest and every Python and chaos test run the
  // daemon's default (2).
  int spares = 0;
  std::optional<uint64_t> max_items = std::nullopt;
  std::optional<int> write_timeout_s = std::nullopt;
  // --verify: commit, background or off; unset: the daemon's default.
  std::optional<std::string> verify = std::nullopt;
  std::string log_level = "debug";
  std::string node_id = "test";
  // Appended to holdfastd's command line (e.g. {"--cluster", FILE}).
  std::vector<std::string> extra_args = {};
  // Extra environment, e.g. {"HOLDFAST_FAILPOINTS", "commit.after_verify=kill"}.
  std::map<std::string, std::string> env = {};
};

// One holdfastd with private directories:
//   <tmp>/hf-test-<pid>-<n>/{sock,data/,daemon.log}  and  /dev/shm/hf-test-<pid>-<n>/
// The directories survive Stop/Kill so that Start() restarts the daemon on
// the same catalog and segments. The log accumulates over restarts and is
// printed when the test has failed by the time the Daemon is destroyed.
class Daemon {
 public:
  explicit Daemon(DaemonOptions options = {});
  ~Daemon();  // SIGKILL, print the log on failure, remove every directory
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts holdfastd and waits until GetStatus answers.
  ::testing::AssertionResult Start();
  // SIGTERM and wait for a clean exit (exit code 0).
  ::testing::AssertionResult Stop();
  // SIGKILL and reap.
  void Kill();
  // Waits for the daemon to end on its own (e.g. a failpoint's SIGKILL).
  std::optional<ExitInfo> WaitExit(std::chrono::milliseconds timeout);
  bool Running();
  // Removes the shared-memory and data directories of a stopped daemon: the
  // next Start() is a replacement node that lost its RAM and catalog.
  void WipeMemory();
  // Stop (or Kill when `hard`) then Start, on the same directories.
  ::testing::AssertionResult Restart(bool hard = false);

  // Options apply from the next Start().
  DaemonOptions& options() { return options_; }

  const std::string& socket_path() const { return socket_path_; }
  const std::string& shm_dir() const { return shm_dir_; }
  const std::string& shm_prefix() const { return shm_prefix_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return process_.pid(); }
  const std::string& root() const { return root_; }

  // Segment files (with this daemon's prefix) in the shm directory.
  std::vector<std::string> SegmentFiles() const;
  // Every file in the shm directory, prefix or not.
  std::vector<std::string> ShmFiles() const;
  std::string Log() const { return ReadFile(log_path_); }

 private:
  DaemonOptions options_;
  std::string root_;  // socket, data dir, log
  std::string socket_path_;
  std::string data_dir_;
  std::string shm_dir_;
  std::string shm_prefix_;
  std::string log_path_;
  ChildProcess process_;
};

// ---- raw gRPC -----------------------------------------------------------------------

// A Snapshot stub on its own channel to a daemon socket. Every call carries a
// deadline and, like the client library, the job's credentials: the secret
// from the client library's store (holdfast/client/job_secret.h), which
// RegisterJob fills as the library does. GetStatus asks the Admin service
// (every job: the operator's view). Not thread-safe.
class RawClient {
 public:
  explicit RawClient(const std::string& socket_path, std::chrono::milliseconds timeout = 20s);

  v1::Snapshot::Stub& stub() { return *stub_; }
  // A context with this client's deadline and the credentials of the job it
  // registered last (none before).
  std::unique_ptr<grpc::ClientContext> Context() const;
  // With the credentials of `job` (its stored secret; none if it has none).
  std::unique_ptr<grpc::ClientContext> ContextFor(const std::string& job) const;
  // With exactly these metadata values (empty: left out).
  std::unique_ptr<grpc::ClientContext> ContextWith(const std::string& job,
                                                   const std::string& secret) const;
  // The secret this client carries for `job` ("" when none).
  std::string Secret(const std::string& job) const;

  grpc::Status RegisterJob(const std::string& job, int world_size, const std::vector<int>& ranks);
  grpc::Status Begin(const v1::BeginSnapshotRequest& req, v1::BeginSnapshotResponse* resp);
  grpc::Status Commit(const v1::CommitSnapshotRequest& req, v1::CommitSnapshotResponse* resp);
  grpc::Status Abort(const v1::AbortSnapshotRequest& req);
  grpc::Status List(const std::string& job, v1::ListVersionsResponse* resp);
  grpc::Status OpenRestore(const v1::OpenRestoreRequest& req, v1::OpenRestoreResponse* resp);
  grpc::Status CloseRestore(uint64_t lease_id, bool verified);
  grpc::Status GetStatus(v1::GetStatusResponse* resp);

 private:
  std::chrono::milliseconds timeout_;
  std::string endpoint_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Snapshot::Stub> stub_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::string last_job_;
  std::map<uint64_t, std::string> lease_jobs_;
};

// An OpenSession stream held open until Cancel() (or destruction), as a
// client process would; cancelling it is the client dying.
class RawSession {
 public:
  RawSession(RawClient& client, const std::string& job, int rank);
  ~RawSession();
  RawSession(const RawSession&) = delete;
  RawSession& operator=(const RawSession&) = delete;

  // 0 when the daemon did not open the session.
  uint64_t id() const { return id_; }
  void Cancel();

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::SessionEvent>> reader_;
  uint64_t id_ = 0;
  bool cancelled_ = false;
};

// `code` and a message containing `substring` (case-sensitive).
::testing::AssertionResult HasStatus(const grpc::Status& status, grpc::StatusCode code,
                                     std::string_view substring);
::testing::AssertionResult IsOk(const grpc::Status& status);

// A DTYPE_UINT8 item of shape {nbytes}.
v1::ItemSpec U8Item(const std::string& name, uint64_t nbytes);

// A writable MAP_SHARED mapping of a daemon segment, as a client makes it.
class MappedSegment {
 public:
  // Fails the current test (and stays empty) when the file cannot be mapped.
  MappedSegment(const std::string& path, uint64_t bytes);
  ~MappedSegment();
  MappedSegment(const MappedSegment&) = delete;
  MappedSegment& operator=(const MappedSegment&) = delete;
  uint8_t* data() const { return data_; }
  uint64_t bytes() const { return bytes_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t bytes_ = 0;
};

// The memory accounting of a daemon, from GetStatus.
struct Memory {
  uint64_t used = 0;
  uint64_t pooled = 0;
  uint64_t versions = 0;  // bytes of every job's versions (complete or partial)
  // Committed rank parts whose background verification has not finished.
  uint32_t background_verifications = 0;
  // Segments reserved for snapshots being written (or verified before their
  // commit), and those of retired versions still being verified.
  uint64_t in_flight() const { return used - pooled - versions; }
};
std::optional<Memory> GetMemory(RawClient& client);
// Waits until no snapshot is being written or verified, before or after its
// commit (a killed writer's reservation has been released, every background
// check has ended and its retention has run); false at the deadline.
::testing::AssertionResult WaitSettled(RawClient& client, std::chrono::milliseconds timeout = 10s);
// The newest complete step of `job` from GetStatus (-1: none), nullopt on error.
std::optional<int64_t> LatestStep(RawClient& client, const std::string& job);

// ---- holdfast_snapshot_tool --------------------------------------------------------

struct ToolOptions {
  std::string socket;
  std::string job = "job";
  int rank = 0;
  int world_size = 1;
  std::vector<int> local_ranks;  // empty: just `rank`
  int items = 4;
  uint64_t item_bytes = 256 << 10;
  uint64_t seed = 1;
};

// Output of one tool run.
struct ToolRun {
  ExitInfo exit;
  std::string out;
  std::string err;
  // Steps of the "committed <step>" lines, in order.
  std::vector<int64_t> committed;
  // The step of a "verified <step>" line.
  std::optional<int64_t> verified;
  bool ok() const { return exit.exited && exit.code == 0; }
  std::string Describe() const;  // exit, stdout, stderr for failure messages
};

// The tool's command line: common options, then `command` (e.g. {"save",
// "--steps", "1:3"}).
std::vector<std::string> ToolArgv(const ToolOptions& options,
                                  const std::vector<std::string>& command);

// A tool running in the background; its output goes to files.
class ToolProcess {
 public:
  ToolProcess(const ToolOptions& options, const std::vector<std::string>& command);
  ~ToolProcess();
  ToolProcess(const ToolProcess&) = delete;
  ToolProcess& operator=(const ToolProcess&) = delete;

  ChildProcess& process() { return process_; }
  // Output so far (the tool flushes after every line).
  std::string Stdout() const { return ReadFile(out_path_); }
  // Waits until the output contains `text`; false at the deadline (scaled)
  // or when the tool ended without printing it.
  bool WaitForOutput(std::string_view text, std::chrono::milliseconds timeout = 30s);
  // SIGKILL, reap, collect the output.
  ToolRun Kill();
  // Waits for the exit and collects the output; a run still going at the
  // deadline is killed (and reported as killed by SIGKILL).
  ToolRun Wait(std::chrono::milliseconds timeout = 120s);

 private:
  ToolRun Collect(ExitInfo exit) const;
  std::string dir_;
  std::string out_path_;
  std::string err_path_;
  ChildProcess process_;
};

// Runs the tool to completion.
ToolRun RunTool(const ToolOptions& options, const std::vector<std::string>& command,
                std::chrono::milliseconds timeout = 120s);

// `verify` (of `step`, or the newest): the tool restores and compares every
// byte with what `save` wrote.
ToolRun Verify(const ToolOptions& options, std::optional<int64_t> step = std::nullopt);

// Asserts that `verify` (of `step`, or the newest) passes bit for bit and
// returned `expect_step`.
::testing::AssertionResult VerifiesAs(const ToolOptions& options, std::optional<int64_t> step,
                                      int64_t expect_step);
// Asserts that `verify --step step` finds no such complete version (the tool
// exits 1 with NOT_FOUND), i.e. that the step is not served.
::testing::AssertionResult NotServed(const ToolOptions& options, int64_t step);

}  // namespace holdfast::testing

#endif  // HOLDFAST_TESTS_SMP_HARNESS_H_
