#include "harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <utility>

#include "holdfast/client/job_secret.h"
#include "holdfast/proto/job_credentials.h"
#include "holdfast/testing/seed.h"

extern char** environ;

namespace holdfast::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string TempRoot() {
  const char* tmp = std::getenv("TMPDIR");
  return (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
}

// A number unique within this process.
int NextId() {
  static int counter = 0;
  return counter++;
}

// A fresh name for this process: "hf-test-<pid>-<kind><id>".
std::string UniqueName(const char* kind, int id) {
  return std::string("hf-test-") + std::to_string(getpid()) + "-" + kind + std::to_string(id);
}

void RemoveAll(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  fs::remove_all(path, ec);
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK:
      return "OK";
    case grpc::CANCELLED:
      return "CANCELLED";
    case grpc::UNKNOWN:
      return "UNKNOWN";
    case grpc::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::ABORTED:
      return "ABORTED";
    case grpc::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::INTERNAL:
      return "INTERNAL";
    case grpc::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "?";
  }
}

ExitInfo FromWaitStatus(int status) {
  ExitInfo info;
  if (WIFEXITED(status)) {
    info.exited = true;
    info.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    info.signal = WTERMSIG(status);
  }
  return info;
}

// The last `max_bytes` of `text`, cut at a line start.
std::string Tail(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t from = text.size() - max_bytes;
  const size_t nl = text.find('\n', from);
  if (nl != std::string::npos) from = nl + 1;
  return "[... " + std::to_string(from) + " bytes cut ...]\n" + text.substr(from);
}

}  // namespace

uint64_t TestSeed() { return SuiteSeed(); }

std::vector<int> FreePorts(int count) {
  int ephemeral_low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> ephemeral_low;
  const int low = 10000;
  const int high = std::max(low + 1000, ephemeral_low);  // [low, high)
  std::random_device entropy;
  std::mt19937 rng(entropy());
  std::uniform_int_distribution<int> draw(low, high - 1);
  std::vector<int> fds;
  std::vector<int> ports;
  for (int attempt = 0; static_cast<int>(ports.size()) < count && attempt < 100 * count; ++attempt) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(draw(rng)));
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      fds.push_back(fd);
      ports.push_back(ntohs(addr.sin_port));
    } else {
      close(fd);
    }
  }
  for (const int fd : fds) close(fd);
  if (static_cast<int>(ports.size()) < count) {
    std::cerr << "FreePorts: found " << ports.size() << " of " << count << " free ports\n";
    std::abort();
  }
  return ports;
}

std::mt19937_64 TestRng() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name =
      info == nullptr ? std::string() : std::string(info->test_suite_name()) + "." + info->name();
  uint64_t h = 1469598103934665603ULL;  // FNV-1a of the test name
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  std::printf("[   SEED   ] %s: HOLDFAST_TEST_SEED=0x%llx\n", name.c_str(),
              static_cast<unsigned long long>(TestSeed()));
  std::fflush(stdout);
  return std::mt19937_64(TestSeed() ^ h);
}

int Trials(int ci_default) {
  const char* env = std::getenv("HOLDFAST_TRIALS");
  if (env == nullptr || *env == '\0') return ci_default;
  const int n = std::atoi(env);
  return n > 0 ? n : ci_default;
}

