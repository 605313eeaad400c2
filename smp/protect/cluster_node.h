// This daemon's part in its cluster (docs/cluster.md): the peer service,
// the protection rounds it coordinates and takes part in, the restore point,
// and rebuilding its own chunks after it lost them.
//
//   poll thread (every poll_interval)
//     GroupState of every member --> coordinator? --> Protect (all members,
//     in parallel) --> Conclude(protected, manifest | abandoned)
//     restore point per job (one member per group)
//     missing a protected version the group holds? --> Rebuild
//   gRPC handler threads (Peer service)
//     Protect    runs this member's roles (RunRoles: send data pieces,
//                encode its stripe, store parity) over the Transport
//     ReadChunks sends chunks of a protected version to a rebuilding peer
//     Conclude   records the group manifest, frees what is superseded
//
// Threading: `mu_` guards the tables below; SnapshotManager is only touched
// on its loop (OnLoop posts and waits, and is never called with `mu_` held,
// because the manager's hooks take `mu_` on the loop). Blocking gRPC and
// UCX waits happen on the poll thread and handler threads only.
#ifndef HOLDFAST_SMP_PROTECT_CLUSTER_NODE_H_
#define HOLDFAST_SMP_PROTECT_CLUSTER_NODE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catalog/catalog.h"
#include "cluster/cluster_config.h"
#include "core/event_loop.h"
#include "core/snapshot_manager.h"
#include "holdfast/ec/codec.h"
#include "holdfast/ec/layout.h"
#include "holdfast/v1/admin.pb.h"
#include "holdfast/v1/peer.grpc.pb.h"
#include "holdfast/v1/snapshot.pb.h"
#include "protect/data_path.h"
#include "protect/scrub.h"
#include "transport/transport.h"

namespace holdfast::smp {

struct ClusterNodeOptions {
  ClusterConfig config;
  std::string node_id;
  uint64_t incarnation = 0;
  std::chrono::milliseconds poll_interval{100};
  std::chrono::milliseconds rpc_timeout{2000};      // control calls
  std::chrono::milliseconds round_timeout{120000};  // one protection round or rebuild read
  int windows_in_flight = 8;                        // per stream
  // Where the addresses peers announced (a replacement elsewhere) are kept
  // across restarts: <state_dir>/peer-addresses. "" = not kept.
  std::string state_dir;
  // Mutual TLS (peer_tls.h): the credentials of every channel to a peer.
  // Set: channels check that a peer's certificate names its node id, and
  // the Peer service accepts a call only from the node the caller's
  // certificate names (the server must then use PeerTls credentials too).
  // Null: insecure channels, callers not authenticated.
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials;
};

// The hash of what every member must agree on: cluster id, code, window,
// nodes (id, domain), in order. Not addresses: a replacement may run at
// another address than the lost node did (LearnAddress).
uint64_t ConfigHash(const ClusterConfig& config);

// The 64-bit UCX tag of one window: round or transfer id, stripe, chunk,
// window (docs/cluster.md, "Peers").
uint64_t WindowTag(uint32_t id, int stripe, int chunk, uint64_t window);

class ClusterNode final : public v1::Peer::Service {
 public:
  // The node must be listed in the cluster file. `manager`, `catalog`,
  // `loop` and `transport` must outlive the node. Takes the manager's
  // recovered protection records.
  static Result<std::unique_ptr<ClusterNode>> Create(ClusterNodeOptions options,
                                                     SnapshotManager* manager, Catalog* catalog,
                                                     EventLoop* loop, Transport* transport);
  ~ClusterNode() override;  // Stop()s

  // Installs the manager's hooks (restore point, protected versions) and
  // starts the poll thread. Call after the control server serves.
  void Start();
  // Stops the poll thread and waits for rounds and rebuilds on it.
  void Stop();

  // Hooks for the manager (any thread; take mu_ briefly).
  int64_t RestorePoint(const std::string& job_id) const;
  bool IsProtected(const std::string& job_id, int64_t step) const;
  void FillStatus(v1::ClusterStatus* out) const;

  // `holdfast verify` (verify_chunks.cc): the versions `req` names, each
  // checked on this node (items, and its chunks when protected) and, when
  // protected, on every other member of the group (VerifyChunks). Blocks:
  // call it on a worker thread (VerifyRunner), never on the loop.
  Result<v1::VerifyResponse> Verify(const v1::VerifyRequest& req, const std::atomic<bool>& cancel);

