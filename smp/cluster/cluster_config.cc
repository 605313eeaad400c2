#include "cluster/cluster_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <set>

#include "config/config.h"

namespace holdfast::smp {
namespace {

constexpr int kMaxK = 64;
constexpr int kMaxM = 8;
constexpr int kMaxCopies = 8;
constexpr uint64_t kWindowAlign = 4096;

// Errors name the file and the line of the offending node.
class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  Result<ClusterConfig> Parse(const std::string& text) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return Status::InvalidArgument("cluster " + source_ + ": " + e.what());
    }
    if (!root.IsMap()) return Error(root.Mark(), "the file must be a mapping");
    ClusterConfig c;
    try {
      for (const auto& entry : root) {
        const std::string key = entry.first.as<std::string>();
        const YAML::Node& value = entry.second;
        if (key == "cluster_id") {
          HOLDFAST_ASSIGN_OR_RETURN(c.cluster_id, Scalar(value, key));
        } else if (key == "code") {
          HOLDFAST_RETURN_IF_ERROR(ParseCode(value, &c.code));
        } else if (key == "window") {
          HOLDFAST_ASSIGN_OR_RETURN(c.window_bytes, Bytes(value, key));
        } else if (key == "protect_bandwidth") {
          HOLDFAST_ASSIGN_OR_RETURN(c.protect_bandwidth, Bytes(value, key));
        } else if (key == "protect_nice") {
          HOLDFAST_ASSIGN_OR_RETURN(c.protect_nice, Int(value, key));
          if (c.protect_nice < 0 || c.protect_nice > 19) {
            return Error(value.Mark(), "protect_nice must be in [0, 19]");
          }
        } else if (key == "nodes") {
          HOLDFAST_RETURN_IF_ERROR(ParseNodes(value, &c.nodes));
        } else {
          return Error(entry.first.Mark(), "unknown key '" + key + "'");
        }
      }
    } catch (const YAML::Exception& e) {
      return Error(e.mark, e.what());
    }
    HOLDFAST_RETURN_IF_ERROR(Validate(c, root.Mark()));
    return c;
  }

 private:
  Status Error(const YAML::Mark& mark, const std::string& what) const {
    std::string msg = "cluster " + source_;
    if (mark.line >= 0) msg += ", line " + std::to_string(mark.line + 1);
    return Status::InvalidArgument(msg + ": " + what);
  }

  Result<std::string> Scalar(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar() || n.Scalar().empty()) return Error(n.Mark(), key + " must be a non-empty string");
    return n.Scalar();
  }

  Result<int> Int(const YAML::Node& n, const std::string& key) const {
    int v = 0;
    if (!n.IsScalar() || !YAML::convert<int>::decode(n, v)) {
      return Error(n.Mark(), key + " must be an integer");
    }
    return v;
  }

  Result<uint64_t> Bytes(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar()) return Error(n.Mark(), key + " must be a size such as 1MiB");
    auto v = ParseByteSize(n.Scalar());
    if (!v.ok()) return Error(n.Mark(), key + ": " + v.status().message());
    return *v;
  }

  Status ParseCode(const YAML::Node& n, CodeSpec* code) const {
    if (!n.IsMap()) return Error(n.Mark(), "code must be a mapping like {k: 4, m: 2}");
    bool has_km = false;
    bool replicate = false;
    for (const auto& entry : n) {
      const std::string key = entry.first.as<std::string>();
      if (key == "k") {
        HOLDFAST_ASSIGN_OR_RETURN(code->k, Int(entry.second, "code.k"));
        has_km = true;
      } else if (key == "m") {
        HOLDFAST_ASSIGN_OR_RETURN(code->m, Int(entry.second, "code.m"));
        has_km = true;
      } else if (key == "mode") {
        HOLDFAST_ASSIGN_OR_RETURN(std::string mode, Scalar(entry.second, "code.mode"));
        if (mode == "replicate") {
          replicate = true;
        } else if (mode != "erasure") {
          return Error(entry.second.Mark(), "code.mode must be erasure or replicate");
        }
      } else if (key == "copies") {
        HOLDFAST_ASSIGN_OR_RETURN(code->copies, Int(entry.second, "code.copies"));
      } else {
        return Error(entry.first.Mark(), "unknown key 'code." + key + "'");
      }
    }
    code->mode = replicate ? CodeSpec::Mode::kReplicate : CodeSpec::Mode::kErasure;
    if (replicate) {
      if (has_km) return Error(n.Mark(), "code.k and code.m do not apply to mode replicate");
      if (code->copies < 1 || code->copies > kMaxCopies) {
        return Error(n.Mark(), "code.copies must be 1.." + std::to_string(kMaxCopies));
      }
    } else {
      if (code->copies != 0) return Error(n.Mark(), "code.copies applies only to mode replicate");
      if (code->k < 1 || code->m < 1 || code->m > kMaxM || code->k + code->m > kMaxK) {
        return Error(n.Mark(), "code needs 1 <= m <= " + std::to_string(kMaxM) + " and k + m <= " +
                                   std::to_string(kMaxK) + " (got k=" + std::to_string(code->k) +
                                   ", m=" + std::to_string(code->m) + ")");
      }
    }
    return Status::Ok();
  }

  Status ParseNodes(const YAML::Node& n, std::vector<NodeSpec>* nodes) {
    if (!n.IsSequence()) return Error(n.Mark(), "nodes must be a list");
    for (const YAML::Node& item : n) {
      if (!item.IsMap()) return Error(item.Mark(), "each node must be a mapping");
      NodeSpec node;
      for (const auto& entry : item) {
        const std::string key = entry.first.as<std::string>();
        std::string* field = key == "id"        ? &node.id
                             : key == "control" ? &node.control
                             : key == "data"    ? &node.data
                             : key == "domain"  ? &node.domain
                                                : nullptr;
        if (field == nullptr) return Error(entry.first.Mark(), "unknown node key '" + key + "'");
        HOLDFAST_ASSIGN_OR_RETURN(*field, Scalar(entry.second, "node " + key));
      }
      for (const auto& [name, value] : {std::pair{"id", &node.id}, std::pair{"control", &node.control},
                                        std::pair{"data", &node.data}}) {
        if (value->empty()) return Error(item.Mark(), std::string("node without ") + name);
      }
      for (const std::string* address : {&node.control, &node.data}) {
        if (!ValidAddress(*address)) {
          return Error(item.Mark(), "node " + node.id + ": '" + *address +
                                        "' is not host:port with a port in 1..65535");
        }
      }
      marks_.push_back(item.Mark());
      nodes->push_back(std::move(node));
    }
    return Status::Ok();
  }

  static bool ValidAddress(const std::string& a) {
    const size_t colon = a.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == a.size()) return false;
    const std::string port = a.substr(colon + 1);
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit)) return false;
    const int p = std::stoi(port);
    return p >= 1 && p <= 65535;
  }

  Status Validate(const ClusterConfig& c, const YAML::Mark& root) const {
    if (c.cluster_id.empty()) return Error(root, "cluster_id is required");
    if (c.nodes.empty()) return Error(root, "nodes is required");
    if (c.window_bytes < kWindowAlign || c.window_bytes % kWindowAlign != 0) {
      return Error(root, "window must be a positive multiple of 4 KiB");
    }
    std::map<std::string, size_t> ids;
    std::map<std::string, size_t> addresses;
    const bool any_domain = std::any_of(c.nodes.begin(), c.nodes.end(),
                                        [](const NodeSpec& n) { return !n.domain.empty(); });
    for (size_t i = 0; i < c.nodes.size(); ++i) {
      const NodeSpec& n = c.nodes[i];
      if (auto [it, fresh] = ids.emplace(n.id, i); !fresh) {
        return Error(marks_[i], "node id '" + n.id + "' is listed twice");
      }
      for (const std::string* a : {&n.control, &n.data}) {
        if (auto [it, fresh] = addresses.emplace(*a, i); !fresh) {
          return Error(marks_[i], "address " + *a + " of node " + n.id + " is also used by node " +
                                      c.nodes[it->second].id);
        }
      }
      if (any_domain && n.domain.empty()) {
        return Error(marks_[i], "node " + n.id + " has no domain, but other nodes do");
      }
    }
    return Status::Ok();
  }

  std::string source_;
  std::vector<YAML::Mark> marks_;  // per node, for errors found after parsing
};

}  // namespace

