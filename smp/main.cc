// holdfastd: the snapshot-management daemon of one training node.
//
// Thin: parses the configuration, opens the catalog and the segment store,
// recovers what a previous run committed, serves gRPC on a Unix socket, and
// shuts down on SIGTERM/SIGINT leaving every committed segment in place for
// the next start.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <grp.h>
#include <grpcpp/resource_quota.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "catalog/rocksdb_catalog.h"
#include "cluster/cluster_config.h"
#include "protect/cluster_node.h"
#include "protect/peer_tls.h"
#include "protect/scrub.h"
#include "transport/transport.h"
#include "config/config.h"
#include "core/event_loop.h"
#include "core/segment_store.h"
#include "core/snapshot_manager.h"
#include "lifecycle/notify.h"
#include "lifecycle/purge.h"
#include "server/admin_service.h"
#include "server/local_socket.h"
#include "server/snapshot_service.h"
#include "server/verify.h"

namespace {

using holdfast::Status;
namespace smp = holdfast::smp;

int Fail(const Status& status) {
  spdlog::critical("holdfastd: {}", status.ToString());
  return 1;
}

// Largest request the daemon parses: bounds the memory a hostile or broken
// client can make it allocate. A million items with long names fit.
constexpr int kMaxMessageBytes = 256 << 20;
// Request metadata (headers) per call: job id and secret fit many times.
constexpr int kMaxMetadataBytes = 8 << 10;

// This node's incarnation: a random id kept in the data directory. A node
// whose data directory (and memory) was lost comes back with a new one,
// which its peers see (docs/cluster.md).
holdfast::Result<uint64_t> LoadIncarnation(const std::string& data_dir) {
  const std::string path = data_dir + "/incarnation";
  {
    std::ifstream in(path);
    uint64_t id = 0;
    if (in >> std::hex >> id && id != 0) return id;
  }
  uint64_t id = 0;
  std::random_device rd;
  while (id == 0) id = (uint64_t{rd()} << 32) | rd();
  std::ofstream out(path + ".tmp", std::ios::trunc);
  out << std::hex << id << "\n";
  out.close();
  std::error_code ec;
  std::filesystem::rename(path + ".tmp", path, ec);
  if (!out || ec) return Status::Unavailable("cannot write " + path);
  return id;
}

// The group id of `name`; NOT_FOUND naming it when there is no such group.
holdfast::Result<gid_t> LookUpGroup(const std::string& name) {
  std::vector<char> buf(16384);
  struct group grp;
  struct group* found = nullptr;
  const int err = getgrnam_r(name.c_str(), &grp, buf.data(), buf.size(), &found);
  if (err != 0 || found == nullptr) {
    return Status::NotFound("socket_group: no group named \"" + name + "\"" +
                            (err != 0 ? std::string(": ") + strerror(err) : std::string()));
  }
  return found->gr_gid;
}

// grpc.max_connections, lowered to what the descriptor limit allows: each
// connection takes two descriptors (server/local_socket.h), and 512 stay for
// segment files, the catalog and peers. Raises the soft limit toward the hard
// one first (the systemd unit sets LimitNOFILE).
int ConnectionCap(int wanted) {
  constexpr rlim_t kReserve = 512;
  const rlim_t needed = 2 * static_cast<rlim_t>(wanted) + kReserve;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return wanted;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < needed) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? needed : std::min(needed, limit.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= needed) return wanted;
  const int cap = static_cast<int>(
      std::max<rlim_t>(1, (limit.rlim_cur > kReserve ? limit.rlim_cur - kReserve : 0) / 2));
  spdlog::warn("grpc.max_connections {} needs {} descriptors, but the limit is {} "
               "(LimitNOFILE / ulimit -n): at most {} connections",
               wanted, needed, static_cast<uint64_t>(limit.rlim_cur), cap);
  return cap;
}

// Limits on what gRPC may hold for the trainers' socket (docs/security.md).
void ApplyGrpcLimits(const smp::DaemonConfig& config, grpc::ServerBuilder& builder) {
  grpc::ResourceQuota quota("holdfastd");
  quota.Resize(config.grpc_memory_bytes);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, config.grpc_max_streams);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, kMaxMetadataBytes);
}

}  // namespace

