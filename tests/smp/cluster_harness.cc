#include "cluster_harness.h"

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

namespace holdfast::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int g_clusters = 0;

}  // namespace

TestCluster::TestCluster(ClusterOptions options) : options_(std::move(options)) {
  const char* tmp = std::getenv("TMPDIR");
  root_ = std::string((tmp != nullptr && *tmp != '\0') ? tmp : "/tmp") + "/hf-cluster-" +
          std::to_string(getpid()) + "-" + std::to_string(g_clusters++);
  std::error_code ec;
  fs::remove_all(root_, ec);
  fs::create_directories(root_, ec);
  cluster_file_ = root_ + "/cluster.yaml";
  pki_ = root_ + "/pki";
  ports_ = FreePorts(2 * options_.nodes);
  WriteClusterFile(ClusterFileText(), cluster_file_);
  for (int i = 0; i < options_.nodes; ++i) {
    DaemonOptions d;
    d.node_id = NodeId(i);
    d.memory_budget = options_.memory_budget;
    if (const char* level = std::getenv("HOLDFAST_CLUSTER_LOG_LEVEL")) d.log_level = level;
    d.extra_args = {"--cluster", cluster_file_, "--ucx-tls", "tcp", "--ucx-net-devices", "lo"};
    if (options_.tls) {
      const CertFiles c = IssueCert(NodeId(i), "DNS:" + NodeId(i));
      d.extra_args.insert(d.extra_args.end(),
                          {"--tls-ca", c.ca, "--tls-cert", c.cert, "--tls-key", c.key});
    }
    d.env = options_.env;
    daemons_.push_back(std::make_unique<Daemon>(std::move(d)));
  }
}

TestCluster::~TestCluster() {
  daemons_.clear();
  std::error_code ec;
  fs::remove_all(root_, ec);
}

std::string TestCluster::ClusterFileText() const {
  std::string text = "cluster_id: " + options_.cluster_id + "\n";
  if (options_.copies > 0) {
    text += "code: {mode: replicate, copies: " + std::to_string(options_.copies) + "}\n";
  } else {
    text += "code: {k: " + std::to_string(options_.k) + ", m: " + std::to_string(options_.m) + "}\n";
  }
  text += "window: " + options_.window + "\n";
  if (!options_.protect_bandwidth.empty()) {
    text += "protect_bandwidth: " + options_.protect_bandwidth + "\n";
  }
  text += "nodes:\n";
  for (int i = 0; i < options_.nodes; ++i) {
    text += "  - {id: " + NodeId(i) + ", control: 127.0.0.1:" + std::to_string(ports_[2 * i]) +
            ", data: 127.0.0.1:" + std::to_string(ports_[2 * i + 1]) + "}\n";
  }
  return text;
}

CertFiles TestCluster::IssueCert(const std::string& subject, const std::string& san,
                                 const std::string& ca) {
  std::error_code ec;
  fs::create_directories(pki_, ec);
  const std::string log = pki_ + "/openssl.log";
  // P-256 keys: fast to make. Paths hold no spaces or shell characters.
  auto run = [&](const std::string& cmd) {
    if (std::system((cmd + " >>" + log + " 2>&1").c_str()) == 0) return true;
    ADD_FAILURE() << "openssl failed: " << cmd << "\n" << ReadFile(log);
    return false;
  };
  const std::string key_opts = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string ca_pem = pki_ + "/" + ca + ".pem";
  const std::string ca_key = pki_ + "/" + ca + ".key";
  if (!fs::exists(ca_pem) &&
      !run("openssl req -x509 " + key_opts + " -keyout " + ca_key + " -out " + ca_pem +
           " -days 2 -subj /CN=holdfast-test-" + ca)) {
    return {};
  }
  std::string file = subject + "-" + ca;
  for (char& c : file) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') c = '_';
  }
  const CertFiles out{ca_pem, pki_ + "/" + file + ".pem", pki_ + "/" + file + ".key"};
  const std::string ext = pki_ + "/" + file + ".ext";
  {
    std::ofstream e(ext, std::ios::trunc);
    if (!san.empty()) e << "subjectAltName=" << san << "\n";
    e << "extendedKeyUsage=serverAuth,clientAuth\n";
  }
  if (!run("openssl req " + key_opts + " -keyout " + out.key + " -out " + pki_ + "/" + file +
           ".csr -subj /CN=" + subject) ||
      !run("openssl x509 -req -in " + pki_ + "/" + file + ".csr -CA " + ca_pem + " -CAkey " +
           ca_key + " -CAcreateserial -days 2 -out " + out.cert + " -extfile " + ext)) {
    return {};
  }
  return out;
}