  // ---- the background scrub (scrub_repair.cc, scrub.h) ----
  // The protected versions held here, each with the bytes its scrub reads
  // (this node's data and parity chunks).
  std::vector<std::pair<std::pair<std::string, int64_t>, uint64_t>> ScrubTargets() const;
  // Checks each of this node's chunks of (job, step) against the group
  // manifest; a bad one is rebuilt from k good chunks of its stripe read from
  // the group, checked, and rewritten in place. A data chunk that cannot be
  // repaired retires the local version (MarkDamaged). Blocks (reads every
  // byte, paced by `hooks`): the scrub thread only. NOT_FOUND when the
  // version is not protected here.
  Result<ScrubTally> ScrubProtected(const std::string& job_id, int64_t step,
                                    const ScrubHooks& hooks);

  const std::string& control_address() const { return me_.control; }

  // ---- the Peer service ----
  grpc::Status Hello(grpc::ServerContext* ctx, const v1::HelloRequest* req,
                     v1::HelloResponse* resp) override;
  grpc::Status GroupState(grpc::ServerContext* ctx, const v1::GroupStateRequest* req,
                          v1::GroupStateResponse* resp) override;
  grpc::Status Protect(grpc::ServerContext* ctx, const v1::ProtectRequest* req,
                       v1::ProtectResponse* resp) override;
  grpc::Status Conclude(grpc::ServerContext* ctx, const v1::ConcludeRequest* req,
                        v1::ConcludeResponse* resp) override;
  grpc::Status GetManifest(grpc::ServerContext* ctx, const v1::GetManifestRequest* req,
                           v1::GetManifestResponse* resp) override;
  grpc::Status ReadChunks(grpc::ServerContext* ctx, const v1::ReadChunksRequest* req,
                          v1::ReadChunksResponse* resp) override;
  grpc::Status VerifyChunks(grpc::ServerContext* ctx, const v1::VerifyChunksRequest* req,
                            v1::NodeVerifyReport* resp) override;

 private:
  // A protected version this member holds: the group manifest and its
  // parity; `pinned`: its local version is pinned for it.
  struct Protection {
    v1::ProtectionRecord record;
    std::shared_ptr<Segment> parity;  // null without parity bytes; shared with readers
    bool pinned = false;
  };
  using Key = std::pair<std::string, int64_t>;  // job, step

  // A round this member took part in and that has not been concluded.
  struct PendingRound {
    std::string job_id;
    int64_t step = 0;
    std::shared_ptr<Segment> parity;
    bool pinned = false;
    std::chrono::steady_clock::time_point finished;
    // When this node first saw k other members hold the step (they got
    // their Conclude): this one's is then overdue after rpc_timeout (the
    // coordinator died, or its call failed) and a rebuild may record it.
    std::optional<std::chrono::steady_clock::time_point> others_hold_since;
    // When this node first saw any other member hold the step: its Conclude
    // came there, so this one is overdue after rpc_timeout and the member
    // concludes the round itself (ConcludeOverdueRounds).
    std::optional<std::chrono::steady_clock::time_point> held_elsewhere_since;
  };

  struct Peer {
    int node = 0;  // index into config.nodes
    std::string id;
    // Guarded by ClusterNode::mu_ (replaced when the peer announces a new
    // address; callers take a reference with StubOf):
    std::shared_ptr<v1::Peer::Stub> stub;
    std::string control;  // the address `stub` talks to
    // Guarded by ClusterNode::mu_:
    uint64_t incarnation = 0;
    std::string ucx_address;
    Transport::EndpointId endpoint = 0;
    bool up = false;
    bool rebuilding = false;
    std::string refusal;  // the last Hello refusal logged (once each)
  };

  ClusterNode(ClusterNodeOptions options, SnapshotManager* manager, Catalog* catalog,
              EventLoop* loop, Transport* transport);

  // Runs `fn` on the manager's loop and returns its result (never call with
  // mu_ held, never from the loop).
  template <typename Fn>
  auto OnLoop(Fn fn) -> decltype(fn());

  v1::PeerIdentity Identity() const;
  // `node_id` (the caller a request names) must be in the cluster file and,
  // with TLS, named by the caller's certificate: PERMISSION_DENIED naming the
  // mismatch otherwise.
  Status CheckCaller(const grpc::ServerContext* ctx, const std::string& node_id) const;
  // A refused caller, logged once per distinct reason.
  grpc::Status Refuse(const Status& why) const;
  // A stub to the peer `node_id` at `address` (TLS: its certificate must
  // name `node_id`, whatever the address).
  std::shared_ptr<v1::Peer::Stub> MakeStub(const std::string& address,
                                           const std::string& node_id) const;
  std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout) const;
  Peer& PeerAt(int position);  // of my group
  std::shared_ptr<v1::Peer::Stub> StubOf(Peer& peer) const;
  // ---- addresses (addresses.cc) ----
  // A Hello from `from` that passed the checks: if it announces another
  // control address than the one used for it, use that from now on and keep
  // it in <state_dir>/peer-addresses.
  void LearnAddress(const v1::PeerIdentity& from);
  // The file's overrides (id -> control, data); empty without state_dir.
  static std::map<std::string, std::pair<std::string, std::string>> LoadAddresses(
      const std::string& state_dir);
  void SaveAddresses(std::map<std::string, std::pair<std::string, std::string>> addresses);
  // Hello if the peer has no endpoint yet (or `force`): its identity,
  // incarnation and a UCX endpoint. Marks it up or down.
  Result<Transport::EndpointId> EnsureEndpoint(Peer& peer, bool force = false);
  void MarkDown(Peer& peer, const Status& why);
  // The peer's UCX worker address (Hello first if needed, or if `force`).
  Result<std::string> PeerAddress(Peer& peer, bool force = false);

