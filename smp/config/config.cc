#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#ifndef HOLDFAST_VERSION
#define HOLDFAST_VERSION "unknown"
#endif

namespace holdfast::smp {
namespace {

// A configuration file is a few hundred bytes; anything this big is the
// wrong file.
constexpr size_t kMaxConfigFileBytes = size_t{1} << 20;

constexpr std::array<std::string_view, 7> kLogLevels = {"trace", "debug",    "info", "warn",
                                                        "error", "critical", "off"};
// When the daemon verifies committed checksums (smp::VerifyMode).
constexpr std::array<std::string_view, 3> kVerifyModes = {"commit", "background", "off"};

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) {
             return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
           };
           return lower(x) == lower(y);
         });
}

std::string Quoted(std::string_view text) {
  std::string out = "\"";
  out += text;
  out += '"';
  return out;
}

// ---- scalar parsers: text to value, no range rules ---------------------

Result<int64_t> ParseInteger(std::string_view text, int64_t lo, int64_t hi) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ptr != end || ec == std::errc::invalid_argument) {
    return Status::InvalidArgument("expected an integer, got " + Quoted(text));
  }
  if (ec == std::errc::result_out_of_range || value < lo || value > hi) {
    return Status::InvalidArgument(Quoted(text) + " is out of range [" + std::to_string(lo) + ", " +
                                   std::to_string(hi) + "]");
  }
  return value;
}

// The largest unit that divides `bytes` exactly, so defaults print as "8GiB".
std::string FormatByteSize(uint64_t bytes) {
  static constexpr std::array<std::pair<std::string_view, int>, 4> kUnits = {
      {{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}}};
  if (bytes != 0) {
    for (const auto& [unit, shift] : kUnits) {
      if (bytes % (uint64_t{1} << shift) == 0) {
        return std::to_string(bytes >> shift) + std::string(unit);
      }
    }
  }
  return std::to_string(bytes);
}

// ---- the schema --------------------------------------------------------
//
// One row per DaemonConfig field drives the YAML reader, the command line
// and Validate(), so the three cannot drift apart.

struct Field {
  std::string_view key;   // YAML path: "snapshots.retain"
  std::string_view flag;  // "--retain"
  std::string_view help;
  std::string_view arg;  // how --help names the value: PATH, N, SIZE...
  Status (*set)(std::string_view text, DaemonConfig* config);  // parses only
  Status (*check)(const DaemonConfig& config);                 // range rules
  std::string (*show)(const DaemonConfig& config);             // for --help
};

template <std::string DaemonConfig::*kMember>
Status SetString(std::string_view text, DaemonConfig* config) {
  config->*kMember = std::string(text);
  return Status::Ok();
}
template <std::string DaemonConfig::*kMember>
std::string ShowString(const DaemonConfig& config) {
  return config.*kMember;
}

template <int DaemonConfig::*kMember>
Status SetInt(std::string_view text, DaemonConfig* config) {
  HOLDFAST_ASSIGN_OR_RETURN(int64_t value, ParseInteger(text, INT_MIN, INT_MAX));
  config->*kMember = static_cast<int>(value);
  return Status::Ok();
}
template <int DaemonConfig::*kMember>
std::string ShowInt(const DaemonConfig& config) {
  return std::to_string(config.*kMember);
}

template <uint64_t DaemonConfig::*kMember>
Status SetCount(std::string_view text, DaemonConfig* config) {
  if (!text.empty() && text[0] == '-') {
    return Status::InvalidArgument("expected a non-negative integer, got " + Quoted(text));
  }
  HOLDFAST_ASSIGN_OR_RETURN(int64_t value, ParseInteger(text, 0, INT64_MAX));
  config->*kMember = static_cast<uint64_t>(value);
  return Status::Ok();
}
template <uint64_t DaemonConfig::*kMember>
std::string ShowCount(const DaemonConfig& config) {
  return std::to_string(config.*kMember);
}

template <bool DaemonConfig::*kMember>
Status SetBool(std::string_view text, DaemonConfig* config) {
  if (EqualsIgnoreCase(text, "true")) {
    config->*kMember = true;
  } else if (EqualsIgnoreCase(text, "false")) {
    config->*kMember = false;
  } else {
    return Status::InvalidArgument("expected true or false, got " + Quoted(text));
  }
  return Status::Ok();
}
template <bool DaemonConfig::*kMember>
std::string ShowBool(const DaemonConfig& config) {
  return config.*kMember ? "true" : "false";
}

