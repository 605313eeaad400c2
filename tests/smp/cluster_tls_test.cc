// Mutual TLS on the control address (docs/security.md, "Peers with mutual
// TLS"), with real holdfastd processes and certificates made by the openssl
// CLI for each test: a TLS cluster protects and rebuilds as before; a peer
// with a certificate of another CA, a peer whose certificate names another
// node than it claims, a client without a certificate and a node of another
// cluster are refused; an operator certificate may drop remotely, a node
// certificate may not.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "cluster_harness.h"
#include "holdfast/v1/admin.grpc.pb.h"

namespace holdfast::testing {
namespace {

constexpr uint64_t kItemBytes = 600 << 10;

ClusterOptions Tls() {
  ClusterOptions o;
  o.nodes = 3;
  o.k = 2;
  o.m = 1;
  o.tls = true;
  return o;
}

std::string Pem(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// An Admin stub to `address` over TLS with `client` (no client certificate
// when its paths are empty); the server must carry the name `server_name`.
std::unique_ptr<v1::Admin::Stub> AdminStub(const std::string& address, const CertFiles& trust,
                                           const CertFiles& client,
                                           const std::string& server_name) {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = Pem(trust.ca);
  if (!client.cert.empty()) {
    tls.pem_cert_chain = Pem(client.cert);
    tls.pem_private_key = Pem(client.key);
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(server_name);
  return v1::Admin::NewStub(grpc::CreateCustomChannel(address, grpc::SslCredentials(tls), args));
}

grpc::Status GetStatus(v1::Admin::Stub& stub, v1::GetStatusResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 3s);
  return stub.GetStatus(&ctx, v1::GetStatusRequest(), resp);
}

// Node i runs with a copy of the cluster file that puts its control
// address at a new port; returns that address.
std::string MoveNode(TestCluster& cluster, int i);

// Sets `flag`'s value in node i's command line (the harness put it there).
void SetArg(TestCluster& cluster, int i, const std::string& flag, const std::string& value) {
  auto& args = cluster.node(i).options().extra_args;
  for (size_t a = 0; a + 1 < args.size(); ++a) {
    if (args[a] == flag) {
      args[a + 1] = value;
      return;
    }
  }
  ADD_FAILURE() << flag << " is not on the command line of " << TestCluster::NodeId(i);
}

std::string MoveNode(TestCluster& cluster, int i) {
  const std::string address = "127.0.0.1:" + std::to_string(FreePorts(1)[0]);
  std::string text = cluster.ClusterFileText();
  text.replace(text.find(cluster.ControlAddress(i)), cluster.ControlAddress(i).size(), address);
  const std::string file = cluster.cluster_file() + ".moved-" + TestCluster::NodeId(i);
  cluster.WriteClusterFile(text, file);
  SetArg(cluster, i, "--cluster", file);
  return address;
}

bool LogHas(Daemon& d, const std::string& text) { return d.Log().find(text) != std::string::npos; }

// Until `text` shows in node i's log.
::testing::AssertionResult WaitLog(TestCluster& cluster, int i, const std::string& text,
                                   std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + Scaled(timeout);
  while (std::chrono::steady_clock::now() < deadline) {
    if (LogHas(cluster.node(i), text)) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(100ms);
  }
  return ::testing::AssertionFailure()
         << TestCluster::NodeId(i) << "'s log never said '" << text << "'";
}

// `holdfast ARGS...`: exit code and output.
struct CliRun {
  int code = -1;
  std::string out;
};
CliRun RunCli(const std::string& root, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {HOLDFAST_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = root + "/cli.out", err = root + "/cli.err";
  ChildProcess p = ChildProcess::Spawn(argv, {}, out, err);
  CliRun run;
  if (auto exit = p.Wait(Scaled(30s)); exit && exit->exited) run.code = exit->code;
  run.out = ReadFile(out) + ReadFile(err);
  return run;
}

TEST(ClusterTlsTest, TwoPlusOneOverTlsProtectsAndRebuilds) {
  TestCluster cluster(Tls());
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.Save("j", 3, 1, 2, kItemBytes));
  ASSERT_TRUE(cluster.WaitRestorePoint("j", 2));
  EXPECT_FALSE(LogHas(cluster.node(0), "NOT authenticated"));
  // n1 lost with its RAM: the replacement (same certificate) is rebuilt.
  cluster.Kill(1, /*wipe=*/true);
  ASSERT_TRUE(cluster.Start(1));
  ASSERT_TRUE(cluster.WaitHolds(1, "j", 2));
  ASSERT_TRUE(cluster.Verify("j", 3, 2, kItemBytes));
  ASSERT_TRUE(cluster.Save("j", 3, 3, 3, kItemBytes));
  ASSERT_TRUE(cluster.WaitRestorePoint("j", 3));
}

// A replacement at another control address (docs/cli.md, "recover
// --address"): its authenticated Hello moves it, and the new channel checks
// its certificate again.
TEST(ClusterTlsTest, ReplacementAtAnotherAddressIsLearnedOverTls) {
  TestCluster cluster(Tls());
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.Save("j", 3, 1, 1, kItemBytes));
  ASSERT_TRUE(cluster.WaitRestorePoint("j", 1));
  cluster.Kill(1, /*wipe=*/true);
  const std::string moved = MoveNode(cluster, 1);
  ASSERT_TRUE(cluster.Start(1));
  ASSERT_TRUE(cluster.WaitHolds(1, "j", 1));
  ASSERT_TRUE(cluster.Verify("j", 3, 1, kItemBytes));
  for (int i : {0, 2}) {
    auto st = cluster.Status(i);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->cluster().members(1).control_address(), moved) << TestCluster::NodeId(i);
  }
}

TEST(ClusterTlsTest, WithoutTlsAMultiNodeClusterWarnsLoudly) {
  ClusterOptions o = Tls();
  o.tls = false;
  TestCluster cluster(o);
  ASSERT_TRUE(cluster.Start(0));
  EXPECT_TRUE(WaitLog(cluster, 0, "peers on the control address are NOT authenticated"));
}

TEST(ClusterTlsTest, CertificateOfAnotherCaIsRefused) {
  TestCluster cluster(Tls());
  const CertFiles other = cluster.IssueCert("n2", "DNS:n2", "other-ca");
  SetArg(cluster, 2, "--tls-ca", other.ca);
  SetArg(cluster, 2, "--tls-cert", other.cert);
  SetArg(cluster, 2, "--tls-key", other.key);
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.Save("j", 2, 1, 1, kItemBytes));
  std::this_thread::sleep_for(Scaled(2s));
  for (int i : {0, 1}) {
    auto st = cluster.Status(i);
    ASSERT_TRUE(st);
    EXPECT_FALSE(st->cluster().members(2).up()) << "n2 is up for " << TestCluster::NodeId(i);
    EXPECT_TRUE(st->cluster().members(1 - i).up());
    EXPECT_EQ(cluster.RestorePoint(i, "j"), -1);  // nothing is protected without n2
  }
  auto st2 = cluster.Status(2);
  ASSERT_TRUE(st2);
  EXPECT_FALSE(st2->cluster().members(0).up());
  EXPECT_FALSE(st2->cluster().members(1).up());
}

