// A local holdfast cluster for tests: N holdfastd processes on loopback,
// each with its own control port, socket, data directory and shared-memory
// directory, sharing one cluster file; data moves over UCX (tcp on lo, the
// network path of these machines).
//
//   TestCluster --writes--> <tmp>/hf-cluster-<pid>-<n>/cluster.yaml (and pki/ with TLS)
//        |  owns Daemon n0 .. n(N-1)  (tests/smp/harness.h)
//        |  Save / Verify through holdfast_snapshot_tool, one rank per node
//        |  WaitRestorePoint / WaitServes / Status through GetStatus and List
//
// Thread-safety: none; use from the test's main thread.
#ifndef HOLDFAST_TESTS_SMP_CLUSTER_HARNESS_H_
#define HOLDFAST_TESTS_SMP_CLUSTER_HARNESS_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness.h"

namespace holdfast::testing {

struct ClusterOptions {
  int nodes = 3;
  int k = 2;
  int m = 1;
  int copies = 0;  // > 0: replication mode with this many copies (k, m unused)
  std::string window = "256KiB";
  std::string memory_budget = "512MiB";
  std::string protect_bandwidth;  // empty: no cap
  std::string cluster_id = "test";
  std::map<std::string, std::string> env = {};  // for every daemon
  // Mutual TLS between peers (docs/security.md): a throwaway CA and one
  // certificate per node (SAN DNS:<id>) made with the openssl CLI; every
  // daemon gets --tls-ca/--tls-cert/--tls-key.
  bool tls = false;
};

// Certificate files made by TestCluster::IssueCert.
struct CertFiles {
  std::string ca;    // the issuing CA's certificate
  std::string cert;
  std::string key;
};

class TestCluster {
 public:
  explicit TestCluster(ClusterOptions options = {});
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  int size() const { return static_cast<int>(daemons_.size()); }
  Daemon& node(int i) { return *daemons_[i]; }
  static std::string NodeId(int i) { return "n" + std::to_string(i); }
  const std::string& cluster_file() const { return cluster_file_; }
  // Node i's control address (peer and remote Admin service), HOST:PORT.
  std::string ControlAddress(int i) const { return "127.0.0.1:" + std::to_string(ports_[2 * i]); }
  // Rewrites the cluster file (e.g. to make one node disagree).
  void WriteClusterFile(const std::string& text, const std::string& path);
  std::string ClusterFileText() const;

  // A throwaway CA named `ca` (made on first use) issues a certificate for
  // `subject` (its CN) with the subjectAltName `san` ("DNS:n0",
  // "URI:operator:alice"; "" for none), in <root>/pki. Empty paths and a
  // failed test when openssl fails.
  CertFiles IssueCert(const std::string& subject, const std::string& san,
                      const std::string& ca = "ca");

  ::testing::AssertionResult StartAll();
  // SIGKILL node i; with `wipe`, its shared memory and data directory go
  // too (a machine lost with its RAM); Start(i) then brings a replacement.
  void Kill(int i, bool wipe);
  ::testing::AssertionResult Start(int i);

  // The snapshot tool for rank `rank` of a job of `world` ranks, running on
  // node rank % size() (one rank per node, in order).
  ToolOptions Tool(const std::string& job, int rank, int world, uint64_t item_bytes,
                   uint64_t seed = 7) const;
  // Every rank saves steps first..last (ranks run concurrently).
  ::testing::AssertionResult Save(const std::string& job, int world, int64_t first, int64_t last,
                                  uint64_t item_bytes);
  // Every rank restores `step` (nullopt: the restore point, via "latest")
  // and checks every byte.
  ::testing::AssertionResult Verify(const std::string& job, int world,
                                    std::optional<int64_t> step, uint64_t item_bytes);

  std::optional<v1::GetStatusResponse> Status(int i);
  // The restore point node i reports for `job` (-1: none; nullopt: no answer).
  std::optional<int64_t> RestorePoint(int i, const std::string& job);
  // Until every running node reports a restore point >= step.
  ::testing::AssertionResult WaitRestorePoint(const std::string& job, int64_t step,
                                              std::chrono::milliseconds timeout = 60s);
  // Until node i holds its share of `step` of `job` (or a newer step),
  // protected, and is not rebuilding.
  ::testing::AssertionResult WaitHolds(int i, const std::string& job, int64_t step,
                                       std::chrono::milliseconds timeout = 60s);
  // Until node i's cluster status reports `text` in last_error.
  ::testing::AssertionResult WaitError(int i, const std::string& text,
                                       std::chrono::milliseconds timeout = 60s);

 private:
  ClusterOptions options_;
  std::string root_;
  std::string cluster_file_;
  std::vector<int> ports_;
  std::string pki_;  // <root>/pki
  std::vector<std::unique_ptr<Daemon>> daemons_;
};

}  // namespace holdfast::testing

#endif  // HOLDFAST_TESTS_SMP_CLUSTER_HARNESS_H_