std::chrono::milliseconds Scaled(std::chrono::milliseconds base) {
  return kSanitized ? base * 4 : base;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- ChildProcess ------------------------------------------------------------------

std::string ExitInfo::ToString() const {
  if (exited) return "exit code " + std::to_string(code);
  if (signal != 0) {
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "still running";
}

ChildProcess ChildProcess::Spawn(const std::vector<std::string>& argv,
                                 const std::map<std::string, std::string>& env,
                                 const std::string& stdout_path, const std::string& stderr_path) {
  // Everything the child needs is prepared before fork(): between fork and
  // exec it may call only async-signal-safe functions (gRPC threads run).
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    const std::string name(entry.substr(0, entry.find('=')));
    if (!env.count(name)) env_strings.emplace_back(entry);
  }
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (const std::string& e : env_strings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  const int out = open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int report[2] = {-1, -1};  // exec failure: the child writes its errno here
  if (out < 0 || err < 0 || pipe2(report, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "cannot set up the output of " << argv[0] << ": " << std::strerror(errno);
    if (out >= 0) close(out);
    if (err >= 0) close(err);
    return {};
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Die with the test process, even when it is killed by a timeout.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    execve(args[0], args.data(), envp.data());
    const int e = errno;
    (void)!write(report[1], &e, sizeof(e));
    _exit(127);
  }
  close(out);
  close(err);
  close(report[1]);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    close(report[0]);
    return {};
  }
  int exec_errno = 0;
  ssize_t n;
  do {
    n = read(report[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  ChildProcess child(pid);
  if (n > 0) {
    ADD_FAILURE() << "cannot execute " << argv[0] << ": " << std::strerror(exec_errno);
    child.Kill();
    return {};
  }
  return child;
}

ChildProcess::~ChildProcess() {
  if (valid() && !exit_) Kill();
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), exit_(std::exchange(other.exit_, std::nullopt)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (valid() && !exit_) Kill();
    pid_ = std::exchange(other.pid_, -1);
    exit_ = std::exchange(other.exit_, std::nullopt);
  }
  return *this;
}

bool ChildProcess::Running() {
  if (!valid() || exit_) return false;
  return !Wait(0ms).has_value();
}

void ChildProcess::Signal(int sig) {
  if (valid() && !exit_) kill(pid_, sig);
}

std::optional<ExitInfo> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (!valid()) return ExitInfo{};
  if (exit_) return exit_;
  const auto deadline = Clock::now() + timeout;
  auto nap = 1ms;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_ = FromWaitStatus(status);
      return exit_;
    }
    if (r < 0 && errno != EINTR) {
      ADD_FAILURE() << "waitpid " << pid_ << ": " << std::strerror(errno);
      exit_ = ExitInfo{};
      return exit_;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::milliseconds>(nap * 2, 20ms);
  }
}

ExitInfo ChildProcess::Kill() {
  if (!valid()) return {};
  if (exit_) return *exit_;
  kill(pid_, SIGKILL);
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  exit_ = r == pid_ ? FromWaitStatus(status) : ExitInfo{};
  return *exit_;
}

// ---- Daemon ----------------------------------------------------------------------

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {
  const int id = NextId();
  const std::string name = UniqueName("d", id);
  root_ = TempRoot() + "/" + name;
  shm_dir_ = "/dev/shm/" + name;
  RemoveAll(root_);
  RemoveAll(shm_dir_);
  std::error_code ec;
  fs::create_directories(root_, ec);
  EXPECT_FALSE(ec) << "cannot create " << root_ << ": " << ec.message();
  fs::create_directories(shm_dir_, ec);
  EXPECT_FALSE(ec) << "cannot create " << shm_dir_ << ": " << ec.message();
  socket_path_ = root_ + "/sock";
  data_dir_ = root_ + "/data";
  log_path_ = root_ + "/daemon.log";
  // [A-Za-z0-9_]: unique per daemon, although each has its own directory.
  shm_prefix_ = "hft_" + std::to_string(getpid()) + "_" + std::to_string(id);
}

Daemon::~Daemon() {
  if (process_.valid()) process_.Kill();
  const char* print = std::getenv("HOLDFAST_TEST_PRINT_LOGS");
  if (::testing::Test::HasFailure() || (print != nullptr && *print == '1')) {
    std::cout << "---- holdfastd log (" << log_path_ << ") ----\n"
              << Tail(Log(), 64 << 10) << "---- end of holdfastd log ----" << std::endl;
  }
  RemoveAll(root_);
  RemoveAll(shm_dir_);
}

void Daemon::WipeMemory() {
  EXPECT_FALSE(process_.Running()) << "wipe a stopped daemon";
  RemoveAll(shm_dir_);
  RemoveAll(data_dir_);
  std::error_code ec;
  fs::create_directories(shm_dir_, ec);
  EXPECT_FALSE(ec) << "cannot create " << shm_dir_ << ": " << ec.message();
  std::ofstream log(log_path_, std::ios::app);
  log << "==== harness: shared memory and data directory wiped (the node's RAM is lost) ====\n";
}

::testing::AssertionResult Daemon::Start() {
  if (process_.Running()) return ::testing::AssertionFailure() << "holdfastd already runs";
  std::vector<std::string> argv = {HOLDFAST_HOLDFASTD_PATH,
                                   "--node-id",
                                   options_.node_id,
                                   "--socket",
                                   socket_path_,
                                   "--data-dir",
                                   data_dir_,
                                   "--shm-dir",
                                   shm_dir_,
                                   "--shm-prefix",
                                   shm_prefix_,
                                   "--memory-budget",
                                   options_.memory_budget,
                                   "--retain",
                                   std::to_string(options_.retain),
                                   "--spares",
                                   std::to_string(options_.spares),
                                   "--log-level",
                                   options_.log_level};
  if (options_.max_items) {
    argv.insert(argv.end(), {"--max-items", std::to_string(*options_.max_items)});
  }
  if (options_.write_timeout_s) {
    argv.insert(argv.end(), {"--write-timeout-s", std::to_string(*options_.write_timeout_s)});
  }
  if (options_.verify) argv.insert(argv.end(), {"--verify", *options_.verify});
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  {
    std::ofstream log(log_path_, std::ios::app);
    log << "==== harness: starting holdfastd";
    for (const auto& [k, v] : options_.env) log << " " << k << "=" << v;
    log << " ====\n";
  }
  process_ = ChildProcess::Spawn(argv, options_.env, log_path_, log_path_);
  if (!process_.valid()) return ::testing::AssertionFailure() << "cannot start holdfastd";

  const auto deadline = Clock::now() + Scaled(20s);
  grpc::Status last;
  while (Clock::now() < deadline) {
    if (auto exit = process_.Wait(0ms)) {
      return ::testing::AssertionFailure()
             << "holdfastd ended during startup (" << exit->ToString() << "); log:\n"
             << Tail(Log(), 8 << 10);
    }
    // A fresh channel per attempt: a channel that failed to connect backs off
    // for up to a second before trying again.
    RawClient client(socket_path_, 500ms);
    v1::GetStatusResponse status;
    last = client.GetStatus(&status);
    if (last.ok()) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(10ms);
  }
  return ::testing::AssertionFailure()
         << "holdfastd did not answer GetStatus on " << socket_path_
         << " in time: " << CodeName(last.error_code()) << " " << last.error_message();
}

::testing::AssertionResult Daemon::Stop() {
  if (!process_.valid()) return ::testing::AssertionFailure() << "holdfastd never started";
  process_.Signal(SIGTERM);
  auto exit = process_.Wait(Scaled(15s));
  if (!exit) {
    process_.Kill();
    return ::testing::AssertionFailure() << "holdfastd did not stop on SIGTERM in time";
  }
  if (!exit->exited || exit->code != 0) {
    return ::testing::AssertionFailure() << "holdfastd stopped with " << exit->ToString();
  }
  return ::testing::AssertionSuccess();
}

void Daemon::Kill() { process_.Kill(); }

std::optional<ExitInfo> Daemon::WaitExit(std::chrono::milliseconds timeout) {
  return process_.Wait(timeout);
}

bool Daemon::Running() { return process_.Running(); }

::testing::AssertionResult Daemon::Restart(bool hard) {
  if (hard) {
    Kill();
  } else if (process_.Running()) {
    if (auto stopped = Stop(); !stopped) return stopped;
  }
  return Start();
}

std::vector<std::string> Daemon::SegmentFiles() const {
  std::vector<std::string> out;
  for (const std::string& name : ShmFiles()) {
    if (name.rfind(shm_prefix_ + "-", 0) == 0) out.push_back(name);
  }
  return out;
}

std::vector<std::string> Daemon::ShmFiles() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(shm_dir_, ec)) {
    out.push_back(entry.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- raw gRPC ------------------------------------------------------------------------

namespace {

// Job secrets of this test process (and of the tools it starts) go to a
// private directory, removed at exit, so that tests leave nothing behind in
// $HOME and runs do not see each other's secrets.
struct SecretDir {
  std::string path;
  SecretDir() {
    if (std::getenv("HOLDFAST_SECRET_DIR") != nullptr) return;
    std::string tmpl = (std::filesystem::temp_directory_path() / "hf-secrets-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return;
    path = tmpl;
    setenv("HOLDFAST_SECRET_DIR", path.c_str(), 1);
  }
  ~SecretDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
};
SecretDir secret_dir;

}  // namespace

RawClient::RawClient(const std::string& socket_path, std::chrono::milliseconds timeout)
    : timeout_(timeout), endpoint_("unix:" + socket_path) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(-1);
  // Reconnect quickly after a daemon restart.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  channel_ = grpc::CreateCustomChannel(endpoint_, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Snapshot::NewStub(channel_);
  admin_ = v1::Admin::NewStub(channel_);
}

std::string RawClient::Secret(const std::string& job) const {
  auto secret = client::LoadJobSecret(endpoint_, job);
  return secret.ok() ? *secret : std::string();
}

std::unique_ptr<grpc::ClientContext> RawClient::ContextWith(const std::string& job,
                                                            const std::string& secret) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout_);
  if (!job.empty() && proto::MetadataSafe(job)) ctx->AddMetadata(proto::kJobIdMetadata, job);
  if (!secret.empty()) ctx->AddMetadata(proto::kJobSecretMetadata, secret);
  return ctx;
}

std::unique_ptr<grpc::ClientContext> RawClient::ContextFor(const std::string& job) const {
  return ContextWith(job, job.empty() ? std::string() : Secret(job));
}

std::unique_ptr<grpc::ClientContext> RawClient::Context() const { return ContextFor(last_job_); }

grpc::Status RawClient::RegisterJob(const std::string& job, int world_size,
                                    const std::vector<int>& ranks) {
  v1::RegisterJobRequest req;
  req.set_job_id(job);
  req.set_world_size(world_size);
  for (int r : ranks) req.add_local_ranks(r);
  grpc::Status status;
  auto secret = client::RegisterWithJobSecret(
      endpoint_, job, [&](const std::string& presented) -> Result<std::string> {
        v1::RegisterJobResponse resp;
        status = stub_->RegisterJob(ContextWith(job, presented).get(), req, &resp);
        if (!status.ok()) return Status::Unavailable("register");
        return resp.job_secret();
      });
  if (status.ok() && !secret.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, secret.status().ToString());
  }
  if (status.ok()) last_job_ = job;
  return status;
}

