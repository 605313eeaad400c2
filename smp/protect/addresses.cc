// Peers at another address than the cluster file says: a replacement node
// started elsewhere announces its control address in Hello; its peers use it
// from then on and keep it in <state_dir>/peer-addresses, so that a restart
// does not forget it. See docs/cli.md ("recover --address"). With mutual TLS
// (docs/security.md) only an authenticated Hello gets here: the caller's
// certificate names the node, and the new stub checks that the node at the
// new address holds a certificate naming it too.
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "protect/cluster_node.h"

namespace holdfast::smp {

namespace {

constexpr const char* kFileName = "peer-addresses";

}  // namespace

std::map<std::string, std::pair<std::string, std::string>> ClusterNode::LoadAddresses(
    const std::string& state_dir) {
  std::map<std::string, std::pair<std::string, std::string>> out;
  if (state_dir.empty()) return out;
  std::ifstream in(state_dir + "/" + kFileName);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, control, data;
    if (!(fields >> id >> control)) continue;  // blank or torn line: the file is rewritten whole
    fields >> data;
    out[id] = {control, data};
  }
  return out;
}

void ClusterNode::SaveAddresses(
    std::map<std::string, std::pair<std::string, std::string>> addresses) {
  if (options_.state_dir.empty()) return;
  std::lock_guard lock(save_mu_);
  const std::string path = options_.state_dir + "/" + kFileName;
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    for (const auto& [id, a] : addresses) out << id << " " << a.first << " " << a.second << "\n";
    out.close();
    if (!out) {
      spdlog::error("cannot write {}: announced peer addresses are not kept across a restart",
                    path + ".tmp");
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(path + ".tmp", path, ec);
  if (ec) spdlog::error("cannot rename {}.tmp: {}", path, ec.message());
}

void ClusterNode::LearnAddress(const v1::PeerIdentity& from) {
  if (from.control_address().empty() || from.node_id() == me_.id) return;
  Peer* peer = nullptr;
  for (auto& p : members_) {
    if (p->id == from.node_id()) peer = p.get();
  }
  for (auto& [idx, p] : others_) {
    if (p->id == from.node_id()) peer = p.get();
  }
  if (peer == nullptr) return;
  const NodeSpec& spec = options_.config.nodes[peer->node];
  std::string old;
  std::map<std::string, std::pair<std::string, std::string>> snapshot;
  {
    std::lock_guard lock(mu_);
    if (peer->control == from.control_address()) return;
    old = peer->control;
    peer->control = from.control_address();
    // Calls in flight keep the old stub (shared); new ones use the new one.
    peer->stub = MakeStub(peer->control, peer->id);
    if (from.control_address() == spec.control) {
      address_overrides_.erase(from.node_id());
    } else {
      address_overrides_[from.node_id()] = {from.control_address(), from.data_address()};
    }
    snapshot = address_overrides_;
  }
  spdlog::warn("peer {} announced the control address {} (was {}; cluster file {}): using it{}",
               from.node_id(), from.control_address(), old, spec.control,
               options_.state_dir.empty() ? "" : ", kept in " + options_.state_dir + "/" + kFileName);
  SaveAddresses(std::move(snapshot));
}

}  // namespace holdfast::smp
