// holdfastd's configuration: a YAML file (deploy/holdfastd.example.yaml)
// with command-line overrides. Every field has a documented default; the
// file and the flags may each set any subset.
#ifndef HOLDFAST_SMP_CONFIG_CONFIG_H_
#define HOLDFAST_SMP_CONFIG_CONFIG_H_

#include <cstdint>
#include <string>

#include "holdfast/ec/status.h"

namespace holdfast::smp {

struct DaemonConfig {
  std::string node_id = "node0";                      // config key: node_id
  std::string socket_path = "/run/holdfast/holdfastd.sock";  // socket
  // The socket's group (mode 0660): who may talk to the daemon. Empty: the
  // daemon's own group. An unknown group is an error at startup.
  std::string socket_group;                            // socket_group
  std::string data_dir = "/var/lib/holdfast";          // data_dir: catalog lives here
  std::string shm_dir = "/dev/shm/holdfast";           // shm.dir (deploy/holdfast.tmpfiles)
  std::string shm_prefix = "holdfast";                 // shm.prefix
  uint64_t memory_budget_bytes = uint64_t{8} << 30;    // memory.budget ("8GiB", "512MiB")
  int retain_versions = 2;                             // snapshots.retain (>= 1)
  int spare_segments = 2;                              // snapshots.spares (0-2)
  uint64_t max_items = 1 << 20;                        // snapshots.max_items per rank snapshot
  int write_timeout_seconds = 600;                     // snapshots.write_timeout_s
  int lease_timeout_seconds = 600;                     // snapshots.lease_timeout_s
  std::string verify = "background";                   // snapshots.verify: commit|background|off
  int verify_threads = 2;                              // snapshots.verify_threads
  // Per-job limits (docs/security.md, "Limits"). The quota is bytes ("4GiB")
  // or a fraction of memory.budget ("0.5"); "0" = none (the budget only).
  std::string job_quota = "0";                         // jobs.quota
  int max_writes_per_job = 64;                         // jobs.max_writes in flight
  int max_sessions_per_job = 256;                      // jobs.max_sessions
  int max_jobs = 4096;                                 // jobs.max registered jobs
  int grpc_max_streams = 256;                          // grpc.max_streams per connection
  int grpc_max_connections = 1024;                     // grpc.max_connections on the socket
  uint64_t grpc_memory_bytes = uint64_t{1} << 30;      // grpc.memory (grpc::ResourceQuota)
  std::string cluster_file;                            // cluster.file: "" = run alone
  // cluster.tls.{ca,cert,key}: PEM files for mutual TLS between peers
  // (docs/security.md); all three or none (none: insecure peers).
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string ucx_tls;                                 // transport.tls (UCX_TLS)
  std::string ucx_net_devices;                         // transport.net_devices
  std::string log_level = "info";                      // log.level: trace..critical
  bool scrub_enabled = true;                           // scrub.enabled
  uint64_t scrub_rate = uint64_t{64} << 20;            // scrub.rate: bytes/s read by the scrub
  int scrub_interval_seconds = 3600;                   // scrub.interval_s: a pass this often
};

// Parses a size like "8GiB", "512MiB", "4096", "1.5GiB" (binary units:
// KiB, MiB, GiB, TiB; also K/M/G/T as binary). INVALID_ARGUMENT otherwise.
Result<uint64_t> ParseByteSize(const std::string& text);

// The text of a config-sized file (at most 1 MiB, a regular file); NOT_FOUND,
// PERMISSION_DENIED or INVALID_ARGUMENT naming `path` otherwise.
Result<std::string> ReadSmallFile(const std::string& path);

// Reads `path` (YAML) over the defaults. Unknown keys are errors (a typo
// must not silently fall back to a default). INVALID_ARGUMENT naming the key
// and the line for a bad value; NOT_FOUND for a missing file.
Result<DaemonConfig> LoadConfigFile(const std::string& path);
// The same for YAML `text` already read; `source` names it in errors.
Result<DaemonConfig> ParseConfigText(const std::string& text, const std::string& source);

// Parses holdfastd's command line: `--config FILE` first, then every field
// as a flag (--node-id, --socket, --data-dir, --shm-dir, --shm-prefix,
// --memory-budget, --retain, --verify, --log-level, ...), flags overriding
// the file.
// Returns INVALID_ARGUMENT with the usage text for bad flags. Sets
// *exit_now (and returns OK) for --help / --version, after printing them.
// `--purge` (an action, not a setting: lifecycle/purge.h) sets *purge; it is
// refused when `purge` is null.
Result<DaemonConfig> ParseCommandLine(int argc, char** argv, bool* exit_now,
                                      bool* purge = nullptr);

// jobs.quota in bytes (0 = none): a size, or a fraction (0, 1] of the
// budget. INVALID_ARGUMENT naming the value otherwise.
Result<uint64_t> JobQuotaBytes(const DaemonConfig& config);

// Checks cross-field rules (paths non-empty, budget > 0, prefix charset...).
Status Validate(const DaemonConfig& config);

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CONFIG_CONFIG_H_