grpc::Status RawClient::Begin(const v1::BeginSnapshotRequest& req,
                              v1::BeginSnapshotResponse* resp) {
  return stub_->BeginSnapshot(ContextFor(req.job_id()).get(), req, resp);
}

grpc::Status RawClient::Commit(const v1::CommitSnapshotRequest& req,
                               v1::CommitSnapshotResponse* resp) {
  return stub_->CommitSnapshot(ContextFor(req.job_id()).get(), req, resp);
}

grpc::Status RawClient::Abort(const v1::AbortSnapshotRequest& req) {
  v1::AbortSnapshotResponse resp;
  return stub_->AbortSnapshot(ContextFor(req.job_id()).get(), req, &resp);
}

grpc::Status RawClient::List(const std::string& job, v1::ListVersionsResponse* resp) {
  v1::ListVersionsRequest req;
  req.set_job_id(job);
  return stub_->ListVersions(ContextFor(job).get(), req, resp);
}

grpc::Status RawClient::OpenRestore(const v1::OpenRestoreRequest& req,
                                    v1::OpenRestoreResponse* resp) {
  grpc::Status s = stub_->OpenRestore(ContextFor(req.job_id()).get(), req, resp);
  if (s.ok()) lease_jobs_[resp->lease_id()] = req.job_id();
  return s;
}

