// holdfast: the operator CLI of holdfastd (docs/cli.md).
//
//   holdfast [--socket PATH | --endpoint HOST:PORT [--tls-ca/--tls-cert/--tls-key]] [--json]
//            COMMAND
//     status    cluster, group members, memory, jobs, health verdict
//     ls        versions with sizes, items, state, age
//     verify    re-read and check every checksum (items; chunks vs the group manifest)
//     recover   follow the rebuild of a lost node on its replacement
//     drop      free versions (restore point only with --force)
//
// Talks to the daemon's Admin service (proto/holdfast/v1/admin.proto); every
// call has a deadline. Exit codes: cli_logic.h (ExitCode) and --help.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "cli/cli_logic.h"
#include "holdfast/v1/admin.grpc.pb.h"

namespace {

using holdfast::cli::ExitCode;
using json = nlohmann::ordered_json;
namespace v1 = holdfast::v1;
namespace cli = holdfast::cli;
using Clock = std::chrono::steady_clock;

// The daemon's default socket (smp/config/config.h, DaemonConfig::socket_path).
constexpr const char* kDefaultSocket = "/run/holdfast/holdfastd.sock";

constexpr const char* kExitCodesHelp =
    "Exit codes: 0 ok, 1 error, 2 usage (or a confirmation needed without a tty), 3 daemon "
    "unreachable, 4 not found (unknown job or step), 5 data loss (verify found damage, recover "
    "cannot rebuild), 6 HEALTH_WARN (status), 7 HEALTH_ERR (status).";

struct Global {
  std::string socket = kDefaultSocket;
  std::string endpoint;
  bool json = false;
  double timeout_s = 10;
  // Mutual TLS to --endpoint (docs/security.md): PEM contents, read at start.
  std::string tls_ca, tls_cert, tls_key;
  std::string tls_server_name;  // the name the daemon's certificate must carry
  bool tls() const { return !tls_ca.empty(); }
};

// The text of a PEM file for --tls-*; exits with a usage error when unreadable.
std::string ReadPemOrExit(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().find("-----BEGIN ") == std::string::npos) {
    fmt::print(stderr, "holdfast: {} {}: cannot read a PEM file there\n", flag, path);
    std::exit(cli::kExitUsage);
  }
  return text.str();
}

// A failed call: the message for stderr and the exit code it maps to.
struct Failure {
  int code = cli::kExitError;
  std::string message;
};

class Daemon {
 public:
  explicit Daemon(const Global& g) : global_(g) {
    target_ = g.endpoint.empty() ? "unix:" + g.socket : g.endpoint;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (!g.endpoint.empty() && g.tls()) {
      grpc::SslCredentialsOptions tls;
      tls.pem_root_certs = g.tls_ca;
      tls.pem_cert_chain = g.tls_cert;
      tls.pem_private_key = g.tls_key;
      creds = grpc::SslCredentials(tls);
      if (!g.tls_server_name.empty()) args.SetSslTargetNameOverride(g.tls_server_name);
    }
    stub_ = v1::Admin::NewStub(grpc::CreateCustomChannel(target_, creds, args));
  }
  const std::string& target() const { return target_; }

  template <typename Req, typename Resp, typename Method>
  std::optional<Failure> Call(Method method, const Req& req, Resp* resp, double timeout_s) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    const grpc::Status s = (stub_.get()->*method)(&ctx, req, resp);
    if (s.ok()) return std::nullopt;
    Failure f;
    f.message = s.error_message();
    switch (s.error_code()) {
      case grpc::StatusCode::UNAVAILABLE:
        f.code = cli::kExitUnreachable;
        f.message = fmt::format("holdfastd at {} is unreachable: {}", target_, s.error_message());
        break;
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        f.code = cli::kExitUnreachable;
        f.message = fmt::format("holdfastd at {} did not answer within {:.0f} s", target_, timeout_s);
        break;
      case grpc::StatusCode::UNIMPLEMENTED:
        f.message = fmt::format("holdfastd at {} does not serve the Admin service (an older "
                                "daemon, or not its control address): {}",
                                target_, s.error_message());
        break;
      case grpc::StatusCode::NOT_FOUND:
        f.code = cli::kExitNotFound;
        break;
      case grpc::StatusCode::DATA_LOSS:
        f.code = cli::kExitDataLoss;
        break;
      case grpc::StatusCode::INVALID_ARGUMENT:
        f.code = cli::kExitUsage;
        break;
      default:
        break;
    }
    return f;
  }

  std::optional<Failure> Status(v1::GetStatusResponse* resp) {
    return Call(&v1::Admin::Stub::GetStatus, v1::GetStatusRequest(), resp, global_.timeout_s);
  }
  std::optional<Failure> List(const std::string& job, v1::ListVersionsResponse* resp) {
    v1::ListVersionsRequest req;
    req.set_job_id(job);
    return Call(&v1::Admin::Stub::ListVersions, req, resp, global_.timeout_s);
  }
  v1::Admin::Stub* stub() { return stub_.get(); }

 private:
  const Global& global_;
  std::string target_;
  std::unique_ptr<v1::Admin::Stub> stub_;
};