template <uint64_t DaemonConfig::*kMember>
Status SetSize(std::string_view text, DaemonConfig* config) {
  HOLDFAST_ASSIGN_OR_RETURN(config->*kMember, ParseByteSize(std::string(text)));
  return Status::Ok();
}
template <uint64_t DaemonConfig::*kMember>
std::string ShowSize(const DaemonConfig& config) {
  return FormatByteSize(config.*kMember);
}

template <std::string DaemonConfig::*kMember>
Status CheckNotEmpty(const DaemonConfig& config) {
  if ((config.*kMember).empty()) return Status::InvalidArgument("must not be empty");
  return Status::Ok();
}

template <int DaemonConfig::*kMember, int kLo, int kHi>
Status CheckIntRange(const DaemonConfig& config) {
  int value = config.*kMember;
  if (value < kLo || value > kHi) {
    std::string range = kHi == INT_MAX
                            ? "at least " + std::to_string(kLo)
                            : "in [" + std::to_string(kLo) + ", " + std::to_string(kHi) + "]";
    return Status::InvalidArgument("must be " + range + ", got " + std::to_string(value));
  }
  return Status::Ok();
}

template <uint64_t DaemonConfig::*kMember>
Status CheckPositive(const DaemonConfig& config) {
  if (config.*kMember == 0) return Status::InvalidArgument("must be greater than 0");
  return Status::Ok();
}

Status CheckNodeId(const DaemonConfig& config) {
  if (config.node_id.empty()) return Status::InvalidArgument("must not be empty");
  // It names this node to its peers and in the catalog.
  for (char c : config.node_id) {
    if (c <= ' ' || c == 0x7f) {
      return Status::InvalidArgument(Quoted(config.node_id) +
                                     " must not contain spaces or control characters");
    }
  }
  return Status::Ok();
}

Status CheckSocketPath(const DaemonConfig& config) {
  if (config.socket_path.empty()) return Status::InvalidArgument("must not be empty");
  // bind() needs the path and its NUL in sockaddr_un::sun_path.
  constexpr size_t kMaxPath = sizeof(sockaddr_un{}.sun_path) - 1;
  if (config.socket_path.size() > kMaxPath) {
    return Status::InvalidArgument("is " + std::to_string(config.socket_path.size()) +
                                   " bytes long; a Unix socket path has at most " +
                                   std::to_string(kMaxPath));
  }
  return Status::Ok();
}

Status CheckShmPrefix(const DaemonConfig& config) {
  // The same rule as SegmentStoreOptions::prefix.
  const std::string& prefix = config.shm_prefix;
  bool ok = !prefix.empty() && prefix.size() <= 32 &&
            std::all_of(prefix.begin(), prefix.end(), [](char c) {
              return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '_';
            });
  if (!ok) {
    return Status::InvalidArgument(Quoted(prefix) + " must be 1 to 32 characters of [A-Za-z0-9_]");
  }
  return Status::Ok();
}

template <size_t kN>
Status CheckOneOf(const std::string& value, const std::array<std::string_view, kN>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return Status::Ok();
  std::string msg = Quoted(value) + " is not one of";
  for (std::string_view name : allowed) {
    msg += ' ';
    msg += name;
  }
  return Status::InvalidArgument(std::move(msg));
}

Status CheckAnything(const DaemonConfig&) { return Status::Ok(); }

Status CheckLogLevel(const DaemonConfig& config) {
  return CheckOneOf(config.log_level, kLogLevels);
}

Status CheckVerifyMode(const DaemonConfig& config) {
  return CheckOneOf(config.verify, kVerifyModes);
}

Status CheckJobQuota(const DaemonConfig& config) { return JobQuotaBytes(config).status(); }