grpc::Status RawClient::CloseRestore(uint64_t lease_id, bool verified) {
  v1::CloseRestoreRequest req;
  req.set_lease_id(lease_id);
  req.set_verified(verified);
  v1::CloseRestoreResponse resp;
  auto it = lease_jobs_.find(lease_id);
  const std::string job = it == lease_jobs_.end() ? last_job_ : it->second;
  return stub_->CloseRestore(ContextFor(job).get(), req, &resp);
}

grpc::Status RawClient::GetStatus(v1::GetStatusResponse* resp) {
  v1::GetStatusRequest req;
  return admin_->GetStatus(ContextWith("", "").get(), req, resp);
}

RawSession::RawSession(RawClient& client, const std::string& job, int rank) {
  v1::OpenSessionRequest req;
  req.set_job_id(job);
  req.set_rank(rank);
  req.set_pid(getpid());
  // No deadline: the stream lives until Cancel().
  if (proto::MetadataSafe(job)) ctx_.AddMetadata(proto::kJobIdMetadata, job);
  if (const std::string secret = client.Secret(job); !secret.empty()) {
    ctx_.AddMetadata(proto::kJobSecretMetadata, secret);
  }
  reader_ = client.stub().OpenSession(&ctx_, req);
  v1::SessionEvent first;
  if (reader_->Read(&first)) {
    id_ = first.session_id();
  } else {
    ADD_FAILURE() << "OpenSession: " << reader_->Finish().error_message();
    reader_.reset();
  }
}

