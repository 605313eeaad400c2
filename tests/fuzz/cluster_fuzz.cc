// Fuzz target: the cluster file (smp/cluster/cluster_config.cc), parsed,
// validated and turned into EC groups as holdfastd does at start-up
// (ParseClusterConfig, FormGroups, then Locate for every node). Input: the
// file's text. Errors are expected; a crash, an escaping exception, a
// sanitizer report or a broken invariant below is a bug.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "cluster/cluster_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace holdfast::smp;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = ParseClusterConfig(text, "fuzz-cluster.yaml");
  if (!config.ok()) return 0;
  auto groups = FormGroups(*config);
  if (!groups.ok()) return 0;
  // Every node in exactly one group, at one position.
  std::set<int> seen;
  for (const Group& g : *groups) {
    for (int idx : g.members) {
      if (idx < 0 || static_cast<size_t>(idx) >= config->nodes.size() || !seen.insert(idx).second) {
        std::abort();
      }
    }
  }
  if (seen.size() != config->nodes.size()) std::abort();
  for (const NodeSpec& node : config->nodes) {
    auto placement = Locate(*config, *groups, node.id);
    if (!placement.ok()) std::abort();
    const Group& g = (*groups)[static_cast<size_t>(placement->group)];
    if (config->nodes[static_cast<size_t>(g.members[static_cast<size_t>(placement->position)])].id !=
        node.id) {
      std::abort();
    }
  }
  return 0;
}
