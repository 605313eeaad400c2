// The cluster file and EC group formation (docs/cluster.md).
//
// Every node reads the same cluster file and computes the same groups: a
// pure function of the file. Nodes are spread over failure domains so that
// no two members of a group share one; a file that does not allow that is an
// error naming the domain.
//
// Thread-safety: pure functions and values.
#ifndef HOLDFAST_SMP_CLUSTER_CLUSTER_CONFIG_H_
#define HOLDFAST_SMP_CLUSTER_CLUSTER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "holdfast/ec/status.h"

namespace holdfast::smp {

struct NodeSpec {
  std::string id;
  std::string control;  // host:port of the peer gRPC service
  std::string data;     // host:port of the UCX listener
  std::string domain;   // failure domain (rack, switch); empty: the node alone
};

struct CodeSpec {
  enum class Mode { kErasure, kReplicate };
  Mode mode = Mode::kErasure;
  int k = 2;       // kErasure: data chunks per stripe
  int m = 1;       // kErasure: parity chunks per stripe (losses tolerated)
  int copies = 0;  // kReplicate: full copies on peers (losses tolerated)

  // Members per group: k + m, or copies + 1.
  int group_size() const { return mode == Mode::kErasure ? k + m : copies + 1; }
  int losses_tolerated() const { return mode == Mode::kErasure ? m : copies; }
};

struct ClusterConfig {
  std::string cluster_id;
  CodeSpec code;
  uint64_t window_bytes = uint64_t{1} << 20;  // transfer / encode window
  uint64_t protect_bandwidth = 0;             // bytes per second per node; 0: no cap
  int protect_nice = 5;  // added to the nice value of protection threads (not rebuilds)
  std::vector<NodeSpec> nodes;                // in file order
};

// Parses and validates a cluster file's text; `source` names it in errors
// ("cluster FILE, line L: ..."). INVALID_ARGUMENT for anything malformed.
Result<ClusterConfig> ParseClusterConfig(const std::string& text, const std::string& source);
Result<ClusterConfig> LoadClusterFile(const std::string& path);

struct Group {
  int index = 0;
  std::vector<int> members;  // indices into ClusterConfig::nodes, by position in the group
};

// The groups of `config`: nodes.size() / group_size groups. Domains are taken
// largest first (ties in order of first appearance), each domain's nodes
// dealt to consecutive groups, so every group gets at most one node per
// domain; positions follow the order nodes were dealt. INVALID_ARGUMENT when
// the node count is not a multiple of the group size, or a domain has more
// nodes than there are groups.
Result<std::vector<Group>> FormGroups(const ClusterConfig& config);

struct Placement {
  int group = 0;
  int position = 0;
};
// Where node `id` sits; NOT_FOUND if the file does not list it.
Result<Placement> Locate(const ClusterConfig& config, const std::vector<Group>& groups,
                         const std::string& id);

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CLUSTER_CLUSTER_CONFIG_H_