int Report(const Failure& f) {
  fmt::print(stderr, "holdfast: {}\n", f.message);
  return f.code;
}

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Age(int64_t then_micros) {
  if (then_micros <= 0) return "-";
  return cli::FormatDuration(static_cast<double>(NowMicros() - then_micros) / 1e6);
}

// ---- status --------------------------------------------------------------------------------

std::map<std::string, int64_t> RestorePoints(const v1::ListVersionsResponse& list) {
  std::map<std::string, int64_t> out;
  for (const auto& rp : list.restore_points()) out[rp.job_id()] = rp.step();
  return out;
}

int CmdStatus(Daemon& d, const Global& g) {
  v1::GetStatusResponse st;
  if (auto f = d.Status(&st)) return Report(*f);
  v1::ListVersionsResponse list;
  if (auto f = d.List("", &list)) return Report(*f);
  const cli::Health health = cli::AssessHealth(st, list);
  const bool cluster = st.has_cluster();
  std::map<std::string, int64_t> protected_step;
  std::map<std::string, int64_t> restore_point;
  if (cluster) {
    for (const auto& jp : st.cluster().jobs()) {
      protected_step[jp.job_id()] = jp.newest_protected_step();
      restore_point[jp.job_id()] = jp.restore_point();
    }
  }
  auto job_value = [](const std::map<std::string, int64_t>& m, const std::string& job) {
    auto it = m.find(job);
    return it == m.end() ? int64_t{-1} : it->second;
  };
  if (g.json) {
    json out;
    out["node_id"] = st.node_id();
    out["health"] = {{"status", health.Verdict()}, {"reasons", health.reasons}};
    out["memory"] = {{"used_bytes", st.memory_used_bytes()},
                     {"budget_bytes", st.memory_budget_bytes()},
                     {"pooled_bytes", st.memory_pooled_bytes()}};
    out["damaged_versions"] = st.damaged_versions();
    {
      const auto& sc = st.scrub();
      out["scrub"] = {{"enabled", sc.enabled()},
                      {"rate_bytes_per_second", sc.rate_bytes_per_second()},
                      {"interval_seconds", sc.interval_seconds()},
                      {"pass", sc.pass()},
                      {"running", sc.running()},
                      {"bytes_done", sc.bytes_done()},
                      {"bytes_total", sc.bytes_total()},
                      {"last_pass_finished_unix_micros", sc.last_pass_finished_unix_micros()},
                      {"last_pass_bytes", sc.last_pass_bytes()},
                      {"last_pass_micros", sc.last_pass_micros()},
                      {"bytes_scrubbed", sc.bytes_scrubbed()},
                      {"versions_checked", sc.versions_checked()},
                      {"errors_found", sc.errors_found()},
                      {"repaired", sc.repaired()},
                      {"unrepairable", sc.unrepairable()},
                      {"versions_damaged", sc.versions_damaged()},
                      {"parity_checks", sc.parity_checks()},
                      {"parity_mismatches", sc.parity_mismatches()},
                      {"last_repair", sc.last_repair()},
                      {"last_error", sc.last_error()}};
    }
    if (cluster) {
      const auto& c = st.cluster();
      json members = json::array();
      for (const auto& mem : c.members()) {
        members.push_back({{"node_id", mem.node_id()},
                           {"state", cli::MemberState(mem)},
                           {"control_address", mem.control_address()},
                           {"incarnation", fmt::format("{:016x}", mem.incarnation())}});
      }
      const auto& rb = c.rebuild();
      out["cluster"] = {{"cluster_id", c.cluster_id()},
                        {"group", c.group()},
                        {"position", c.position()},
                        {"k", c.k()},
                        {"m", c.m()},
                        {"members", members},
                        {"parity_bytes", c.parity_bytes()},
                        {"last_error", c.last_error()},
                        {"rebuild",
                         {{"state", v1::RebuildStatus::State_Name(rb.state())},
                          {"job_id", rb.job_id()},
                          {"step", rb.step()},
                          {"bytes_done", rb.bytes_done()},
                          {"bytes_total", rb.bytes_total()},
                          {"versions_rebuilt", rb.versions_rebuilt()}}}};
    } else {
      out["cluster"] = nullptr;
    }
    json jobs = json::array();
    for (const auto& j : st.jobs()) {
      jobs.push_back({{"job_id", j.job_id()},
                      {"world_size", j.world_size()},
                      {"local_ranks", std::vector<int>(j.local_ranks().begin(), j.local_ranks().end())},
                      {"newest_committed_step", j.latest_complete_step()},
                      {"newest_protected_step", job_value(protected_step, j.job_id())},
                      {"restore_point", job_value(restore_point, j.job_id())},
                      {"versions", j.versions()},
                      {"bytes", j.bytes()}});
    }
    out["jobs"] = jobs;
    fmt::print("{}\n", out.dump(2));
  } else {
    if (cluster) {
      const auto& c = st.cluster();
      fmt::print("cluster:  {}  (node {}, group {}, position {}, code {}+{})\n", c.cluster_id(),
                 st.node_id(), c.group(), c.position(), c.k(), c.m());
    } else {
      fmt::print("node:     {}  (no cluster)\n", st.node_id());
    }
    fmt::print("health:   {}\n", health.Verdict());
    for (const auto& why : health.reasons) fmt::print("          - {}\n", why);
    fmt::print("memory:   {} used of {} budget ({} pooled)\n",
               cli::FormatBytes(st.memory_used_bytes()), cli::FormatBytes(st.memory_budget_bytes()),
               cli::FormatBytes(st.memory_pooled_bytes()));
    if (st.has_scrub()) {
      fmt::print("scrub:    {}\n", cli::ScrubLine(st.scrub(), NowMicros()));
      if (!st.scrub().last_repair().empty()) {
        fmt::print("          last repair: {}\n", st.scrub().last_repair());
      }
    }
    if (cluster) {
      const auto& c = st.cluster();
      fmt::print("\ngroup {}:\n", c.group());
      cli::Table t({"POS", "NODE", "STATE", "CONTROL ADDRESS", "INCARNATION"});
      for (int p = 0; p < c.members_size(); ++p) {
        const auto& mem = c.members(p);
        t.Add({std::to_string(p), mem.node_id() + (p == c.position() ? " (this)" : ""),
               cli::MemberState(mem), mem.control_address(),
               fmt::format("{:016x}", mem.incarnation())});
      }
      fmt::print("{}", t.Render());
      const auto& rb = c.rebuild();
      if (rb.state() == v1::RebuildStatus::REBUILD_STATE_RUNNING) {
        fmt::print("rebuild:  job {} step {}: {}\n", rb.job_id(), rb.step(),
                   cli::ProgressLine(rb.bytes_done(), rb.bytes_total(),
                                     static_cast<double>(NowMicros() - rb.started_unix_micros()) / 1e6,
                                     20));
      }
    }
    fmt::print("\n");
    cli::Table t({"JOB", "WORLD", "LOCAL RANKS", "COMMITTED", "PROTECTED", "RESTORE POINT",
                  "VERSIONS", "BYTES"});
    auto step_text = [](int64_t s) { return s < 0 ? std::string("-") : std::to_string(s); };
    for (const auto& j : st.jobs()) {
      t.Add({j.job_id(), std::to_string(j.world_size()),
             fmt::format("{}", fmt::join(j.local_ranks(), ",")),
             step_text(j.latest_complete_step()),
             cluster ? step_text(job_value(protected_step, j.job_id())) : "-",
             cluster ? step_text(job_value(restore_point, j.job_id())) : "-",
             std::to_string(j.versions()), cli::FormatBytes(j.bytes())});
    }
    if (t.rows() == 0) {
      fmt::print("no jobs\n");
    } else {
      fmt::print("{}", t.Render());
    }
  }
  switch (health.level) {
    case cli::HealthLevel::kOk:
      return cli::kExitOk;
    case cli::HealthLevel::kWarn:
      return cli::kExitHealthWarn;
    case cli::HealthLevel::kErr:
      return cli::kExitHealthErr;
  }
  return cli::kExitHealthErr;
}

