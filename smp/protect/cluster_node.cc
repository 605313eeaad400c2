// ClusterNode: peers, the Peer service, the coordinator and the restore
// point. See cluster_node.h and docs/cluster.md.
#include "core/failpoint.h"
#include "protect/cluster_node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "holdfast/proto/status_map.h"
#include "protect/peer_tls.h"

namespace holdfast::smp {

using proto::FromGrpc;
using proto::ToGrpc;
using Clock = std::chrono::steady_clock;

namespace {

uint64_t Fnv1a(uint64_t h, std::string_view s) {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  h ^= 0xff;  // field separator
  h *= 1099511628211ull;
  return h;
}

uint32_t RandomId() {
  static thread_local std::mt19937 rng(std::random_device{}());
  uint32_t id = 0;
  while (id == 0) id = rng();
  return id;
}

grpc::Status ToGrpcStatus(const Status& s) { return ToGrpc(s); }

// The protected steps a group's members agree on, with the ranks the group
// covers: a step counts when every member that answered reports it and at
// least `min_answers` answered.
std::map<int64_t, std::set<int>> AgreedProtected(
    const std::string& job_id, const std::vector<std::optional<v1::GroupStateResponse>>& states,
    int min_answers) {
  std::map<int64_t, int> seen;
  std::map<int64_t, std::set<int>> ranks;
  int answered = 0;
  for (const auto& st : states) {
    if (!st) continue;
    ++answered;
    for (const auto& js : st->jobs()) {
      if (js.job_id() != job_id) continue;
      for (const auto& p : js.protected_()) {
        ++seen[p.step()];
        ranks[p.step()].insert(p.ranks().begin(), p.ranks().end());
      }
    }
  }
  std::map<int64_t, std::set<int>> out;
  if (answered < min_answers) return out;
  for (const auto& [step, count] : seen) {
    if (count == answered) out[step] = ranks[step];
  }
  return out;
}

}  // namespace

uint64_t ConfigHash(const ClusterConfig& c) {
  uint64_t h = 1469598103934665603ull;
  h = Fnv1a(h, c.cluster_id);
  h = Fnv1a(h, c.code.mode == CodeSpec::Mode::kErasure ? "ec" : "replicate");
  h = Fnv1a(h, std::to_string(c.code.k) + "," + std::to_string(c.code.m) + "," +
                   std::to_string(c.code.copies) + "," + std::to_string(c.window_bytes));
  for (const NodeSpec& n : c.nodes) {
    h = Fnv1a(h, n.id);
    h = Fnv1a(h, n.domain);
  }
  return h;
}

uint64_t WindowTag(uint32_t id, int stripe, int chunk, uint64_t window) {
  return (uint64_t{id} << 32) | (uint64_t(stripe & 0x3f) << 26) | (uint64_t(chunk & 0x3f) << 20) |
         (window & 0xfffff);
}

// ---- construction --------------------------------------------------------------------

ClusterNode::ClusterNode(ClusterNodeOptions options, SnapshotManager* manager, Catalog* catalog,
                         EventLoop* loop, Transport* transport)
    : options_(std::move(options)),
      manager_(manager),
      catalog_(catalog),
      loop_(loop),
      transport_(transport),
      endpoint_pool_(std::make_unique<protect_internal::EndpointPool>(transport)) {}

Result<std::unique_ptr<ClusterNode>> ClusterNode::Create(ClusterNodeOptions options,
                                                         SnapshotManager* manager,
                                                         Catalog* catalog, EventLoop* loop,
                                                         Transport* transport) {
  std::unique_ptr<ClusterNode> node(
      new ClusterNode(std::move(options), manager, catalog, loop, transport));
  const ClusterConfig& config = node->options_.config;
  HOLDFAST_ASSIGN_OR_RETURN(node->groups_, FormGroups(config));
  HOLDFAST_ASSIGN_OR_RETURN(node->placement_,
                            Locate(config, node->groups_, node->options_.node_id));
  const Group& group = node->groups_[node->placement_.group];
  node->me_ = config.nodes[group.members[node->placement_.position]];
  node->config_hash_ = ConfigHash(config);
  grpc::ChannelArguments& args = node->channel_args_;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Peers that announced another address than the file's (a replacement
  // elsewhere) are reached there.
  node->address_overrides_ = LoadAddresses(node->options_.state_dir);
  auto make_peer = [&](int node_index) {
    auto peer = std::make_unique<Peer>();
    peer->node = node_index;
    peer->id = config.nodes[node_index].id;
    peer->control = config.nodes[node_index].control;
    if (auto it = node->address_overrides_.find(peer->id);
        it != node->address_overrides_.end() && peer->id != node->me_.id) {
      spdlog::info("peer {} is at {} (announced; the cluster file says {})", peer->id,
                   it->second.first, peer->control);
      peer->control = it->second.first;
    }
    peer->stub = node->MakeStub(peer->control, peer->id);
    return peer;
  };
  for (int idx : group.members) node->members_.push_back(make_peer(idx));
  for (const Group& g : node->groups_) {
    if (g.index == group.index) continue;
    for (int idx : g.members) node->others_[idx] = make_peer(idx);
  }
  for (RecoveredProtection& rp : manager->TakeRecoveredProtections()) {
    Protection p;
    p.record = std::move(rp.record);
    if (rp.parity.valid()) p.parity = std::make_shared<Segment>(std::move(rp.parity));
    p.pinned = rp.pinned;
    const Key key{p.record.job_id(), p.record.step()};
    node->protections_[key] = std::move(p);
  }
  spdlog::info("cluster {}: node {} is position {} of group {} ({} nodes, {}), {} protections",
               config.cluster_id, node->me_.id, node->placement_.position, node->placement_.group,
               config.nodes.size(),
               config.code.mode == CodeSpec::Mode::kErasure
                   ? std::to_string(config.code.k) + "+" + std::to_string(config.code.m)
                   : "replicate x" + std::to_string(config.code.copies),
               node->protections_.size());
  return node;
}

ClusterNode::~ClusterNode() { Stop(); }

void ClusterNode::Start() {
  loop_->Post([this] {
    manager_->SetRestorePoint([this](const std::string& job) { return RestorePoint(job); });
    manager_->SetIsProtected(
        [this](const std::string& job, int64_t step) { return IsProtected(job, step); });
  });
  poller_ = std::thread([this] { PollLoop(); });
}

void ClusterNode::Stop() {
  if (!poller_.joinable()) return;
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  {
    // A round or rebuild in progress ends now rather than at its deadline.
    std::lock_guard lock(calls_mu_);
    for (grpc::ClientContext* ctx : long_calls_) ctx->TryCancel();
  }
  poller_.join();
}

void ClusterNode::TrackCall(grpc::ClientContext* ctx, bool add) {
  std::lock_guard lock(calls_mu_);
  if (add) {
    long_calls_.insert(ctx);
    if (stop_) ctx->TryCancel();
  } else {
    long_calls_.erase(ctx);
  }
}

// ---- hooks ------------------------------------------------------------------------------

int64_t ClusterNode::RestorePoint(const std::string& job_id) const {
  std::lock_guard lock(mu_);
  auto it = restore_points_.find(job_id);
  return it == restore_points_.end() ? -1 : it->second;
}

bool ClusterNode::IsProtected(const std::string& job_id, int64_t step) const {
  std::lock_guard lock(mu_);
  return protections_.count({job_id, step}) > 0;
}

void ClusterNode::FillStatus(v1::ClusterStatus* out) const {
  std::lock_guard lock(mu_);
  out->set_cluster_id(options_.config.cluster_id);
  out->set_group(placement_.group);
  out->set_position(placement_.position);
  out->set_incarnation(options_.incarnation);
  const CodeSpec& code = options_.config.code;
  const bool ec_mode = code.mode == CodeSpec::Mode::kErasure;
  out->set_k(ec_mode ? code.k : 1);
  out->set_m(ec_mode ? code.m : code.copies);
  for (const auto& peer : members_) {
    auto* ps = out->add_members();
    ps->set_node_id(peer->id);
    const bool self = peer->id == me_.id;
    ps->set_up(self || peer->up);
    ps->set_incarnation(self ? options_.incarnation : peer->incarnation);
    ps->set_rebuilding(self ? rebuilding_ : peer->rebuilding);
    ps->set_control_address(peer->control);
  }
  out->set_rebuilding(rebuilding_);
  uint64_t parity = 0;
  std::map<std::string, int64_t> newest;
  for (const auto& [key, p] : protections_) {
    if (p.parity) parity += p.parity->bytes();
    newest[key.first] = std::max(newest.count(key.first) ? newest[key.first] : -1, key.second);
  }
  out->set_parity_bytes(parity);
  out->set_rounds_protected(rounds_protected_);
  out->set_rounds_failed(rounds_failed_);
  out->set_versions_rebuilt(versions_rebuilt_);
  out->set_last_error(last_error_);
  std::set<std::string> jobs;
  for (const auto& [job, step] : newest) jobs.insert(job);
  for (const auto& [job, step] : restore_points_) jobs.insert(job);
  for (const std::string& job : jobs) {
    auto* jp = out->add_jobs();
    jp->set_job_id(job);
    jp->set_newest_protected_step(newest.count(job) ? newest[job] : -1);
    jp->set_restore_point(restore_points_.count(job) ? restore_points_.at(job) : -1);
  }
  const RebuildProgress& rp = rebuild_progress_;
  v1::RebuildStatus* rb = out->mutable_rebuild();
  if (rebuilding_) {
    rb->set_state(v1::RebuildStatus::REBUILD_STATE_RUNNING);
  } else if (!rp.lost.empty()) {
    rb->set_state(v1::RebuildStatus::REBUILD_STATE_DATA_LOSS);
  } else if (!rp.compared) {
    rb->set_state(v1::RebuildStatus::REBUILD_STATE_WAITING);
  } else if (!rp.missing.empty()) {
    rb->set_state(rp.last_failed ? v1::RebuildStatus::REBUILD_STATE_RETRYING
                                 : v1::RebuildStatus::REBUILD_STATE_WAITING);
  } else {
    rb->set_state(v1::RebuildStatus::REBUILD_STATE_IDLE);
  }
  rb->set_job_id(rp.job_id);
  rb->set_step(rp.step);
  rb->set_bytes_done(rp.bytes_done);
  rb->set_bytes_total(rp.bytes_total);
  rb->set_started_unix_micros(rp.started_us);
  rb->set_versions_missing(static_cast<uint32_t>(rp.missing.size()));
  rb->set_versions_rebuilt(versions_rebuilt_);
  rb->set_bytes_rebuilt(rp.bytes_rebuilt);
  rb->set_rebuild_micros(rp.micros);
  rb->set_first_started_unix_micros(rp.first_started_us);
  rb->set_last_finished_unix_micros(rp.last_finished_us);
  for (const auto& [job, why] : rp.lost) rb->add_unrecoverable(why);
  rb->set_last_failure(rp.last_failure);
}

// ---- peers ------------------------------------------------------------------------------

v1::PeerIdentity ClusterNode::Identity() const {
  v1::PeerIdentity id;
  id.set_cluster_id(options_.config.cluster_id);
  id.set_config_hash(config_hash_);
  id.set_node_id(me_.id);
  id.set_incarnation(options_.incarnation);
  id.set_ucx_address(transport_->address());
  id.set_control_address(me_.control);
  id.set_data_address(me_.data);
  return id;
}

Status ClusterNode::CheckCaller(const grpc::ServerContext* ctx, const std::string& node_id) const {
  if (options_.channel_credentials) {
    // The server required and verified a certificate; the caller is the
    // node it names, whatever its requests claim.
    const std::vector<std::string> names = PeerNames(*ctx);
    if (names.empty()) {
      // Not reached through the TLS port (the handshake requires one).
      return Status(StatusCode::kPermissionDenied, "a call claiming to come from node " + node_id +
                                                       " without a client certificate");
    }
    if (std::find(names.begin(), names.end(), node_id) == names.end()) {
      return Status(StatusCode::kPermissionDenied,
                    "the caller's certificate names " + JoinNames(names) +
                        ", but it claims to be node " + node_id + " (from " + ctx->peer() + ")");
    }
  }
  for (const NodeSpec& n : options_.config.nodes) {
    if (n.id == node_id) return Status::Ok();
  }
  return Status(StatusCode::kPermissionDenied,
                "node " + node_id + " is not in cluster " + options_.config.cluster_id);
}

grpc::Status ClusterNode::Refuse(const Status& why) const {
  bool first = false;
  {
    std::lock_guard lock(mu_);
    // Bounded: a hostile caller could vary the reason forever.
    if (refusals_logged_.size() < 256) first = refusals_logged_.insert(why.message()).second;
  }
  if (first) spdlog::warn("refusing a peer call: {}", why.ToString());
  return ToGrpcStatus(why);
}

std::shared_ptr<v1::Peer::Stub> ClusterNode::MakeStub(const std::string& address,
                                                      const std::string& node_id) const {
  if (!options_.channel_credentials) {
    return v1::Peer::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), channel_args_));
  }
  // The name the server's certificate must carry is the node id, not the
  // host of the address: a node is who its certificate says, wherever it runs.
  grpc::ChannelArguments args = channel_args_;
  args.SetSslTargetNameOverride(node_id);
  return v1::Peer::NewStub(grpc::CreateCustomChannel(address, options_.channel_credentials, args));
}