  // ---- poll thread ----
  void PollLoop();
  void PollOnce();
  // Coordinates the group's protection of `job` if a newer step is complete
  // on every member that has ranks of it.
  void MaybeProtect(const std::string& job_id,
                    const std::vector<std::optional<v1::GroupStateResponse>>& states);
  Status RunRound(const std::string& job_id, int64_t step,
                  const std::vector<std::optional<v1::GroupStateResponse>>& states);
  void UpdateRestorePoints(const std::vector<std::optional<v1::GroupStateResponse>>& states);
  // The restore point of `job` from every group's protected steps;
  // `my_group`'s from `states`, the others over gRPC.
  int64_t ComputeRestorePoint(const std::string& job_id, int world_size,
                              const std::vector<std::optional<v1::GroupStateResponse>>& states,
                              std::optional<int64_t> assume_protected);
  void MaybeRebuild(const std::vector<std::optional<v1::GroupStateResponse>>& states);
  // The manifest of (job, step) from the first of `holders` that gives it
  // (of round `round_id` only, when given).
  std::optional<v1::ProtectionRecord> FetchManifest(const std::string& job_id, int64_t step,
                                                    ec::NodeMask holders,
                                                    std::optional<uint32_t> round_id = {});
  // Pending rounds whose step another member has held, as protected, for
  // longer than rpc_timeout: the coordinator concluded the round there but
  // this member's Conclude never came (the coordinator died between its
  // Conclude calls, or the call failed). Records each with the manifest a
  // holder recorded, when it is this very round's. `holders`: job -> step ->
  // the other members that hold it.
  void ConcludeOverdueRounds(
      const std::map<std::string, std::map<int64_t, ec::NodeMask>>& holders);
  // The newest step of `job` protected here (-1: none), and whether a round
  // of it is under way here (running, awaiting a Conclude not yet overdue,
  // or being recorded): then a step missing here is not a loss. `held`:
  // step -> the other members that hold it. Caller holds mu_.
  std::pair<int64_t, bool> ProtectedHereLocked(const std::string& job,
                                               const std::map<int64_t, ec::NodeMask>& held);

  // ---- member roles (member_roles.cc) ----
  // `cancelled` says the coordinator abandoned the round.
  Result<v1::ProtectResponse> RunRoles(const v1::ProtectRequest& req,
                                       const std::function<bool()>& cancelled);
  // Sends to the worker at `address` over endpoints of its own.
  Status SendChunks(const v1::ReadChunksRequest& req, const std::string& address,
                    uint64_t* bytes_sent);
  // Records a concluded round (manifest + parity) and frees protections
  // that `keep` does not name and that are older than `step`.
  Status RecordProtected(const v1::ConcludeRequest& req);
  void FreeProtection(Protection p, const Key& key);
  // Frees a round's parity and unpins its data: the round expired, was not
  // protected, or a rebuild or a job's end superseded it. Not under mu_.
  void ReleasePendingRound(const PendingRound& pr);
  void ExpirePendingRounds();

  // ---- verify (verify_chunks.cc) ----
  // This member's check of (job, step): items of its local version, and
  // its chunks (data pieces, parity) against the group manifest when the
  // version is protected. NOT_FOUND when it holds neither.
  Result<v1::NodeVerifyReport> VerifyMine(const std::string& job_id, int64_t step,
                                          const std::atomic<bool>& cancel);

  // ---- scrub repair (scrub_repair.cc) ----
  // Rebuilds this node's chunk of `stripe` from k chunks of the others
  // (ReadChunks, each checked against the manifest; a bad or unreachable
  // one is replaced by another), checks it, and writes it into `data` or
  // `parity` at its place. DATA_LOSS when fewer than k good chunks remain.
  // With `check_only`, nothing is written: the decoded chunk (for a parity
  // chunk: the parity re-encoded from the data chunks) is compared with the
  // stored one; FAILED_PRECONDITION when they differ.
  Status RepairChunk(const v1::ProtectionRecord& record, const ec::GroupLayout& layout, int stripe,
                     const protect_internal::DataBuffer& data, uint8_t* parity,
                     const std::atomic<bool>& cancel, std::string* how, bool check_only = false);