// ---- ls ------------------------------------------------------------------------------------

std::string VersionState(const v1::VersionInfo& v, int64_t restore_point) {
  switch (v.state()) {
    case v1::VERSION_STATE_PARTIAL:
      return "partial";
    case v1::VERSION_STATE_COMPLETE:
      return "local";
    case v1::VERSION_STATE_PROTECTED:
      return v.step() == restore_point ? "protected, restore point" : "protected";
    default:
      return "unknown";
  }
}

int CmdLs(Daemon& d, const Global& g, const std::string& job) {
  v1::ListVersionsResponse list;
  if (auto f = d.List(job, &list)) return Report(*f);
  if (!job.empty() && list.versions_size() == 0) {
    // An unknown job and a job without versions look alike in List; the
    // status tells them apart.
    v1::GetStatusResponse st;
    if (auto f = d.Status(&st)) return Report(*f);
    bool known = false;
    for (const auto& j : st.jobs()) known = known || j.job_id() == job;
    if (!known) return Report({cli::kExitNotFound, "job " + job + " is not known on " + st.node_id()});
  }
  const auto rps = RestorePoints(list);
  auto rp_of = [&](const std::string& j) {
    auto it = rps.find(j);
    return it == rps.end() ? int64_t{-1} : it->second;
  };
  if (g.json) {
    json out = json::array();
    for (const auto& v : list.versions()) {
      out.push_back({{"job_id", v.job_id()},
                     {"step", v.step()},
                     {"state", VersionState(v, rp_of(v.job_id()))},
                     {"restore_point", v.step() == rp_of(v.job_id())},
                     {"bytes", v.bytes()},
                     {"items", v.items()},
                     {"ranks", std::vector<int>(v.committed_ranks().begin(), v.committed_ranks().end())},
                     {"committed_unix_micros", v.committed_unix_micros()},
                     {"age_seconds", v.committed_unix_micros() > 0
                                         ? static_cast<double>(NowMicros() - v.committed_unix_micros()) / 1e6
                                         : 0.0},
                     {"leases", v.leases()}});
    }
    fmt::print("{}\n", json{{"versions", out}}.dump(2));
    return cli::kExitOk;
  }
  cli::Table t({"JOB", "STEP", "STATE", "BYTES", "ITEMS", "RANKS", "AGE"});
  for (const auto& v : list.versions()) {
    t.Add({v.job_id(), std::to_string(v.step()), VersionState(v, rp_of(v.job_id())),
           cli::FormatBytes(v.bytes()), std::to_string(v.items()),
           fmt::format("{}", fmt::join(v.committed_ranks(), ",")), Age(v.committed_unix_micros())});
  }
  if (t.rows() == 0) {
    fmt::print("no versions\n");
  } else {
    fmt::print("{}", t.Render());
  }
  return cli::kExitOk;
}