using C = DaemonConfig;
const std::array<Field, 31> kFields = {{
    {"node_id", "--node-id", "this node's name among its peers", "NAME", &SetString<&C::node_id>,
     &CheckNodeId, &ShowString<&C::node_id>},
    {"socket", "--socket", "Unix socket trainers connect to", "PATH", &SetString<&C::socket_path>,
     &CheckSocketPath, &ShowString<&C::socket_path>},
    {"socket_group", "--socket-group",
     "group of the socket (mode 0660); empty: the daemon's group", "GROUP",
     &SetString<&C::socket_group>, &CheckAnything, &ShowString<&C::socket_group>},
    {"data_dir", "--data-dir", "directory of the catalog", "DIR", &SetString<&C::data_dir>,
     &CheckNotEmpty<&C::data_dir>, &ShowString<&C::data_dir>},
    {"shm.dir", "--shm-dir", "tmpfs directory for shared-memory segments", "DIR",
     &SetString<&C::shm_dir>, &CheckNotEmpty<&C::shm_dir>, &ShowString<&C::shm_dir>},
    {"shm.prefix", "--shm-prefix", "segment file name prefix, [A-Za-z0-9_]{1,32}", "NAME",
     &SetString<&C::shm_prefix>, &CheckShmPrefix, &ShowString<&C::shm_prefix>},
    {"memory.budget", "--memory-budget", "shared memory this daemon may hold in segments", "SIZE",
     &SetSize<&C::memory_budget_bytes>, &CheckPositive<&C::memory_budget_bytes>,
     &ShowSize<&C::memory_budget_bytes>},
    {"snapshots.retain", "--retain", "complete versions kept per job", "N",
     &SetInt<&C::retain_versions>, &CheckIntRange<&C::retain_versions, 1, INT_MAX>,
     &ShowInt<&C::retain_versions>},
    {"snapshots.spares", "--spares",
     "segments made ahead, in the background, for a rank whose snapshot needed a new one (0-2)",
     "N", &SetInt<&C::spare_segments>, &CheckIntRange<&C::spare_segments, 0, 2>,
     &ShowInt<&C::spare_segments>},
    {"snapshots.max_items", "--max-items", "items in one rank's snapshot", "N",
     &SetCount<&C::max_items>, &CheckPositive<&C::max_items>, &ShowCount<&C::max_items>},
    {"snapshots.write_timeout_s", "--write-timeout-s",
     "seconds a snapshot may stay open for writing", "SECONDS", &SetInt<&C::write_timeout_seconds>,
     &CheckIntRange<&C::write_timeout_seconds, 1, INT_MAX>, &ShowInt<&C::write_timeout_seconds>},
    {"snapshots.lease_timeout_s", "--lease-timeout-s", "seconds a restore lease lasts", "SECONDS",
     &SetInt<&C::lease_timeout_seconds>, &CheckIntRange<&C::lease_timeout_seconds, 1, INT_MAX>,
     &ShowInt<&C::lease_timeout_seconds>},
    {"snapshots.verify", "--verify",
     "when the daemon checks committed items against their checksums: commit (before "
     "answering), background (after) or off",
     "MODE", &SetString<&C::verify>, &CheckVerifyMode, &ShowString<&C::verify>},
    {"snapshots.verify_threads", "--verify-threads", "threads that compute checksums, 1-64", "N",
     &SetInt<&C::verify_threads>, &CheckIntRange<&C::verify_threads, 1, 64>,
     &ShowInt<&C::verify_threads>},
    {"jobs.quota", "--job-quota",
     "memory one job may hold (versions and writes): a size, a fraction of the budget, or 0 "
     "(none)",
     "SIZE|FRACTION", &SetString<&C::job_quota>, &CheckJobQuota, &ShowString<&C::job_quota>},
    {"jobs.max_writes", "--max-writes-per-job", "snapshots one job may have open for writing",
     "N", &SetInt<&C::max_writes_per_job>, &CheckIntRange<&C::max_writes_per_job, 1, INT_MAX>,
     &ShowInt<&C::max_writes_per_job>},
    {"jobs.max_sessions", "--max-sessions-per-job", "client sessions one job may hold open", "N",
     &SetInt<&C::max_sessions_per_job>, &CheckIntRange<&C::max_sessions_per_job, 1, INT_MAX>,
     &ShowInt<&C::max_sessions_per_job>},
    {"jobs.max", "--max-jobs", "jobs registered at once", "N", &SetInt<&C::max_jobs>,
     &CheckIntRange<&C::max_jobs, 1, INT_MAX>, &ShowInt<&C::max_jobs>},
    {"grpc.max_streams", "--grpc-max-streams", "concurrent calls per client connection", "N",
     &SetInt<&C::grpc_max_streams>, &CheckIntRange<&C::grpc_max_streams, 4, INT_MAX>,
     &ShowInt<&C::grpc_max_streams>},
    {"grpc.max_connections", "--grpc-max-connections",
     "client connections open at once on the socket; more are refused", "N",
     &SetInt<&C::grpc_max_connections>, &CheckIntRange<&C::grpc_max_connections, 1, INT_MAX>,
     &ShowInt<&C::grpc_max_connections>},
    {"grpc.memory", "--grpc-memory", "memory gRPC may use for connections and messages", "SIZE",
     &SetSize<&C::grpc_memory_bytes>, &CheckPositive<&C::grpc_memory_bytes>,
     &ShowSize<&C::grpc_memory_bytes>},
    {"cluster.file", "--cluster", "cluster file (docs/cluster.md); empty: run alone", "PATH",
     &SetString<&C::cluster_file>, &CheckAnything, &ShowString<&C::cluster_file>},
    {"cluster.tls.ca", "--tls-ca", "CA certificate (PEM) peers' certificates must chain to", "PATH",
     &SetString<&C::tls_ca>, &CheckAnything, &ShowString<&C::tls_ca>},
    {"cluster.tls.cert", "--tls-cert", "this node's certificate (PEM; SAN DNS:<node_id>)", "PATH",
     &SetString<&C::tls_cert>, &CheckAnything, &ShowString<&C::tls_cert>},
    {"cluster.tls.key", "--tls-key", "this node's private key (PEM)", "PATH",
     &SetString<&C::tls_key>, &CheckAnything, &ShowString<&C::tls_key>},
    {"transport.tls", "--ucx-tls", "UCX transports for peer data (UCX_TLS); empty: UCX's choice",
     "LIST", &SetString<&C::ucx_tls>, &CheckAnything, &ShowString<&C::ucx_tls>},
    {"transport.net_devices", "--ucx-net-devices",
     "network devices UCX may use (UCX_NET_DEVICES); empty: all", "LIST",
     &SetString<&C::ucx_net_devices>, &CheckAnything, &ShowString<&C::ucx_net_devices>},
    {"log.level", "--log-level", "trace, debug, info, warn, error, critical or off", "LEVEL",
     &SetString<&C::log_level>, &CheckLogLevel, &ShowString<&C::log_level>},
    {"scrub.enabled", "--scrub", "background scrub of stored versions: true or false", "BOOL",
     &SetBool<&C::scrub_enabled>, &CheckAnything, &ShowBool<&C::scrub_enabled>},
    {"scrub.rate", "--scrub-rate", "bytes per second the scrub reads", "SIZE",
     &SetSize<&C::scrub_rate>, &CheckPositive<&C::scrub_rate>, &ShowSize<&C::scrub_rate>},
    {"scrub.interval_s", "--scrub-interval-s", "seconds between the starts of scrub passes",
     "SECONDS", &SetInt<&C::scrub_interval_seconds>,
     &CheckIntRange<&C::scrub_interval_seconds, 1, INT_MAX>, &ShowInt<&C::scrub_interval_seconds>},
}};