Result<ClusterConfig> ParseClusterConfig(const std::string& text, const std::string& source) {
  return Parser(source).Parse(text);
}

Result<ClusterConfig> LoadClusterFile(const std::string& path) {
  HOLDFAST_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
  return ParseClusterConfig(text, path);
}

Result<std::vector<Group>> FormGroups(const ClusterConfig& config) {
  const int n = config.code.group_size();
  const int total = static_cast<int>(config.nodes.size());
  if (total < n || total % n != 0) {
    return Status::InvalidArgument("cluster " + config.cluster_id + ": " + std::to_string(total) +
                                   " nodes do not form groups of " + std::to_string(n) +
                                   " (the node count must be a multiple of the group size)");
  }
  const int groups = total / n;
  // Domains in order of first appearance; a node without one is its own.
  std::vector<std::vector<int>> domains;
  std::map<std::string, size_t> domain_index;
  for (int i = 0; i < total; ++i) {
    const std::string& d = config.nodes[i].domain;
    if (d.empty()) {
      domains.push_back({i});
      continue;
    }
    auto [it, fresh] = domain_index.emplace(d, domains.size());
    if (fresh) domains.emplace_back();
    domains[it->second].push_back(i);
  }
  for (const auto& [name, index] : domain_index) {
    if (static_cast<int>(domains[index].size()) > groups) {
      return Status::InvalidArgument(
          "cluster " + config.cluster_id + ": domain " + name + " has " +
          std::to_string(domains[index].size()) + " nodes but there are only " +
          std::to_string(groups) + " groups, so two of them would share a group");
    }
  }
  std::stable_sort(domains.begin(), domains.end(),
                   [](const auto& a, const auto& b) { return a.size() > b.size(); });
  // Deal: a domain's nodes go to consecutive groups, wrapping around, so
  // (having at most `groups` nodes) it never lands twice in one group.
  std::vector<Group> out(groups);
  for (int g = 0; g < groups; ++g) out[g].index = g;
  int cursor = 0;
  for (const auto& domain : domains) {
    for (int node : domain) {
      out[cursor % groups].members.push_back(node);
      ++cursor;
    }
  }
  return out;
}

Result<Placement> Locate(const ClusterConfig& config, const std::vector<Group>& groups,
                         const std::string& id) {
  for (const Group& g : groups) {
    for (size_t p = 0; p < g.members.size(); ++p) {
      if (config.nodes[g.members[p]].id == id) return Placement{g.index, static_cast<int>(p)};
    }
  }
  return Status::NotFound("node " + id + " is not in cluster " + config.cluster_id);
}

}  // namespace holdfast::smp