  // ---- rebuild (rebuild.cc) ----
  // Rebuilds this node's chunks of (job, step) from the survivors in
  // `holders` (positions that have it protected and answered).
  Status Rebuild(const v1::ProtectionRecord& manifest, ec::NodeMask holders);

  const ClusterNodeOptions options_;
  SnapshotManager* const manager_;
  Catalog* const catalog_;
  EventLoop* const loop_;
  Transport* const transport_;
  std::vector<Group> groups_;
  Placement placement_;
  NodeSpec me_;
  uint64_t config_hash_ = 0;
  std::vector<std::unique_ptr<Peer>> members_;   // my group, by position (me included)
  // Endpoints of rounds and transfers (data_path.h), reused across them.
  std::unique_ptr<protect_internal::EndpointPool> endpoint_pool_;
  std::map<int, std::unique_ptr<Peer>> others_;  // nodes of other groups, by node index

  mutable std::mutex mu_;
  std::map<Key, Protection> protections_;              // guarded by mu_
  std::map<uint32_t, PendingRound> pending_;           // guarded by mu_
  std::set<Key> protecting_;                           // rounds running here, guarded by mu_
  // Concludes being recorded: out of pending_, not yet in protections_.
  // Guarded by mu_.
  std::multiset<Key> recording_;
  // Serializes recording a protection (catalog, then protections_): a
  // round's Conclude and a rebuild of the same step must not both record it.
  std::mutex record_mu_;
  std::map<std::string, int64_t> restore_points_;      // guarded by mu_
  std::map<std::string, std::chrono::steady_clock::time_point> backoff_;  // poll thread only
  bool rebuilding_ = false;                            // guarded by mu_
  uint64_t rounds_protected_ = 0;                      // guarded by mu_
  uint64_t rounds_failed_ = 0;                         // guarded by mu_
  uint64_t versions_rebuilt_ = 0;                      // guarded by mu_
  std::string last_error_;                             // guarded by mu_
  std::set<Key> reported_losses_;                      // guarded by mu_
  mutable std::set<std::string> refusals_logged_;      // guarded by mu_
  // Addresses peers announced that differ from the cluster file: id ->
  // (control, data). Guarded by mu_.
  std::map<std::string, std::pair<std::string, std::string>> address_overrides_;
  std::mutex save_mu_;  // serializes writing the overrides file
  grpc::ChannelArguments channel_args_;
  // Rebuild progress and history, for GetStatus.cluster.rebuild (`holdfast
  // recover`); guarded by mu_.
  struct RebuildProgress {
    bool compared = false;  // MaybeRebuild compared with >= k members once
    std::map<std::string, int64_t> missing;      // job -> newest rebuildable step missing here
    std::map<std::string, std::string> lost;     // job -> why it cannot be rebuilt
    std::string job_id;
    int64_t step = -1;
    uint64_t bytes_done = 0, bytes_total = 0;
    int64_t started_us = 0;
    uint64_t bytes_rebuilt = 0, micros = 0;
    int64_t first_started_us = 0, last_finished_us = 0;
    std::string last_failure;
    bool last_failed = false;
  };
  RebuildProgress rebuild_progress_;                   // guarded by mu_

  std::mutex pace_mu_;
  std::chrono::steady_clock::time_point pace_next_;  // token bucket, guarded by pace_mu_

  // Client calls of the poll thread that may last long (Protect,
  // ReadChunks): Stop() cancels them. Guarded by calls_mu_.
  std::mutex calls_mu_;
  std::set<grpc::ClientContext*> long_calls_;
  void TrackCall(grpc::ClientContext* ctx, bool add);

  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::thread poller_;

  friend class RoundExecutor;
  friend class RebuildExecutor;

 public:
  // Waits until `bytes` may be sent under protect_bandwidth (any thread).
  void Pace(uint64_t bytes);
  const std::vector<Group>& groups() const { return groups_; }
  const ClusterConfig& config() const { return options_.config; }
  int position() const { return placement_.position; }
};

}  // namespace holdfast::smp

namespace holdfast::smp {

template <typename Fn>
auto ClusterNode::OnLoop(Fn fn) -> decltype(fn()) {
  using R = decltype(fn());
  std::packaged_task<R()> task(std::move(fn));
  std::future<R> result = task.get_future();
  loop_->Post([&task] { task(); });
  return result.get();
}

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_PROTECT_CLUSTER_NODE_H_