TEST(ClusterTlsTest, CertificateNamingAnotherNodeThanHelloClaimsIsRefused) {
  TestCluster cluster(Tls());
  // n1 runs with n2's certificate (valid, same CA): it claims n1 in Hello.
  const CertFiles n2 = cluster.IssueCert("n2", "DNS:n2");
  SetArg(cluster, 1, "--tls-cert", n2.cert);
  SetArg(cluster, 1, "--tls-key", n2.key);
  // ... and announces another control address for n1.
  const std::string moved = MoveNode(cluster, 1);
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.Save("j", 3, 1, 1, kItemBytes));
  // Its calls are refused, naming the mismatch ...
  EXPECT_TRUE(
      WaitLog(cluster, 0, "the caller's certificate names n2, but it claims to be node n1"));
  EXPECT_TRUE(cluster.WaitError(1, "refused this node"));
  std::this_thread::sleep_for(Scaled(1s));
  // ... and calls to it fail the handshake: its certificate does not name n1.
  // The honest nodes still talk to each other.
  for (int i : {0, 2}) {
    auto st = cluster.Status(i);
    ASSERT_TRUE(st);
    EXPECT_FALSE(st->cluster().members(1).up()) << "impostor up for " << TestCluster::NodeId(i);
    EXPECT_TRUE(st->cluster().members(2 - i).up()) << "for " << TestCluster::NodeId(i);
    // Its address claim was not taken.
    EXPECT_EQ(st->cluster().members(1).control_address(), cluster.ControlAddress(1));
    EXPECT_EQ(cluster.RestorePoint(i, "j"), -1);
  }
}