// ---- verify --------------------------------------------------------------------------------

std::string ProblemWhere(const v1::VerifyProblem& p) {
  switch (p.kind()) {
    case v1::VerifyProblem::KIND_ITEM:
      return fmt::format("rank {} item {}", p.rank(), p.item());
    case v1::VerifyProblem::KIND_DATA_CHUNK:
      return fmt::format("stripe {} position {} (data)", p.stripe(), p.chunk());
    case v1::VerifyProblem::KIND_PARITY_CHUNK:
      return fmt::format("stripe {} position {} (parity)", p.stripe(), p.chunk());
    case v1::VerifyProblem::KIND_MISSING:
      return "missing";
    default:
      return "?";
  }
}

std::string KindName(v1::VerifyProblem::Kind kind) {
  switch (kind) {
    case v1::VerifyProblem::KIND_ITEM:
      return "item";
    case v1::VerifyProblem::KIND_DATA_CHUNK:
      return "data_chunk";
    case v1::VerifyProblem::KIND_PARITY_CHUNK:
      return "parity_chunk";
    case v1::VerifyProblem::KIND_MISSING:
      return "missing";
    default:
      return "unknown";
  }
}

int CmdVerify(Daemon& d, const Global& g, const std::string& job, std::optional<int64_t> step,
              double timeout_s) {
  v1::VerifyRequest req;
  req.set_job_id(job);
  if (step) req.set_step(*step);
  v1::VerifyResponse resp;
  if (auto f = d.Call(&v1::Admin::Stub::Verify, req, &resp, timeout_s)) return Report(*f);
  int problems = 0;
  int unreached = 0;
  for (const auto& v : resp.versions()) {
    for (const auto& n : v.nodes()) {
      problems += n.problems_size();
      unreached += n.reached() ? 0 : 1;
    }
  }
  if (g.json) {
    json versions = json::array();
    for (const auto& v : resp.versions()) {
      json nodes = json::array();
      for (const auto& n : v.nodes()) {
        json ps = json::array();
        for (const auto& p : n.problems()) {
          ps.push_back({{"node_id", p.node_id()},
                        {"job_id", p.job_id()},
                        {"step", p.step()},
                        {"kind", KindName(p.kind())},
                        {"rank", p.rank()},
                        {"item", p.item()},
                        {"stripe", p.stripe()},
                        {"position", p.chunk()},
                        {"expected_crc", fmt::format("{:016x}", p.expected_crc())},
                        {"actual_crc", fmt::format("{:016x}", p.actual_crc())},
                        {"detail", p.detail()}});
        }
        nodes.push_back({{"node_id", n.node_id()},
                         {"reached", n.reached()},
                         {"error", n.error()},
                         {"items_checked", n.items_checked()},
                         {"chunks_checked", n.chunks_checked()},
                         {"bytes_checked", n.bytes_checked()},
                         {"data_segments", std::vector<std::string>(n.data_segments().begin(),
                                                                    n.data_segments().end())},
                         {"parity_segment", n.parity_segment()},
                         {"problems", ps}});
      }
      versions.push_back({{"job_id", v.job_id()},
                          {"step", v.step()},
                          {"protected", v.protected_()},
                          {"ok", std::all_of(v.nodes().begin(), v.nodes().end(),
                                             [](const v1::NodeVerifyReport& n) {
                                               return n.reached() && n.problems_size() == 0;
                                             })},
                          {"nodes", nodes}});
    }
    fmt::print("{}\n", json{{"versions", versions},
                            {"problems", problems},
                            {"unreachable", unreached},
                            {"seconds", static_cast<double>(resp.micros()) / 1e6}}
                           .dump(2));
  } else {
    cli::Table t({"JOB", "STEP", "SCOPE", "NODE", "RESULT", "ITEMS", "CHUNKS", "BYTES"});
    for (const auto& v : resp.versions()) {
      for (const auto& n : v.nodes()) {
        const std::string result =
            !n.reached() ? "UNREACHABLE"
                         : (n.problems_size() > 0 ? fmt::format("BAD ({})", n.problems_size()) : "ok");
        t.Add({v.job_id(), std::to_string(v.step()), v.protected_() ? "group" : "local", n.node_id(),
               result, std::to_string(n.items_checked()), std::to_string(n.chunks_checked()),
               cli::FormatBytes(n.bytes_checked())});
      }
    }
    if (t.rows() == 0) {
      fmt::print("no versions to verify\n");
    } else {
      fmt::print("{}", t.Render());
    }
    for (const auto& v : resp.versions()) {
      for (const auto& n : v.nodes()) {
        if (!n.reached()) {
          fmt::print("UNREACHABLE  {}  job {} step {}: {}\n", n.node_id(), v.job_id(), v.step(),
                     n.error());
        }
        for (const auto& p : n.problems()) {
          fmt::print("BAD  {}  job {} step {}  {}: {}\n", p.node_id(), p.job_id(), p.step(),
                     ProblemWhere(p), p.detail());
        }
      }
    }
    fmt::print("{} version(s) checked in {}: {} problem(s){}\n", resp.versions_size(),
               cli::FormatDuration(static_cast<double>(resp.micros()) / 1e6), problems,
               unreached > 0 ? fmt::format(", {} node report(s) missing", unreached) : "");
  }
  if (problems > 0) return cli::kExitDataLoss;
  if (unreached > 0) return cli::kExitError;
  return cli::kExitOk;
}