int main(int argc, char** argv) {
  bool exit_now = false;
  bool purge = false;
  auto config_or = smp::ParseCommandLine(argc, argv, &exit_now, &purge);
  if (exit_now) return 0;
  if (!config_or.ok()) {
    fprintf(stderr, "%s\n", config_or.status().message().c_str());
    return 2;
  }
  const smp::DaemonConfig& config = *config_or;
  if (purge) {
    auto purged = smp::Purge(config);
    if (!purged.ok()) {
      fprintf(stderr, "holdfastd --purge: %s\n", purged.status().ToString().c_str());
      return 1;
    }
    printf("holdfastd --purge: %s\n", purged->ToString().c_str());
    return 0;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ " + config.node_id + " %v");

  // Signals are taken synchronously by this thread; block them before any
  // other thread starts so that none of them receives one.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) return Fail(Status::Unavailable("cannot create " + config.data_dir + ": " + ec.message()));
  std::filesystem::create_directories(config.shm_dir, ec);  // tmpfiles.d makes it under systemd
  const auto socket_dir = std::filesystem::path(config.socket_path).parent_path();
  if (!socket_dir.empty()) std::filesystem::create_directories(socket_dir, ec);

  auto catalog = smp::OpenRocksDbCatalog(config.data_dir + "/catalog");
  if (!catalog.ok()) return Fail(catalog.status());
  auto segments = smp::SegmentStore::Create({.directory = config.shm_dir,
                                             .prefix = config.shm_prefix,
                                             .mode = 0660,
                                             .prefault = true});
  if (!segments.ok()) return Fail(segments.status());
  const smp::ShmPages shm_pages = smp::DescribeShmPages(config.shm_dir);

  smp::WorkerPool workers(config.verify_threads);
  smp::EventLoop loop;
  smp::ManagerOptions options;
  options.node_id = config.node_id;
  options.memory_budget_bytes = config.memory_budget_bytes;
  options.retain_versions = config.retain_versions;
  options.spare_segments = config.spare_segments;
  options.max_items = config.max_items;
  options.write_timeout = std::chrono::seconds(config.write_timeout_seconds);
  options.lease_timeout = std::chrono::seconds(config.lease_timeout_seconds);
  auto verify = smp::ParseVerifyMode(config.verify);  // Validate() checked the name
  if (!verify.ok()) return Fail(verify.status().WithContext("snapshots.verify"));
  options.verify = *verify;
  auto quota = smp::JobQuotaBytes(config);  // Validate() checked it
  if (!quota.ok()) return Fail(quota.status().WithContext("jobs.quota"));
  options.job_quota_bytes = *quota;
  options.max_writes_per_job = config.max_writes_per_job;
  options.max_sessions_per_job = config.max_sessions_per_job;
  options.max_jobs = config.max_jobs;
  std::optional<gid_t> socket_gid;
  if (!config.socket_group.empty()) {
    auto gid = LookUpGroup(config.socket_group);
    if (!gid.ok()) return Fail(gid.status());
    socket_gid = *gid;
  }
  auto manager =
      std::make_unique<smp::SnapshotManager>(options, catalog->get(), &*segments, &workers, &loop);
  std::unique_ptr<smp::ClusterNode> cluster;
  // systemd Type=notify (deploy/holdfastd.service); does nothing without it.
  smp::ServiceNotifier notifier(
      {.post = [&loop](std::function<void()> task) { loop.Post(std::move(task)); },
       .describe = [&manager, &cluster] {
         holdfast::v1::GetStatusResponse st;
         (void)manager->GetStatus(&st);
         if (cluster) cluster->FillStatus(st.mutable_cluster());
         return smp::DescribeStatus(st);
       }});
  notifier.Starting("recovering: verifying the snapshots in " + config.shm_dir);
  const auto t_recover = std::chrono::steady_clock::now();
  auto recovered = manager->Recover();
  if (!recovered.ok()) return Fail(recovered.status().WithContext("recovery"));
  const double recover_ms = std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - t_recover)
                                .count();

  // Cluster mode: the UCX transport, this node's part in its group, and the
  // peer service on its control address.
  std::unique_ptr<smp::Transport> transport;
  std::unique_ptr<grpc::Server> peer_server;
  // The operator CLI's service (docs/cli.md): every call on the Unix socket,
  // read-only ones (no drop) on the control address too.
  smp::VerifyRunner verifier([&](const holdfast::v1::VerifyRequest& req, const std::atomic<bool>& c) {
    return cluster ? cluster->Verify(req, c)
                   : smp::VerifyStandalone(manager.get(), &loop, config.node_id, req, c);
  });
  std::unique_ptr<smp::Scrubber> scrubber;  // docs/reliability-scrub.md
  auto admin_status = [&cluster, &scrubber](holdfast::v1::GetStatusResponse* resp) {
    if (cluster) cluster->FillStatus(resp->mutable_cluster());
    if (scrubber) scrubber->FillStatus(resp->mutable_scrub());
  };
  smp::AdminService admin(manager.get(), &loop, &verifier,
                          {.local = true, .status_hook = admin_status, .operator_check = nullptr});
  // Mutual TLS on the control address (docs/security.md): off without
  // cluster.tls.
  auto peer_tls =
      smp::PeerTls::Load({.ca = config.tls_ca, .cert = config.tls_cert, .key = config.tls_key});
  if (!peer_tls.ok()) return Fail(peer_tls.status());
  if (*peer_tls && config.cluster_file.empty()) {
    return Fail(Status::InvalidArgument("cluster.tls is set but cluster.file is not"));
  }
  smp::AdminService remote_admin(
      manager.get(), &loop, &verifier,
      {.local = false,
       .status_hook = admin_status,
       .operator_check = [tls = *peer_tls != nullptr](const grpc::CallbackServerContext& ctx) {
         if (!tls) return std::string("the control address is not authenticated (no cluster.tls)");
         const std::vector<std::string> names = smp::PeerNames(ctx);
         if (smp::HasOperatorRole(names)) return std::string();
         return "the client certificate (" + smp::JoinNames(names) + ") has no " +
                smp::kOperatorPrefix + " name";
       }});
  if (!config.cluster_file.empty()) {
    auto cluster_config = smp::LoadClusterFile(config.cluster_file);
    if (!cluster_config.ok()) return Fail(cluster_config.status());
    auto incarnation = LoadIncarnation(config.data_dir);
    if (!incarnation.ok()) return Fail(incarnation.status());
    auto t = smp::Transport::Create({.tls = config.ucx_tls, .net_devices = config.ucx_net_devices});
    if (!t.ok()) return Fail(t.status().WithContext("UCX"));
    transport = std::move(t).value();
    smp::ClusterNodeOptions copts;
    copts.config = std::move(cluster_config).value();
    copts.node_id = config.node_id;
    copts.incarnation = *incarnation;
    copts.state_dir = config.data_dir;  // addresses peers announced (docs/cli.md)
    if (*peer_tls) {
      copts.channel_credentials = (*peer_tls)->ChannelCredentials();
    } else if (copts.config.nodes.size() > 1) {
      spdlog::warn(
          "cluster.tls is not set: peers on the control address are NOT authenticated; anyone "
          "who can reach a control port of the cluster and knows {} can pose as a member, read "
          "chunks and redirect a member's traffic (docs/security.md)",
          config.cluster_file);
    }
    auto node = smp::ClusterNode::Create(std::move(copts), manager.get(), catalog->get(), &loop,
                                         transport.get());
    if (!node.ok()) return Fail(node.status().WithContext("cluster " + config.cluster_file));
    cluster = std::move(node).value();
    grpc::ServerBuilder peer_builder;
    peer_builder.AddListeningPort(cluster->control_address(),
                                  *peer_tls ? (*peer_tls)->ServerCredentials()
                                            : grpc::InsecureServerCredentials());
    peer_builder.RegisterService(cluster.get());
    peer_builder.RegisterService(&remote_admin);
    peer_builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
    peer_server = peer_builder.BuildAndStart();
    if (!peer_server) {
      return Fail(Status::Unavailable("cannot listen on " + cluster->control_address()));
    }
  }

  std::filesystem::remove(config.socket_path, ec);  // a stale socket from a crash
  smp::SnapshotService service(manager.get(), &loop);
  scrubber = std::make_unique<smp::Scrubber>(
      smp::ScrubOptions{.enabled = config.scrub_enabled,
                        .rate_bytes_per_second = config.scrub_rate,
                        .interval = std::chrono::seconds(config.scrub_interval_seconds),
                        .node_id = config.node_id},
      manager.get(), &loop, cluster.get());
  service.SetStatusHook(admin_status);
  // The socket is ours, not gRPC's, so that its connections are counted and
  // capped (server/local_socket.h); gRPC serves each one it is handed.
  auto local_socket = smp::LocalSocket::Listen(
      {.path = config.socket_path,
       .group = socket_gid,
       .group_name = config.socket_group,
       .max_connections = ConnectionCap(config.grpc_max_connections)});
  if (!local_socket.ok()) return Fail(local_socket.status());
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  builder.RegisterService(&admin);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  ApplyGrpcLimits(config, builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    return Fail(Status::Unavailable("cannot start the gRPC server for unix:" + config.socket_path));
  }
  (*local_socket)->Start(server.get());
  loop.Post([&] { manager->StartTimers(); });
  if (cluster) cluster->Start();
  scrubber->Start();
  spdlog::info(
      "holdfastd serving on unix:{} (budget {:.1f} GiB, shm {}/{}-* in {}, catalog {}, "
      "verify {}, recovered in {:.1f} ms: {})",
      config.socket_path, config.memory_budget_bytes / double(1 << 30), config.shm_dir,
      config.shm_prefix, shm_pages.how, config.data_dir, config.verify, recover_ms,
      recovered->ToString());
  notifier.Ready(
      fmt::format("serving on {}; recovered {}", config.socket_path, recovered->ToString()));

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: shutting down; committed snapshots stay in shared memory", sig);
  notifier.Stopping("stopping; snapshots stay in " + config.shm_dir);
  verifier.Stop();  // a running verify answers CANCELLED before the servers stop
  (*local_socket)->Stop();  // no connection is handed to a server shutting down
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (peer_server) peer_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  scrubber->Stop();  // before the cluster and the loop: it waits on both
  if (cluster) cluster->Stop();  // before the loop: its threads wait on the loop
  loop.Stop();
  server.reset();
  peer_server.reset();
  cluster.reset();
  transport.reset();
  manager.reset();
  std::filesystem::remove(config.socket_path, ec);
  spdlog::info("holdfastd stopped");
  return 0;
}