std::unique_ptr<grpc::ClientContext> ClusterNode::Context(std::chrono::milliseconds timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

ClusterNode::Peer& ClusterNode::PeerAt(int position) { return *members_[position]; }

std::shared_ptr<v1::Peer::Stub> ClusterNode::StubOf(Peer& peer) const {
  std::lock_guard lock(mu_);
  return peer.stub;
}

void ClusterNode::MarkDown(Peer& peer, const Status& why) {
  Transport::EndpointId old = 0;
  std::string address;
  {
    std::lock_guard lock(mu_);
    if (peer.up) spdlog::warn("peer {} is down: {}", peer.id, why.ToString());
    peer.up = false;
    // A control call that timed out says the peer is slow (a stalled event
    // loop, page faults, an overloaded machine), not that it is gone: its
    // data endpoint stays, or transfers in flight with it would fail with
    // it. A dead or restarted peer fails its endpoint by itself, and a new
    // incarnation replaces it (EnsureEndpoint).
    if (why.code() == StatusCode::kDeadlineExceeded) return;
    old = peer.endpoint;
    peer.endpoint = 0;
    address = peer.ucx_address;
  }
  if (old != 0) transport_->Disconnect(old);
  if (!address.empty()) endpoint_pool_->Forget(address);
}

Result<Transport::EndpointId> ClusterNode::EnsureEndpoint(Peer& peer, bool force) {
  {
    std::lock_guard lock(mu_);
    if (peer.endpoint != 0 && !force) return peer.endpoint;
  }
  v1::HelloRequest req;
  *req.mutable_from() = Identity();
  v1::HelloResponse resp;
  auto ctx = Context(options_.rpc_timeout);
  // Through a channel still backing off from an earlier failure: wait for
  // it to connect (a peer asking us to send to it is up).
  ctx->set_wait_for_ready(force);
  Status s = FromGrpc(StubOf(peer)->Hello(ctx.get(), req, &resp));
  if (s.ok() && resp.me().node_id() != peer.id) {
    s = Status::FailedPrecondition("the node at " + options_.config.nodes[peer.node].control +
                                   " is " + resp.me().node_id() + ", not " + peer.id);
  }
  if (!s.ok()) {
    if (s.code() == StatusCode::kFailedPrecondition || s.code() == StatusCode::kPermissionDenied) {
      // A refusal, not an outage: the operator must fix a configuration.
      std::lock_guard lock(mu_);
      if (peer.refusal != s.message()) {
        peer.refusal = s.message();
        last_error_ = "peer " + peer.id + " refused this node: " + s.message();
        spdlog::error("peer {} refused this node: {}", peer.id, s.message());
      }
    }
    MarkDown(peer, s);
    return s.WithContext("hello to " + peer.id);
  }
  Transport::EndpointId old = 0;
  Transport::EndpointId ep = 0;
  {
    std::lock_guard lock(mu_);
    if (peer.endpoint != 0 && peer.ucx_address == resp.me().ucx_address()) {
      peer.up = true;
      return peer.endpoint;
    }
    old = peer.endpoint;
  }
  if (old != 0) transport_->Disconnect(old);
  std::string old_address;
  {
    std::lock_guard lock(mu_);
    old_address = peer.ucx_address;
  }
  if (!old_address.empty() && old_address != resp.me().ucx_address()) {
    endpoint_pool_->Forget(old_address);
  }
  HOLDFAST_ASSIGN_OR_RETURN(ep, transport_->Connect(resp.me().ucx_address()));
  std::lock_guard lock(mu_);
  if (peer.incarnation != 0 && peer.incarnation != resp.me().incarnation()) {
    spdlog::warn("peer {} has a new incarnation {:016x} (was {:016x}): its memory was lost",
                 peer.id, resp.me().incarnation(), peer.incarnation);
  }
  peer.incarnation = resp.me().incarnation();
  peer.ucx_address = resp.me().ucx_address();
  peer.endpoint = ep;
  peer.up = true;
  return ep;
}

Result<std::string> ClusterNode::PeerAddress(Peer& peer, bool force) {
  HOLDFAST_RETURN_IF_ERROR(EnsureEndpoint(peer, force).status());
  std::lock_guard lock(mu_);
  return peer.ucx_address;
}

// ---- the Peer service ---------------------------------------------------------------

grpc::Status ClusterNode::Hello(grpc::ServerContext* ctx, const v1::HelloRequest* req,
                                v1::HelloResponse* resp) {
  const v1::PeerIdentity& from = req->from();
  // With TLS, first: who the caller is (its certificate), then what it says.
  if (options_.channel_credentials) {
    if (Status s = CheckCaller(ctx, from.node_id()); !s.ok()) return Refuse(s);
  }
  if (from.cluster_id() != options_.config.cluster_id) {
    return ToGrpcStatus(Status::FailedPrecondition(
        "node " + from.node_id() + " belongs to cluster '" + from.cluster_id() + "', this is '" +
        options_.config.cluster_id + "'"));
  }
  if (from.config_hash() != config_hash_) {
    spdlog::warn("refusing node {}: its cluster file hash {:016x} differs from ours {:016x}",
                 from.node_id(), from.config_hash(), config_hash_);
    return ToGrpcStatus(Status::FailedPrecondition(
        fmt::format("node {} has cluster file hash {:016x}, this node {:016x}: every node must "
                    "read the same cluster file",
                    from.node_id(), from.config_hash(), config_hash_)));
  }
  if (Status s = CheckCaller(ctx, from.node_id()); !s.ok()) return Refuse(s);
  // Authenticated when TLS is on (checked above): only then may a Hello
  // move a peer to another address.
  LearnAddress(from);
  *resp->mutable_me() = Identity();
  return grpc::Status::OK;
}

grpc::Status ClusterNode::GroupState(grpc::ServerContext* ctx, const v1::GroupStateRequest* req,
                                     v1::GroupStateResponse* resp) {
  if (Status s = CheckCaller(ctx, req->from_node()); !s.ok()) return Refuse(s);
  auto summaries = OnLoop([&] { return manager_->Summaries(req->job_id()); });
  resp->set_node_id(me_.id);
  resp->set_incarnation(options_.incarnation);
  resp->set_ucx_address(transport_->address());
  std::map<std::string, v1::JobGroupState*> by_job;
  for (const auto& s : summaries) {
    auto* js = resp->add_jobs();
    js->set_job_id(s.job_id);
    js->set_world_size(s.world_size);
    for (int r : s.local_ranks) js->add_local_ranks(r);
    for (const auto& c : s.complete) {
      auto* si = js->add_complete();
      si->set_step(c.step);
      si->set_data_bytes(c.bytes);
      for (int r : c.ranks) si->add_ranks(r);
    }
    js->set_protecting_step(-1);
    by_job[s.job_id] = js;
  }
  std::lock_guard lock(mu_);
  resp->set_rebuilding(rebuilding_);
  for (const auto& [key, p] : protections_) {
    if (!req->job_id().empty() && key.first != req->job_id()) continue;
    auto it = by_job.find(key.first);
    if (it == by_job.end()) {
      auto* js = resp->add_jobs();
      js->set_job_id(key.first);
      js->set_world_size(p.record.world_size());
      js->set_protecting_step(-1);
      it = by_job.emplace(key.first, js).first;
    }
    auto* si = it->second->add_protected_();
    si->set_step(key.second);
    for (const auto& mem : p.record.members()) {
      for (const auto& rk : mem.ranks()) si->add_ranks(rk.rank());
    }
  }
  for (const auto& key : protecting_) {
    if (auto it = by_job.find(key.first); it != by_job.end()) {
      it->second->set_protecting_step(key.second);
    }
  }
  std::map<std::string, const Protection*> newest;
  for (const auto& [key, p] : protections_) newest[key.first] = &p;  // ascending steps
  for (const auto& [job, p] : newest) {
    auto it = by_job.find(job);
    if (it == by_job.end()) continue;
    for (const auto& mem : p->record.members()) {
      if (mem.ranks_size() > 0) it->second->add_members_with_ranks(mem.node_id());
    }
  }
  return grpc::Status::OK;
}

grpc::Status ClusterNode::Protect(grpc::ServerContext* ctx, const v1::ProtectRequest* req,
                                  v1::ProtectResponse* resp) {
  if (Status s = CheckCaller(ctx, req->from_node()); !s.ok()) return Refuse(s);
  const Key key{req->job_id(), req->step()};
  // A new round of the job means the coordinator is done with any earlier
  // one this member still holds unconcluded (it died, or the Conclude was
  // lost): free those.
  std::vector<PendingRound> dead;
  {
    std::lock_guard lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.job_id == key.first) {
        dead.push_back(std::move(it->second));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const PendingRound& pr : dead) ReleasePendingRound(pr);
  {
    std::lock_guard lock(mu_);
    for (const auto& running : protecting_) {
      if (running.first == key.first) {
        return ToGrpcStatus(Status::Aborted("job " + key.first + " step " +
                                            std::to_string(running.second) +
                                            " is being protected here already"));
      }
    }
    if (rebuilding_) return ToGrpcStatus(Status::Unavailable("this node is rebuilding"));
    protecting_.insert(key);
  }
  auto result = RunRoles(*req, [ctx] { return ctx->IsCancelled(); });
  {
    std::lock_guard lock(mu_);
    protecting_.erase(key);
  }
  if (!result.ok()) return ToGrpcStatus(result.status());
  *resp = std::move(result).value();
  return grpc::Status::OK;
}

grpc::Status ClusterNode::Conclude(grpc::ServerContext* ctx, const v1::ConcludeRequest* req,
                                   v1::ConcludeResponse*) {
  if (Status s = CheckCaller(ctx, req->from_node()); !s.ok()) return Refuse(s);
  HOLDFAST_FAILPOINT("protect.conclude_received");
  return ToGrpcStatus(RecordProtected(*req));
}

grpc::Status ClusterNode::GetManifest(grpc::ServerContext* ctx, const v1::GetManifestRequest* req,
                                      v1::GetManifestResponse* resp) {
  if (Status s = CheckCaller(ctx, req->from_node()); !s.ok()) return Refuse(s);
  std::lock_guard lock(mu_);
  const Protection* found = nullptr;
  for (const auto& [key, p] : protections_) {
    if (key.first != req->job_id()) continue;
    if (req->step() < 0 || key.second == req->step()) found = &p;
  }
  if (found == nullptr) {
    return ToGrpcStatus(Status::NotFound("job " + req->job_id() + " step " +
                                         std::to_string(req->step()) + " is not protected here"));
  }
  *resp->mutable_manifest() = found->record;
  resp->mutable_manifest()->clear_parity_segment();
  resp->mutable_manifest()->clear_parity_bytes();
  return grpc::Status::OK;
}

grpc::Status ClusterNode::ReadChunks(grpc::ServerContext* ctx, const v1::ReadChunksRequest* req,
                                     v1::ReadChunksResponse* resp) {
  if (Status s = CheckCaller(ctx, req->from_node()); !s.ok()) return Refuse(s);
  Peer* requester = nullptr;
  for (auto& peer : members_) {
    if (peer->id == req->from_node()) requester = peer.get();
  }
  if (requester == nullptr || requester->id == me_.id) {
    return ToGrpcStatus(Status(StatusCode::kPermissionDenied, req->from_node() + " is not in this group"));
  }
  // The requester may be a replacement with a new address: always re-hello.
  auto address = PeerAddress(*requester, /*force=*/true);
  if (!address.ok()) return ToGrpcStatus(address.status());
  uint64_t sent = 0;
  Status s = SendChunks(*req, *address, &sent);
  resp->set_bytes_sent(sent);
  return ToGrpcStatus(s);
}

// ---- pacing -------------------------------------------------------------------------------

void ClusterNode::Pace(uint64_t bytes) {
  const uint64_t rate = options_.config.protect_bandwidth;
  if (rate == 0) return;
  Clock::time_point when;
  {
    std::lock_guard lock(pace_mu_);
    const auto now = Clock::now();
    if (pace_next_ < now) pace_next_ = now;
    when = pace_next_;
    pace_next_ += std::chrono::nanoseconds(bytes * 1'000'000'000ull / rate);
  }
  std::this_thread::sleep_until(when);
}

// ---- the poll thread ------------------------------------------------------------------

void ClusterNode::PollLoop() {
  while (!stop_) {
    PollOnce();
    std::unique_lock lock(stop_mu_);
    stop_cv_.wait_for(lock, options_.poll_interval, [this] { return stop_.load(); });
  }
}

void ClusterNode::PollOnce() {
  ExpirePendingRounds();
  // Every member's state, this node's included (through its own service:
  // one code path).
  const int n = static_cast<int>(members_.size());
  std::vector<std::optional<v1::GroupStateResponse>> states(n);
  std::vector<std::future<void>> calls;
  for (int p = 0; p < n; ++p) {
    calls.push_back(std::async(std::launch::async, [this, p, &states] {
      Peer& peer = PeerAt(p);
      if (peer.id != me_.id) {
        // Connect first so that a peer that came back is seen with its
        // (possibly new) UCX address.
        bool have;
        {
          std::lock_guard lock(mu_);
          have = peer.endpoint != 0;
        }
        if (!have && !EnsureEndpoint(peer).ok()) return;
      }
      v1::GroupStateRequest req;
      req.set_from_node(me_.id);
      v1::GroupStateResponse resp;
      auto ctx = Context(options_.rpc_timeout);
      Status s = FromGrpc(StubOf(peer)->GroupState(ctx.get(), req, &resp));
      if (!s.ok()) {
        if (peer.id != me_.id) MarkDown(peer, s);
        return;
      }
      if (peer.id != me_.id) {
        bool restarted;
        {
          std::lock_guard lock(mu_);
          restarted = resp.incarnation() != peer.incarnation ||
                      (!resp.ucx_address().empty() && resp.ucx_address() != peer.ucx_address);
        }
        // A new process (a new incarnation when its memory was lost too):
        // reconnect with its new address. A restart between two polls is
        // seen only here, and the old address would fail every round. (An
        // older daemon sends no address.)
        if (restarted && !EnsureEndpoint(peer, /*force=*/true).ok()) return;
      }
      {
        std::lock_guard lock(mu_);
        peer.up = true;
        peer.rebuilding = resp.rebuilding();
      }
      states[p] = std::move(resp);
    }));
  }
  for (auto& c : calls) c.wait();
  if (stop_) return;

  MaybeRebuild(states);
  UpdateRestorePoints(states);

  // Coordinator: the lowest member that answered.
  int coordinator = -1;
  for (int p = 0; p < n; ++p) {
    if (states[p]) {
      coordinator = p;
      break;
    }
  }
  if (coordinator != position()) return;
  std::set<std::string> jobs;
  for (const auto& st : states) {
    if (!st) continue;
    for (const auto& js : st->jobs()) jobs.insert(js.job_id());
  }
  for (const std::string& job : jobs) {
    if (stop_) return;
    MaybeProtect(job, states);
  }
}

void ClusterNode::MaybeProtect(const std::string& job_id,
                               const std::vector<std::optional<v1::GroupStateResponse>>& states) {
  if (auto it = backoff_.find(job_id); it != backoff_.end() && Clock::now() < it->second) return;
  const int n = static_cast<int>(states.size());
  // Every member must answer and none may be rebuilding or protecting.
  std::optional<std::set<int64_t>> common;  // complete on every member with ranks
  // Only steps newer than any member's newest protected one: a member that
  // lacks a protected version rebuilds it, the group never protects that
  // step again (which could replace good records with a member's hole).
  int64_t newest_protected = -1;
  std::map<int64_t, std::set<int>> protected_ranks;  // ranks each protected step covers
  std::map<int64_t, std::set<int>> complete_ranks;   // ranks whose parts are complete, by step
  std::set<std::string> need_ranks;  // members that had ranks in a protected version
  std::set<std::string> have_ranks;
  for (int p = 0; p < n; ++p) {
    if (!states[p] || states[p]->rebuilding()) return;
    for (const auto& js : states[p]->jobs()) {
      if (js.job_id() != job_id) continue;
      if (js.protecting_step() >= 0) return;
      for (const auto& pr : js.protected_()) {
        newest_protected = std::max(newest_protected, pr.step());
        protected_ranks[pr.step()].insert(pr.ranks().begin(), pr.ranks().end());
      }
      for (const auto& c : js.complete()) {
        complete_ranks[c.step()].insert(c.ranks().begin(), c.ranks().end());
      }
      need_ranks.insert(js.members_with_ranks().begin(), js.members_with_ranks().end());
      if (js.local_ranks_size() == 0) continue;
      have_ranks.insert(states[p]->node_id());
      std::set<int64_t> steps;
      for (const auto& c : js.complete()) steps.insert(c.step());
      if (!common) {
        common = steps;
      } else {
        std::set<int64_t> both;
        std::set_intersection(common->begin(), common->end(), steps.begin(), steps.end(),
                              std::inserter(both, both.end()));
        common = std::move(both);
      }
    }
  }
  for (const std::string& node : need_ranks) {
    if (!have_ranks.count(node)) return;  // its ranks are not back yet (a replacement)
  }
  if (!common || common->empty()) return;
  const int64_t candidate = *common->rbegin();
  // A member whose trainer had not registered yet looked like a member
  // without ranks, so the newest protected step may cover fewer ranks than
  // the group now has: protect it again, with more data, never less.
  const bool covers_more =
      candidate == newest_protected &&
      std::includes(complete_ranks[candidate].begin(), complete_ranks[candidate].end(),
                    protected_ranks[candidate].begin(), protected_ranks[candidate].end()) &&
      complete_ranks[candidate].size() > protected_ranks[candidate].size();
  if (candidate < newest_protected || (candidate == newest_protected && !covers_more)) return;
  const auto t0 = Clock::now();
  Status s = RunRound(job_id, candidate, states);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::lock_guard lock(mu_);
  if (s.ok()) {
    ++rounds_protected_;
    backoff_.erase(job_id);
    spdlog::info("group {}: job {} step {} protected in {:.1f} ms", placement_.group, job_id,
                 candidate, ms);
  } else {
    ++rounds_failed_;
    last_error_ = s.ToString();
    backoff_[job_id] = Clock::now() + std::chrono::seconds(1);
    spdlog::warn("group {}: protecting job {} step {} failed after {:.1f} ms: {}",
                 placement_.group, job_id, candidate, ms, s.ToString());
  }
}

Status ClusterNode::RunRound(const std::string& job_id, int64_t step,
                             const std::vector<std::optional<v1::GroupStateResponse>>& states) {
  const int n = static_cast<int>(states.size());
  const CodeSpec& code = options_.config.code;
  v1::ProtectRequest req;
  req.set_from_node(me_.id);
  req.set_round_id(RandomId());
  req.set_job_id(job_id);
  req.set_step(step);
  req.set_group(placement_.group);
  const bool replicate = code.mode == CodeSpec::Mode::kReplicate;
  req.set_k(replicate ? 1 : code.k);
  req.set_m(replicate ? code.copies : code.m);
  req.set_replicate(replicate);
  req.set_alignment(4096);
  req.set_window_bytes(options_.config.window_bytes);
  req.set_deadline_ms(static_cast<uint32_t>(options_.round_timeout.count()));
  int world_size = 0;
  for (int p = 0; p < n; ++p) {
    req.add_member_nodes(PeerAt(p).id);
    uint64_t bytes = 0;
    for (const auto& js : states[p]->jobs()) {
      if (js.job_id() != job_id) continue;
      world_size = std::max(world_size, js.world_size());
      for (const auto& c : js.complete()) {
        if (c.step() == step) bytes = c.data_bytes();
      }
    }
    req.add_data_bytes(bytes);
  }
  req.set_world_size(world_size);

  std::vector<Result<v1::ProtectResponse>> results(n, Status::Unavailable("not called"));
  {
    // The first member to fail cancels the others' calls: their roles stop
    // at once instead of waiting for windows that will never come.
    std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
    for (int p = 0; p < n; ++p) {
      contexts.push_back(Context(options_.round_timeout + options_.rpc_timeout));
    }
    std::atomic<bool> failed{false};
    std::vector<std::future<void>> calls;
    for (int p = 0; p < n; ++p) {
      calls.push_back(std::async(std::launch::async, [&, p] {
        v1::ProtectResponse resp;
        TrackCall(contexts[p].get(), true);
        Status s = FromGrpc(StubOf(PeerAt(p))->Protect(contexts[p].get(), req, &resp));
        TrackCall(contexts[p].get(), false);
        results[p] = s.ok() ? Result<v1::ProtectResponse>(std::move(resp))
                            : Result<v1::ProtectResponse>(s.WithContext(PeerAt(p).id));
        if (!s.ok() && !failed.exchange(true)) {
          for (int q = 0; q < n; ++q) {
            if (q != p) contexts[q]->TryCancel();
          }
        }
      }));
    }
    for (auto& c : calls) c.wait();
  }
  Status failure;
  for (const auto& r : results) {
    if (!r.ok() && (failure.ok() || failure.code() == StatusCode::kCancelled)) failure = r.status();
  }
  v1::ConcludeRequest conclude;
  conclude.set_from_node(me_.id);
  conclude.set_round_id(req.round_id());
  conclude.set_job_id(job_id);
  conclude.set_step(step);
  if (failure.ok()) {
    v1::ProtectionRecord& m = *conclude.mutable_manifest();
    m.set_job_id(job_id);
    m.set_step(step);
    m.set_round_id(req.round_id());
    m.set_group(placement_.group);
    m.set_k(req.k());
    m.set_m(req.m());
    m.set_replicate(replicate);
    m.set_alignment(req.alignment());
    m.set_world_size(world_size);
    m.set_protected_unix_micros(std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
    for (int p = 0; p < n; ++p) {
      auto* mem = m.add_members();
      mem->set_node_id(PeerAt(p).id);
      mem->set_data_bytes(req.data_bytes(p));
      *mem->mutable_ranks() = results[p]->ranks();
    }
    // chunk_crcs[r * n + c] = the CRC reported by the holder of chunk c of stripe r.
    m.mutable_chunk_crcs()->Resize(n * n, 0);
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) {
        const int holder = (r + c) % n;
        if (results[holder]->chunk_crcs_size() != n) {
          failure = Status::Internal("member " + PeerAt(holder).id + " reported " +
                                     std::to_string(results[holder]->chunk_crcs_size()) +
                                     " chunk checksums");
          break;
        }
        m.set_chunk_crcs(r * n + c, results[holder]->chunk_crcs(r));
      }
    }
  }
  conclude.set_protected_(failure.ok());
  if (failure.ok()) {
    const int64_t rp = ComputeRestorePoint(job_id, world_size, states, step);
    // Keep the new step and, until it is the restore point, the versions
    // that are or may be (another group lagging, or unreachable just now).
    conclude.add_keep_steps(step);
    if (rp != step) {
      const int64_t current = RestorePoint(job_id);
      if (rp >= 0) conclude.add_keep_steps(rp);
      if (current >= 0 && current != rp) conclude.add_keep_steps(current);
    }
  }
  // Conclude with every member that finished its roles (the others cleaned
  // up on their own failure).
  std::vector<std::future<void>> calls;
  for (int p = 0; p < n; ++p) {
    if (!results[p].ok()) continue;
    calls.push_back(std::async(std::launch::async, [&, p] {
      v1::ConcludeResponse resp;
      auto ctx = Context(options_.rpc_timeout);
      Status s = FromGrpc(StubOf(PeerAt(p))->Conclude(ctx.get(), conclude, &resp));
      if (!s.ok()) {
        spdlog::warn("conclude of job {} step {} at {}: {} (it will rebuild what it lacks)",
                     job_id, step, PeerAt(p).id, s.ToString());
      }
    }));
  }
  for (auto& c : calls) c.wait();
  return failure;
}

// ---- the restore point ----------------------------------------------------------------

int64_t ClusterNode::ComputeRestorePoint(
    const std::string& job_id, int world_size,
    const std::vector<std::optional<v1::GroupStateResponse>>& states,
    std::optional<int64_t> assume_protected) {
  if (world_size <= 0) return -1;
  const int k = options_.config.code.mode == CodeSpec::Mode::kErasure ? options_.config.code.k : 1;
  std::map<int64_t, std::set<int>> covered = AgreedProtected(job_id, states, k);
  if (assume_protected) {
    for (const auto& st : states) {
      if (!st) continue;
      for (const auto& js : st->jobs()) {
        if (js.job_id() != job_id) continue;
        for (const auto& c : js.complete()) {
          if (c.step() == *assume_protected) {
            covered[c.step()].insert(c.ranks().begin(), c.ranks().end());
          }
        }
      }
    }
  }
  // Other groups: every member's state, the same agreement rule.
  for (const Group& g : groups_) {
    if (g.index == placement_.group) continue;
    std::vector<std::optional<v1::GroupStateResponse>> gstates;
    for (int idx : g.members) {
      v1::GroupStateRequest req;
      req.set_from_node(me_.id);
      req.set_job_id(job_id);
      v1::GroupStateResponse resp;
      auto ctx = Context(options_.rpc_timeout);
      if (StubOf(*others_.at(idx))->GroupState(ctx.get(), req, &resp).ok()) {
        gstates.push_back(std::move(resp));
      } else {
        gstates.push_back(std::nullopt);
      }
    }
    for (const auto& [step, ranks] : AgreedProtected(job_id, gstates, k)) {
      covered[step].insert(ranks.begin(), ranks.end());
    }
  }
  int64_t best = -1;
  if (spdlog::should_log(spdlog::level::trace)) {
    std::string seen;
    for (const auto& [step, ranks] : covered) {
      seen += " " + std::to_string(step) + ":" + std::to_string(ranks.size()) + "ranks";
    }
    spdlog::trace("restore point of {} (world {}): protected steps{}", job_id, world_size, seen);
  }
  for (const auto& [step, ranks] : covered) {
    if (static_cast<int>(ranks.size()) == world_size && *ranks.begin() == 0 &&
        *ranks.rbegin() == world_size - 1) {
      best = step;
    }
  }
  return best;
}

void ClusterNode::UpdateRestorePoints(
    const std::vector<std::optional<v1::GroupStateResponse>>& states) {
  std::map<std::string, int> jobs;  // job -> world size
  for (const auto& st : states) {
    if (!st) continue;
    for (const auto& js : st->jobs()) jobs[js.job_id()] = std::max(jobs[js.job_id()], js.world_size());
  }
  for (const auto& [job, world] : jobs) {
    const int64_t rp = ComputeRestorePoint(job, world, states, std::nullopt);
    std::lock_guard lock(mu_);
    int64_t& cur = restore_points_.try_emplace(job, -1).first->second;
    if (rp > cur) {
      spdlog::info("job {}: restore point {} -> {}", job, cur, rp);
      cur = rp;
    }
  }
}

}  // namespace holdfast::smp