const Field* FindField(std::string_view key) {
  for (const Field& field : kFields) {
    if (field.key == key) return &field;
  }
  return nullptr;
}

// The keys directly under `section` ("" for the top level), in schema order:
// leaf names and sub-section names.
std::vector<std::string_view> KeysUnder(std::string_view section) {
  std::vector<std::string_view> keys;
  for (const Field& field : kFields) {
    std::string_view rest = field.key;
    if (!section.empty()) {
      if (rest.size() <= section.size() || !rest.starts_with(section) ||
          rest[section.size()] != '.') {
        continue;
      }
      rest.remove_prefix(section.size() + 1);
    }
    rest = rest.substr(0, rest.find('.'));
    if (std::find(keys.begin(), keys.end(), rest) == keys.end()) keys.push_back(rest);
  }
  return keys;
}

bool IsSection(std::string_view key) {
  return FindField(key) == nullptr && !KeysUnder(key).empty();
}

// Parses `text` into the field and applies its range rule.
Status SetField(const Field& field, std::string_view text, DaemonConfig* config) {
  HOLDFAST_RETURN_IF_ERROR(field.set(text, config));
  return field.check(*config);
}

// ---- YAML ----------------------------------------------------------------

// Where each document of a YAML stream starts; ignores everything else.
struct DocumentCounter final : YAML::EventHandler {
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

class YamlReader {
 public:
  explicit YamlReader(std::string file) : file_(std::move(file)) {}