RawSession::~RawSession() { Cancel(); }

void RawSession::Cancel() {
  if (cancelled_ || !reader_) return;
  cancelled_ = true;
  ctx_.TryCancel();
  v1::SessionEvent ev;
  while (reader_->Read(&ev)) {
  }
  (void)reader_->Finish();
}

::testing::AssertionResult HasStatus(const grpc::Status& status, grpc::StatusCode code,
                                     std::string_view substring) {
  if (status.error_code() == code && status.error_message().find(substring) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "got " << CodeName(status.error_code()) << " \"" << status.error_message()
         << "\", expected " << CodeName(code) << " with a message containing \"" << substring
         << "\"";
}

::testing::AssertionResult IsOk(const grpc::Status& status) {
  if (status.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << CodeName(status.error_code()) << ": " << status.error_message();
}

v1::ItemSpec U8Item(const std::string& name, uint64_t nbytes) {
  v1::ItemSpec spec;
  spec.set_name(name);
  spec.set_dtype(v1::DTYPE_UINT8);
  spec.add_shape(static_cast<int64_t>(nbytes));
  spec.set_nbytes(nbytes);
  return spec;
}

MappedSegment::MappedSegment(const std::string& path, uint64_t bytes) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "open " << path << ": " << std::strerror(errno);
    return;
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    ADD_FAILURE() << "mmap " << path << ": " << std::strerror(errno);
    return;
  }
  data_ = static_cast<uint8_t*>(p);
  bytes_ = bytes;
}

MappedSegment::~MappedSegment() {
  if (data_ != nullptr) munmap(data_, bytes_);
}

std::optional<Memory> GetMemory(RawClient& client) {
  v1::GetStatusResponse status;
  if (grpc::Status s = client.GetStatus(&status); !s.ok()) {
    ADD_FAILURE() << "GetStatus: " << CodeName(s.error_code()) << " " << s.error_message();
    return std::nullopt;
  }
  Memory m;
  m.used = status.memory_used_bytes();
  m.pooled = status.memory_pooled_bytes();
  m.background_verifications = status.background_verifications();
  for (const v1::JobStatus& job : status.jobs()) m.versions += job.bytes();
  return m;
}