void TestCluster::WriteClusterFile(const std::string& text, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

::testing::AssertionResult TestCluster::StartAll() {
  for (int i = 0; i < size(); ++i) {
    if (auto r = Start(i); !r) return r;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult TestCluster::Start(int i) { return daemons_[i]->Start(); }

void TestCluster::Kill(int i, bool wipe) {
  daemons_[i]->Kill();
  if (wipe) daemons_[i]->WipeMemory();
}

ToolOptions TestCluster::Tool(const std::string& job, int rank, int world, uint64_t item_bytes,
                              uint64_t seed) const {
  ToolOptions t;
  t.socket = daemons_[rank % size()]->socket_path();
  t.job = job;
  t.rank = rank;
  t.world_size = world;
  t.items = 3 + rank % 2;  // ranks of different sizes
  t.item_bytes = item_bytes + 4096 * static_cast<uint64_t>(rank);
  t.seed = seed;
  return t;
}

::testing::AssertionResult TestCluster::Save(const std::string& job, int world, int64_t first,
                                             int64_t last, uint64_t item_bytes) {
  std::vector<std::unique_ptr<ToolProcess>> tools;
  const std::string steps = std::to_string(first) + ":" + std::to_string(last);
  for (int r = 0; r < world; ++r) {
    tools.push_back(std::make_unique<ToolProcess>(Tool(job, r, world, item_bytes),
                                                  std::vector<std::string>{"save", "--steps", steps}));
  }
  for (int r = 0; r < world; ++r) {
    if (!tools[r]->WaitForOutput("committed " + std::to_string(last), Scaled(60s))) {
      return ::testing::AssertionFailure()
             << "rank " << r << " did not commit step " << last << ": " << tools[r]->Kill().Describe();
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult TestCluster::Verify(const std::string& job, int world,
                                               std::optional<int64_t> step, uint64_t item_bytes) {
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> cmd = {"verify"};
    if (step) cmd.insert(cmd.end(), {"--step", std::to_string(*step)});
    const ToolRun run = RunTool(Tool(job, r, world, item_bytes), cmd);
    if (!run.ok()) {
      return ::testing::AssertionFailure() << "rank " << r << " on " << NodeId(r % size())
                                           << " could not restore: " << run.Describe();
    }
    if (step && run.verified != step) {
      return ::testing::AssertionFailure() << "rank " << r << " restored step "
                                           << run.verified.value_or(-1) << ", not " << *step;
    }
  }
  return ::testing::AssertionSuccess();
}

std::optional<v1::GetStatusResponse> TestCluster::Status(int i) {
  if (!daemons_[i]->Running()) return std::nullopt;
  RawClient client(daemons_[i]->socket_path(), 2s);
  v1::GetStatusResponse resp;
  if (!client.GetStatus(&resp).ok()) return std::nullopt;
  return resp;
}

std::optional<int64_t> TestCluster::RestorePoint(int i, const std::string& job) {
  auto st = Status(i);
  if (!st) return std::nullopt;
  for (const auto& j : st->cluster().jobs()) {
    if (j.job_id() == job) return j.restore_point();
  }
  return -1;
}

::testing::AssertionResult TestCluster::WaitRestorePoint(const std::string& job, int64_t step,
                                                         std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + Scaled(timeout);
  std::string last;
  while (Clock::now() < deadline) {
    bool all = true;
    last.clear();
    for (int i = 0; i < size(); ++i) {
      if (!daemons_[i]->Running()) continue;
      auto rp = RestorePoint(i, job);
      last += NodeId(i) + "=" + (rp ? std::to_string(*rp) : "?") + " ";
      if (!rp || *rp < step) all = false;
    }
    if (all) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(50ms);
  }
  return ::testing::AssertionFailure() << "restore point of " << job << " did not reach " << step
                                       << ": " << last;
}

::testing::AssertionResult TestCluster::WaitHolds(int i, const std::string& job, int64_t step,
                                                  std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + Scaled(timeout);
  while (Clock::now() < deadline) {
    if (auto st = Status(i); st && !st->cluster().rebuilding()) {
      for (const auto& j : st->cluster().jobs()) {
        if (j.job_id() == job && j.newest_protected_step() >= step) {
          return ::testing::AssertionSuccess();
        }
      }
    }
    std::this_thread::sleep_for(50ms);
  }
  return ::testing::AssertionFailure() << NodeId(i) << " does not hold " << job << " step "
                                       << step << " protected";
}

::testing::AssertionResult TestCluster::WaitError(int i, const std::string& text,
                                                  std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + Scaled(timeout);
  std::string last;
  while (Clock::now() < deadline) {
    if (auto st = Status(i)) {
      last = st->cluster().last_error();
      if (last.find(text) != std::string::npos) return ::testing::AssertionSuccess();
    }
    std::this_thread::sleep_for(50ms);
  }
  return ::testing::AssertionFailure() << NodeId(i) << " did not report '" << text
                                       << "'; last error: " << last;
}

}  // namespace holdfast::testing