  Status ReadDocument(const std::string& text, DaemonConfig* config) const {
    // Documents are counted (up to 2) before the one is loaded: yaml-cpp
    // 0.7's LoadAll never returns on a ',' outside brackets at the top level
    // ("," or "{a: 1},"), where every parse yields one more empty document
    // (found by tests/fuzz/config_fuzz.cc).
    DocumentCounter counter;
    YAML::Node root;
    try {
      std::istringstream in(text);
      YAML::Parser parser(in);
      while (counter.starts.size() < 2 && parser.HandleNextDocument(counter)) {
      }
      if (counter.starts.size() < 2) root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      return Error(e.mark, "invalid YAML: " + e.msg);
    }
    if (counter.starts.size() > 1) {
      return Error(counter.starts[1],
                   "holds more than one YAML document (or a ',' outside brackets); expected one");
    }
    if (root.IsNull()) return Status::Ok();  // all defaults
    if (!root.IsMap()) {
      return Error(root.Mark(),
                   "expected a mapping of keys at the top level (" + KeyList(KeysUnder("")) + ")");
    }
    try {
      return ReadMapping(root, "", config);
    } catch (const YAML::Exception& e) {  // not expected after a successful load
      return Error(e.mark, e.msg);
    }
  }

 private:
  Status ReadMapping(const YAML::Node& map, const std::string& section,
                     DaemonConfig* config) const {
    std::set<std::string> seen;
    for (const auto& entry : map) {
      const YAML::Node& key = entry.first;
      const YAML::Node& value = entry.second;
      if (!key.IsScalar()) return Error(key.Mark(), "keys must be plain names");
      std::string path = section.empty() ? key.Scalar() : section + "." + key.Scalar();
      if (!seen.insert(path).second) return Error(key.Mark(), "duplicate key " + path);

      if (const Field* field = FindField(path)) {
        if (!value.IsScalar()) {
          return Error(value.IsNull() ? key.Mark() : value.Mark(),
                       path + ": expected a single value, got " + TypeName(value));
        }
        Status status = SetField(*field, value.Scalar(), config);
        if (!status.ok()) return Error(value.Mark(), path + ": " + status.message());
      } else if (IsSection(path)) {
        if (value.IsNull()) continue;  // a section with every key commented out
        if (!value.IsMap()) {
          return Error(value.Mark(), path + ": expected a mapping (" + KeyList(KeysUnder(path)) +
                                         "), got " + TypeName(value));
        }
        HOLDFAST_RETURN_IF_ERROR(ReadMapping(value, path, config));
      } else {
        return Error(key.Mark(),
                     "unknown key " + path + "; expected one of " + KeyList(KeysUnder(section)));
      }
    }
    return Status::Ok();
  }

  static std::string TypeName(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Null:
        return "nothing";
      case YAML::NodeType::Scalar:
        return "a value";
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Map:
        return "a mapping";
      case YAML::NodeType::Undefined:
        break;
    }
    return "an undefined node";
  }

  static std::string KeyList(const std::vector<std::string_view>& keys) {
    std::string out;
    for (std::string_view key : keys) {
      if (!out.empty()) out += ", ";
      out += key;
    }
    return out;
  }

  // "<file>, line <n>: <what>" (yaml-cpp counts lines from 0).
  Status Error(const YAML::Mark& mark, const std::string& what) const {
    std::string msg = "config " + file_;
    if (!mark.is_null()) msg += ", line " + std::to_string(mark.line + 1);
    msg += ": ";
    msg += what;
    return Status::InvalidArgument(std::move(msg));
  }

  std::string file_;
};

}  // namespace