::testing::AssertionResult WaitSettled(RawClient& client, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + Scaled(timeout);
  std::optional<Memory> m;
  for (;;) {
    m = GetMemory(client);
    if (!m) return ::testing::AssertionFailure() << "GetStatus failed";
    if (m->used >= m->pooled + m->versions && m->in_flight() == 0 &&
        m->background_verifications == 0) {
      return ::testing::AssertionSuccess();
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(2ms);
  }
  return ::testing::AssertionFailure()
         << "a write reservation or a verification is still held: used " << m->used << ", pooled "
         << m->pooled << ", versions " << m->versions << ", background verifications "
         << m->background_verifications;
}

std::optional<int64_t> LatestStep(RawClient& client, const std::string& job) {
  v1::GetStatusResponse status;
  if (grpc::Status s = client.GetStatus(&status); !s.ok()) {
    ADD_FAILURE() << "GetStatus: " << CodeName(s.error_code()) << " " << s.error_message();
    return std::nullopt;
  }
  for (const v1::JobStatus& js : status.jobs()) {
    if (js.job_id() == job) return js.latest_complete_step();
  }
  return -1;
}

// ---- holdfast_snapshot_tool ------------------------------------------------------------

std::string ToolRun::Describe() const {
  return exit.ToString() + "\n  stdout: " + out + "\n  stderr: " + err;
}

std::vector<std::string> ToolArgv(const ToolOptions& options,
                                  const std::vector<std::string>& command) {
  std::vector<std::string> argv = {HOLDFAST_SNAPSHOT_TOOL_PATH,
                                   "--socket",
                                   options.socket,
                                   "--job",
                                   options.job,
                                   "--rank",
                                   std::to_string(options.rank),
                                   "--world-size",
                                   std::to_string(options.world_size)};
  if (!options.local_ranks.empty()) {
    argv.push_back("--local-ranks");
    for (int r : options.local_ranks) argv.push_back(std::to_string(r));
  }
  argv.insert(argv.end(),
              {"--items", std::to_string(options.items), "--item-bytes",
               std::to_string(options.item_bytes), "--seed", std::to_string(options.seed)});
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

ToolProcess::ToolProcess(const ToolOptions& options, const std::vector<std::string>& command) {
  dir_ = TempRoot() + "/" + UniqueName("t", NextId());
  RemoveAll(dir_);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  out_path_ = dir_ + "/stdout";
  err_path_ = dir_ + "/stderr";
  process_ = ChildProcess::Spawn(ToolArgv(options, command), {}, out_path_, err_path_);
}

ToolProcess::~ToolProcess() {
  process_.Kill();
  RemoveAll(dir_);
}

ToolRun ToolProcess::Collect(ExitInfo exit) const {
  ToolRun run;
  run.exit = exit;
  run.out = ReadFile(out_path_);
  run.err = ReadFile(err_path_);
  std::istringstream lines(run.out);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string word;
    int64_t step;
    if (!(words >> word >> step)) continue;
    if (word == "committed") run.committed.push_back(step);
    if (word == "verified") run.verified = step;
  }
  return run;
}

bool ToolProcess::WaitForOutput(std::string_view text, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + Scaled(timeout);
  while (Clock::now() < deadline) {
    if (Stdout().find(text) != std::string::npos) return true;
    if (!process_.Running()) return Stdout().find(text) != std::string::npos;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

ToolRun ToolProcess::Kill() { return Collect(process_.Kill()); }

ToolRun ToolProcess::Wait(std::chrono::milliseconds timeout) {
  if (auto exit = process_.Wait(Scaled(timeout))) return Collect(*exit);
  ADD_FAILURE() << "the snapshot tool did not finish in time; killed";
  return Kill();
}

ToolRun RunTool(const ToolOptions& options, const std::vector<std::string>& command,
                std::chrono::milliseconds timeout) {
  ToolProcess tool(options, command);
  return tool.Wait(timeout);
}

ToolRun Verify(const ToolOptions& options, std::optional<int64_t> step) {
  std::vector<std::string> command = {"verify"};
  if (step) command.insert(command.end(), {"--step", std::to_string(*step)});
  return RunTool(options, command);
}

::testing::AssertionResult VerifiesAs(const ToolOptions& options, std::optional<int64_t> step,
                                      int64_t expect_step) {
  ToolRun run = Verify(options, step);
  if (run.ok() && run.verified == expect_step) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "verify " << (step ? "--step " + std::to_string(*step) : std::string("(newest)"))
         << " of job " << options.job << " rank " << options.rank << ": expected step "
         << expect_step << " bit for bit; got " << run.Describe();
}

::testing::AssertionResult NotServed(const ToolOptions& options, int64_t step) {
  ToolRun run = Verify(options, step);
  if (run.exit.exited && run.exit.code == 1 && run.err.find("NOT_FOUND") != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "step " << step << " of job " << options.job << " rank " << options.rank
         << " should not be served; verify gave " << run.Describe();
}

}  // namespace holdfast::testing