TEST(ClusterTlsTest, WrongClusterIdIsStillRefused) {
  TestCluster cluster(Tls());
  std::string text = cluster.ClusterFileText();
  text.replace(text.find("cluster_id: test"), 16, "cluster_id: else");
  const std::string other = cluster.cluster_file() + ".n2";
  cluster.WriteClusterFile(text, other);
  SetArg(cluster, 2, "--cluster", other);
  ASSERT_TRUE(cluster.StartAll());
  EXPECT_TRUE(WaitLog(cluster, 2, "belongs to cluster 'else', this is 'test'"));
  auto st = cluster.Status(0);
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->cluster().members(2).up());
}

TEST(ClusterTlsTest, RemoteAdminNeedsACertificateAndDropNeedsTheOperatorRole) {
  TestCluster cluster(Tls());
  ASSERT_TRUE(cluster.StartAll());
  ASSERT_TRUE(cluster.Save("j", 3, 1, 2, kItemBytes));
  ASSERT_TRUE(cluster.WaitRestorePoint("j", 2));
  const std::string address = cluster.ControlAddress(0);
  const CertFiles n1 = cluster.IssueCert("n1", "DNS:n1");
  const CertFiles op = cluster.IssueCert("alice", "URI:operator:alice");
  const CertFiles stranger = cluster.IssueCert("operator:mallory", "URI:operator:mallory", "x-ca");
  v1::GetStatusResponse resp;

  // No certificate: refused at the handshake (UNAVAILABLE), insecure or TLS.
  {
    auto insecure =
        v1::Admin::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    EXPECT_EQ(GetStatus(*insecure, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(GetStatus(*AdminStub(address, n1, {}, "n0"), &resp).error_code(),
              grpc::StatusCode::UNAVAILABLE);
    // A certificate of another CA, even with the operator name.
    EXPECT_EQ(GetStatus(*AdminStub(address, n1, stranger, "n0"), &resp).error_code(),
              grpc::StatusCode::UNAVAILABLE);
    // The daemon's certificate must name n0.
    EXPECT_EQ(GetStatus(*AdminStub(address, n1, n1, "n2"), &resp).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  // A node certificate reads.
  {
    const grpc::Status s = GetStatus(*AdminStub(address, n1, n1, "n0"), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.cluster().cluster_id(), "test");
  }
  // The CLI: without TLS flags the daemon is unreachable (exit 3); a node
  // certificate lists but may not drop; an operator certificate drops.
  const std::vector<std::string> tls_node = {"--endpoint",        address, "--tls-ca",  n1.ca,
                                             "--tls-cert",        n1.cert, "--tls-key", n1.key,
                                             "--tls-server-name", "n0"};
  std::vector<std::string> tls_op = tls_node;
  tls_op[5] = op.cert;
  tls_op[7] = op.key;
  const std::string root = cluster.node(0).root();
  EXPECT_EQ(RunCli(root, {"--endpoint", address, "ls"}).code, 3);
  {
    std::vector<std::string> a = tls_node;
    a.insert(a.end(), {"ls", "--job", "j"});
    const CliRun run = RunCli(root, a);
    EXPECT_EQ(run.code, 0) << run.out;
  }
  {
    std::vector<std::string> a = tls_node;
    a.insert(a.end(), {"drop", "--job", "j", "--step", "1", "--yes"});
    const CliRun run = RunCli(root, a);
    EXPECT_EQ(run.code, 1) << run.out;
    EXPECT_NE(run.out.find("has no operator: name"), std::string::npos) << run.out;
  }
  {
    std::vector<std::string> a = tls_op;
    a.insert(a.end(), {"drop", "--job", "j", "--step", "1", "--yes"});
    const CliRun run = RunCli(root, a);
    EXPECT_EQ(run.code, 0) << run.out;
    EXPECT_NE(run.out.find("dropped 1 version"), std::string::npos) << run.out;
  }
  // The operator certificate names no node: the Peer service refuses it.
  EXPECT_FALSE(LogHas(cluster.node(0), "operator:alice, but it claims"));
}

}  // namespace
}  // namespace holdfast::testing