Result<std::string> ReadSmallFile(const std::string& path) {
  auto errno_status = [&path](int err) {
    std::string msg = "config " + path + ": " + std::system_category().message(err);
    if (err == ENOENT) return Status::NotFound(std::move(msg));
    if (err == EACCES || err == EPERM) return Status(StatusCode::kPermissionDenied, std::move(msg));
    return Status::InvalidArgument(std::move(msg));
  };
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_status(errno);
  std::string text;
  struct stat st;
  Status status;
  if (fstat(fd, &st) != 0) {
    status = errno_status(errno);
  } else if (!S_ISREG(st.st_mode)) {
    status = Status::InvalidArgument("config " + path + " is not a regular file");
  } else {
    char buffer[4096];
    while (status.ok()) {
      ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = errno_status(errno);
      } else if (n == 0) {
        break;
      } else if (text.size() + static_cast<size_t>(n) > kMaxConfigFileBytes) {
        status = Status::InvalidArgument("config " + path + " is larger than " +
                                         FormatByteSize(kMaxConfigFileBytes));
      } else {
        text.append(buffer, static_cast<size_t>(n));
      }
    }
  }
  close(fd);
  if (!status.ok()) return status;
  return text;
}

Result<uint64_t> ParseByteSize(const std::string& text) {
  // Exact arithmetic: "1.5GiB" is 1610612736 bytes, not a double's guess.
  __extension__ using Wide = unsigned __int128;
  auto invalid = [&text](std::string_view why) {
    return Status::InvalidArgument("size " + Quoted(text) + " " + std::string(why) +
                                   " (sizes look like 8GiB, 512MiB, 1.5GiB or 4096)");
  };
  std::string_view rest = text;
  auto skip_spaces = [&rest] {
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  };
  skip_spaces();
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
  if (rest.empty()) return invalid("is empty");
  if (rest.front() == '-') return invalid("is negative");

  auto digits = [&rest] {
    size_t n = 0;
    while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9') ++n;
    std::string_view out = rest.substr(0, n);
    rest.remove_prefix(n);
    return out;
  };
  std::string_view whole = digits();
  if (whole.empty()) return invalid("does not start with a number");
  std::string_view fraction;
  if (!rest.empty() && rest.front() == '.') {
    rest.remove_prefix(1);
    fraction = digits();
    if (fraction.empty()) return invalid("has no digits after the point");
  }
  while (fraction.size() > 1 && fraction.back() == '0') fraction.remove_suffix(1);
  if (fraction.size() > 18) return invalid("has too many decimal places");
  skip_spaces();

  static constexpr std::array<std::pair<std::string_view, int>, 10> kUnits = {{
      {"", 0},
      {"B", 0},
      {"K", 10},
      {"KiB", 10},
      {"M", 20},
      {"MiB", 20},
      {"G", 30},
      {"GiB", 30},
      {"T", 40},
      {"TiB", 40},
  }};
  int shift = -1;
  for (const auto& [unit, unit_shift] : kUnits) {
    if (EqualsIgnoreCase(rest, unit)) shift = unit_shift;
  }
  if (shift < 0) {
    if (rest.size() == 2 &&
        std::string_view("KkMmGgTtPpEe").find(rest[0]) != std::string_view::npos &&
        (rest[1] == 'B' || rest[1] == 'b')) {
      return invalid("has a decimal unit; write KiB, MiB, GiB or TiB");
    }
    return invalid("has an unknown unit " + Quoted(rest));
  }

  uint64_t whole_value = 0;
  // `whole` is all digits: the only possible failure is overflow.
  if (std::from_chars(whole.data(), whole.data() + whole.size(), whole_value).ec != std::errc()) {
    return invalid("is too large");
  }
  Wide bytes = static_cast<Wide>(whole_value) << shift;
  if (!fraction.empty()) {
    uint64_t numerator = 0;
    uint64_t denominator = 1;
    for (char c : fraction) {
      numerator = numerator * 10 + static_cast<uint64_t>(c - '0');
      denominator *= 10;
    }
    Wide scaled = static_cast<Wide>(numerator) << shift;
    if (numerator != 0 && scaled % denominator != 0) {
      return invalid("is not a whole number of bytes");
    }
    bytes += scaled / denominator;
  }
  if (bytes > UINT64_MAX) return invalid("is too large");
  return static_cast<uint64_t>(bytes);
}