// ---- recover -------------------------------------------------------------------------------

// --address: every other member of the group must reach `node` at
// `address` (learned from the replacement's Hello, docs/cli.md). Waits until
// each up member reports it, or `deadline`; returns the ids still pending.
std::vector<std::string> ConfirmAddress(const Global& g, const v1::GetStatusResponse& st,
                                        const std::string& node, const std::string& address,
                                        Clock::time_point deadline, std::vector<std::string>* ok) {
  std::vector<std::string> pending;
  for (const auto& mem : st.cluster().members()) {
    if (mem.node_id() == node) continue;
    Global via = g;
    via.endpoint = mem.control_address();
    via.tls_server_name = mem.node_id();  // with TLS, its certificate names it
    via.timeout_s = std::min(g.timeout_s, 5.0);
    Daemon peer(via);
    bool confirmed = false;
    while (!confirmed) {
      v1::GetStatusResponse ps;
      if (!peer.Status(&ps) && ps.has_cluster()) {
        for (const auto& m : ps.cluster().members()) {
          confirmed = confirmed || (m.node_id() == node && m.control_address() == address);
        }
      }
      if (confirmed || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    (confirmed ? *ok : pending).push_back(mem.node_id());
  }
  return pending;
}

int CmdRecover(Daemon& d, const Global& g, const std::string& node, const std::string& address,
               double timeout_s) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  auto last_print = Clock::now() - std::chrono::hours(1);
  std::string last_line;
  bool identity_checked = false;
  std::optional<Failure> last_failure;
  while (true) {
    v1::GetStatusResponse st;
    last_failure = d.Status(&st);
    if (!last_failure) {
      if (!identity_checked) {
        if (!st.has_cluster()) {
          return Report({cli::kExitError, fmt::format("holdfastd at {} ({}) is not in a cluster: "
                                                      "nothing to recover",
                                                      d.target(), st.node_id())});
        }
        if (st.node_id() != node) {
          return Report({cli::kExitError,
                         fmt::format("holdfastd at {} is node {}, not {}: start the replacement "
                                     "holdfastd with --node-id {} and run recover against it "
                                     "(its socket, or --endpoint with its control address)",
                                     d.target(), st.node_id(), node, node)});
        }
        if (!address.empty()) {
          const auto& c = st.cluster();
          const std::string& mine = c.members(c.position()).control_address();
          if (mine != address) {
            return Report({cli::kExitError,
                           fmt::format("node {} runs at {} (its cluster file), not {}: start the "
                                       "replacement with a cluster file that gives {} the "
                                       "control address {}",
                                       node, mine, address, node, address)});
          }
        }
        identity_checked = true;
      }
      const auto& c = st.cluster();
      const auto& rb = c.rebuild();
      int up = 0;
      for (const auto& mem : c.members()) up += mem.up() ? 1 : 0;
      std::string line;
      bool finished = false;
      switch (rb.state()) {
        case v1::RebuildStatus::REBUILD_STATE_RUNNING:
          line = fmt::format("rebuilding job {} step {} {}", rb.job_id(), rb.step(),
                             cli::ProgressLine(rb.bytes_done(), rb.bytes_total(),
                                               static_cast<double>(NowMicros() -
                                                                   rb.started_unix_micros()) /
                                                   1e6,
                                               24));
          break;
        case v1::RebuildStatus::REBUILD_STATE_RETRYING:
          line = fmt::format("retrying ({} version(s) missing; last attempt: {})",
                             rb.versions_missing(), rb.last_failure());
          break;
        case v1::RebuildStatus::REBUILD_STATE_WAITING:
          line = rb.versions_missing() > 0
                     ? fmt::format("starting the rebuild of {} version(s)", rb.versions_missing())
                     : fmt::format("waiting for the group: {} of {} members up, {} needed to "
                                   "compare versions",
                                   up, c.members_size(), c.k() + 1);
          break;
        case v1::RebuildStatus::REBUILD_STATE_DATA_LOSS:
        case v1::RebuildStatus::REBUILD_STATE_IDLE:
          finished = true;
          break;
        default:
          line = "waiting for the daemon's rebuild state";
          break;
      }
      if (finished) {
        if (tty && !g.json && !last_line.empty()) fmt::print(stderr, "\n");
        const double secs = static_cast<double>(rb.rebuild_micros()) / 1e6;
        const double rate = secs > 0 ? static_cast<double>(rb.bytes_rebuilt()) / secs : 0;
        const bool lost = rb.state() == v1::RebuildStatus::REBUILD_STATE_DATA_LOSS;
        std::vector<std::string> confirmed;
        std::vector<std::string> pending;
        if (!address.empty()) pending = ConfirmAddress(g, st, node, address, deadline, &confirmed);
        if (g.json) {
          fmt::print("{}\n", json{{"node_id", st.node_id()},
                                  {"result", lost ? "data_loss" : "rebuilt"},
                                  {"versions_rebuilt", rb.versions_rebuilt()},
                                  {"bytes_rebuilt", rb.bytes_rebuilt()},
                                  {"rebuild_seconds", secs},
                                  {"bytes_per_second", rate},
                                  {"unrecoverable", std::vector<std::string>(
                                                        rb.unrecoverable().begin(),
                                                        rb.unrecoverable().end())},
                                  {"address", address.empty()
                                                  ? json(nullptr)
                                                  : json{{"control", address},
                                                         {"confirmed_by", confirmed},
                                                         {"pending", pending}}}}
                                 .dump(2));
        } else {
          fmt::print("{}: {} version(s) rebuilt, {} in {} ({})\n",
                     lost ? "recover FAILED" : "recovered", rb.versions_rebuilt(),
                     cli::FormatBytes(rb.bytes_rebuilt()), cli::FormatDuration(secs),
                     cli::FormatRate(rate));
          for (const auto& why : rb.unrecoverable()) fmt::print("cannot rebuild {}\n", why);
          if (!address.empty()) {
            fmt::print("address {} of {} known to: {}{}\n", address, node,
                       confirmed.empty() ? "none" : fmt::format("{}", fmt::join(confirmed, ", ")),
                       pending.empty() ? ""
                                       : fmt::format("; NOT yet to: {}", fmt::join(pending, ", ")));
          }
        }
        if (lost) {
          fmt::print(stderr,
                     "holdfast: node {} cannot be rebuilt: more members of its group were lost "
                     "than the code tolerates (m = {}); restore from a disk checkpoint\n",
                     node, c.m());
          return cli::kExitDataLoss;
        }
        if (!pending.empty()) {
          fmt::print(stderr,
                     "holdfast: {} do not reach {} at {} yet (down, or not contacted by it); "
                     "re-run recover once they are up\n",
                     fmt::join(pending, ", "), node, address);
          return cli::kExitError;
        }
        return cli::kExitOk;
      }
      if (!g.json && (line != last_line || Clock::now() - last_print > std::chrono::seconds(5))) {
        if (tty) {
          fmt::print(stderr, "\r\033[K{}", line);
        } else if (Clock::now() - last_print >= std::chrono::seconds(1) ||
                   line.substr(0, 10) != last_line.substr(0, 10)) {
          fmt::print(stderr, "{}\n", line);
          last_print = Clock::now();
        }
        if (tty) last_print = Clock::now();
        last_line = line;
      }
    } else if (last_failure->code != cli::kExitUnreachable) {
      return Report(*last_failure);
    } else if (!g.json) {
      // The replacement may be restarting: keep trying until --timeout.
      const std::string line = "daemon unreachable, retrying: " + last_failure->message;
      if (line != last_line) fmt::print(stderr, "{}{}\n", tty ? "\r\033[K" : "", line);
      last_line = line;
    }
    if (Clock::now() >= deadline) {
      if (tty && !g.json) fmt::print(stderr, "\n");
      if (last_failure) return Report(*last_failure);
      return Report({cli::kExitError,
                     fmt::format("node {} is not rebuilt after {:.0f} s ({}); re-run holdfast "
                                 "recover to keep following it",
                                 node, timeout_s, last_line)});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// ---- drop ----------------------------------------------------------------------------------

int CmdDrop(Daemon& d, const Global& g, const std::string& job, std::optional<int64_t> step,
            bool all, bool yes, bool force) {
  if (step.has_value() == all) {
    return Report({cli::kExitUsage, "drop needs exactly one of --step S or --all"});
  }
  const std::string what = all ? "every version of job " + job
                               : fmt::format("step {} of job {}", *step, job);
  if (!yes) {
    if (!isatty(STDIN_FILENO)) {
      return Report({cli::kExitUsage, "refusing to drop " + what +
                                          " without confirmation: stdin is not a terminal; pass "
                                          "--yes"});
    }
    fmt::print(stderr, "Drop {} on {}{}? [y/N] ", what, d.target(),
               force ? " (--force: the restore point too)" : "");
    std::fflush(stderr);
    std::string answer;
    if (!std::getline(std::cin, answer) || (answer != "y" && answer != "Y" && answer != "yes")) {
      fmt::print(stderr, "holdfast: not dropped\n");
      return cli::kExitError;
    }
  }
  v1::DropVersionsRequest req;
  req.set_job_id(job);
  req.set_all(all);
  if (step) req.set_step(*step);
  req.set_force(force);
  v1::DropVersionsResponse resp;
  if (auto f = d.Call(&v1::Admin::Stub::DropVersions, req, &resp, g.timeout_s)) {
    if (f->message.find("needs force") != std::string::npos) f->message += " (use --force)";
    return Report(*f);
  }
  if (g.json) {
    fmt::print("{}\n", json{{"job_id", job},
                            {"dropped_steps", std::vector<int64_t>(resp.dropped_steps().begin(),
                                                                   resp.dropped_steps().end())}}
                           .dump(2));
  } else {
    fmt::print("dropped {} version(s) of job {}: steps {}\n", resp.dropped_steps_size(), job,
               resp.dropped_steps_size() ? fmt::format("{}", fmt::join(resp.dropped_steps(), ", "))
                                         : "none");
  }
  return cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"holdfast: inspect and operate holdfastd (in-memory erasure-coded snapshots)."};
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  app.fallthrough();
  Global g;
  auto* socket_opt = app.add_option("--socket", g.socket, "the local daemon's Unix socket")
                         ->capture_default_str();
  app.add_option("--endpoint", g.endpoint,
                 "another node's daemon: its control address HOST:PORT (read-only commands)")
      ->excludes(socket_opt);
  std::string tls_ca, tls_cert, tls_key;
  auto* tls_ca_opt = app.add_option(
      "--tls-ca", tls_ca,
      "with --endpoint to a daemon with cluster.tls: the CA (PEM) its certificate chains to");
  auto* tls_cert_opt = app.add_option("--tls-cert", tls_cert,
                                      "your client certificate (PEM); an operator: name in its "
                                      "SAN also allows drop (docs/security.md)");
  auto* tls_key_opt = app.add_option("--tls-key", tls_key, "the key of --tls-cert (PEM)");
  app.add_option("--tls-server-name", g.tls_server_name,
                 "the name the daemon's certificate carries (its node id); default: the host of "
                 "--endpoint")
      ->needs(tls_ca_opt);
  tls_ca_opt->needs(tls_cert_opt)->needs(tls_key_opt);
  tls_cert_opt->needs(tls_ca_opt)->needs(tls_key_opt);
  tls_key_opt->needs(tls_ca_opt)->needs(tls_cert_opt);
  app.add_flag("--json", g.json, "print JSON for scripts instead of tables");
  app.add_option("--timeout", g.timeout_s, "seconds to wait for the daemon's answer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);

  auto* status = app.add_subcommand(
      "status", "cluster, group members (up, down, rebuilding), memory, jobs and a health verdict");
  status->footer("Exit codes: 0 HEALTH_OK, 6 HEALTH_WARN, 7 HEALTH_ERR, 3 daemon unreachable.");

  auto* ls = app.add_subcommand("ls", "versions with sizes, item counts, state and age");
  std::string ls_job;
  ls->add_option("--job", ls_job, "only this job");
  ls->footer("Exit codes: 0 ok, 3 daemon unreachable, 4 unknown job.");

  auto* verify = app.add_subcommand(
      "verify",
      "re-read the versions and check every checksum: items on this node, and for protected "
      "versions every member's chunks (data and parity) against the group manifest");
  std::string verify_job;
  int64_t verify_step = -1;
  double verify_timeout = 600;
  verify->add_option("--job", verify_job, "only this job");
  auto* verify_step_opt = verify->add_option("--step", verify_step, "only this step (needs --job)")
                              ->check(CLI::NonNegativeNumber);
  verify_step_opt->needs(verify->get_option("--job"));
  verify->add_option("--verify-timeout", verify_timeout, "seconds the whole check may take")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  verify->footer("Exit codes: 0 all intact, 5 damage found (each bad item or chunk is listed), 1 a "
                 "member could not be checked, 3 daemon unreachable, 4 unknown job or step.");

  auto* recover = app.add_subcommand(
      "recover",
      "follow the rebuild of a lost node on its replacement (start holdfastd there with the lost "
      "node's id first; the rebuild starts by itself) and print a summary");
  std::string recover_node;
  double recover_timeout = 3600;
  recover->add_option("--node", recover_node, "the lost node's id (the replacement runs with it)")
      ->required();
  std::string recover_address;
  recover->add_option("--address", recover_address,
                      "the replacement runs at this control address HOST:PORT instead of the lost "
                      "node's (its cluster file says so): check that it does and that every other "
                      "member has learned it");
  recover->add_option("--wait", recover_timeout, "seconds to follow the rebuild before giving up")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  recover->footer("Re-running recover re-attaches to a rebuild in progress. Exit codes: 0 rebuilt "
                  "(or nothing to rebuild), 5 unrecoverable (more than m members lost), 1 not done "
                  "within --wait, wrong node, or (--address) a member that has not learned the "
                  "new address, 3 daemon unreachable.");

  auto* drop = app.add_subcommand("drop", "free versions of a job");
  std::string drop_job;
  int64_t drop_step = -1;
  bool drop_all = false, drop_yes = false, drop_force = false;
  drop->add_option("--job", drop_job, "the job")->required();
  auto* drop_step_opt = drop->add_option("--step", drop_step, "the step to drop")
                            ->check(CLI::NonNegativeNumber);
  drop->add_flag("--all", drop_all, "every version of the job")->excludes(drop_step_opt);
  drop->add_flag("--yes,-y", drop_yes, "do not ask for confirmation");
  drop->add_flag("--force", drop_force,
                 "also drop the restore point (the newest protected version)");
  drop->footer("Accepted only on the local Unix socket, or over --endpoint with an operator "
               "certificate (--tls-cert naming operator:<who>). Without --yes, asks on the terminal and "
               "refuses (exit 2) when stdin is not one. Exit codes: 0 dropped, 1 refused (the "
               "restore point without --force, a version being restored), 2 usage, 3 daemon "
               "unreachable, 4 unknown job or step.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? cli::kExitOk : cli::kExitUsage;
  }

  if (!tls_ca.empty()) {
    g.tls_ca = ReadPemOrExit("--tls-ca", tls_ca);
    g.tls_cert = ReadPemOrExit("--tls-cert", tls_cert);
    g.tls_key = ReadPemOrExit("--tls-key", tls_key);
  }
  Daemon d(g);
  if (*status) return CmdStatus(d, g);
  if (*ls) return CmdLs(d, g, ls_job);
  if (*verify) {
    return CmdVerify(d, g, verify_job,
                     verify_step_opt->count() ? std::optional<int64_t>(verify_step) : std::nullopt,
                     verify_timeout);
  }
  if (*recover) return CmdRecover(d, g, recover_node, recover_address, recover_timeout);
  if (*drop) {
    // Over --endpoint the daemon itself refuses (PERMISSION_DENIED): the
    // rule is enforced there, not here.
    return CmdDrop(d, g, drop_job,
                   drop_step_opt->count() ? std::optional<int64_t>(drop_step) : std::nullopt,
                   drop_all, drop_yes, drop_force);
  }
  return cli::kExitUsage;
}