Result<DaemonConfig> ParseConfigText(const std::string& text, const std::string& source) {
  DaemonConfig config;
  HOLDFAST_RETURN_IF_ERROR(YamlReader(source).ReadDocument(text, &config));
  return config;
}

Result<DaemonConfig> LoadConfigFile(const std::string& path) {
  HOLDFAST_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
  return ParseConfigText(text, path);
}

Result<uint64_t> JobQuotaBytes(const DaemonConfig& config) {
  const std::string& text = config.job_quota;
  // A plain number with a point and no unit is a fraction of the budget.
  const bool fraction = text.find('.') != std::string::npos &&
                        text.find_first_not_of("0123456789. \t") == std::string::npos;
  if (!fraction) {
    return ParseByteSize(text);  // "0" = none
  }
  double f = 0;
  try {
    size_t used = 0;
    f = std::stod(text, &used);
  } catch (const std::exception&) {
    f = -1;
  }
  if (!(f > 0 && f <= 1)) {
    return Status::InvalidArgument("quota " + Quoted(text) +
                                   ": a fraction of the budget must be in (0, 1]");
  }
  return static_cast<uint64_t>(f * static_cast<double>(config.memory_budget_bytes));
}

Status Validate(const DaemonConfig& config) {
  std::string problems;
  for (const Field& field : kFields) {
    Status status = field.check(config);
    if (status.ok()) continue;
    if (!problems.empty()) problems += "; ";
    problems += field.key;
    problems += ": ";
    problems += status.message();
  }
  if (problems.empty()) return Status::Ok();
  return Status::InvalidArgument("invalid configuration: " + problems);
}

Result<DaemonConfig> ParseCommandLine(int argc, char** argv, bool* exit_now, bool* purge) {
  bool ignored_exit = false;
  if (exit_now == nullptr) exit_now = &ignored_exit;
  *exit_now = false;

  CLI::App app(
      "holdfastd: the holdfast node daemon. Settings come from --config FILE, then from the "
      "flags below, which override the file.",
      "holdfastd");
  app.set_version_flag("--version", "holdfastd " HOLDFAST_VERSION);
  std::string config_path;
  CLI::Option* config_option =
      app.add_option("--config", config_path,
                     "YAML configuration file (see deploy/holdfastd.example.yaml)")
          ->type_name("FILE");
  bool purge_flag = false;
  if (purge != nullptr) {
    *purge = false;
    app.add_flag("--purge", purge_flag,
                 "remove this daemon's segments, catalog and incarnation id, then exit; "
                 "refused while a daemon serves (docs/operations.md)");
  }

  const DaemonConfig defaults;
  struct Flag {
    CLI::Option* option = nullptr;
    std::string text;
  };
  std::vector<Flag> flags(kFields.size());  // sized once: CLI11 keeps pointers into it
  for (size_t i = 0; i < kFields.size(); ++i) {
    const Field& field = kFields[i];
    std::string help = std::string(field.help) + " (" + std::string(field.key) + ", default " +
                       field.show(defaults) + ")";
    flags[i].option = app.add_option(std::string(field.flag), flags[i].text, help)
                          ->type_name(std::string(field.arg));
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      (void)app.exit(e, std::cout, std::cerr);  // --help or --version
      std::cout.flush();
      *exit_now = true;
      return defaults;
    }
    return Status::InvalidArgument(std::string(e.what()) + "\n\n" + app.help());
  }

  DaemonConfig config;
  if (config_option->count() > 0) {
    HOLDFAST_ASSIGN_OR_RETURN(config, LoadConfigFile(config_path));
  }
  for (size_t i = 0; i < kFields.size(); ++i) {
    const Field& field = kFields[i];
    if (flags[i].option->count() == 0) continue;
    Status status = SetField(field, flags[i].text, &config);
    if (!status.ok()) {
      return Status::InvalidArgument(std::string(field.flag) + ": " + status.message());
    }
  }
  HOLDFAST_RETURN_IF_ERROR(Validate(config));
  if (purge != nullptr) *purge = purge_flag;
  return config;
}

}  // namespace holdfast::smp
