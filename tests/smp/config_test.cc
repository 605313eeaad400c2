// holdfastd's configuration: byte sizes, the YAML file, the command line,
// Validate(), and the example file in deploy/.
#include "config/config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace holdfast::smp {
namespace {

namespace fs = std::filesystem;

// A new DaemonConfig field must be added to ExpectSameConfig, the example
// file, the key list in ExampleFileHoldsEveryKeyWithItsDefault and
// EveryFieldHasAFlag; this trips when the struct changes, so none is forgotten.
static_assert(sizeof(DaemonConfig) == 576,
              "DaemonConfig changed: update this test and the example");

void ExpectSameConfig(const DaemonConfig& actual, const DaemonConfig& expected) {
  EXPECT_EQ(actual.node_id, expected.node_id);
  EXPECT_EQ(actual.socket_path, expected.socket_path);
  EXPECT_EQ(actual.socket_group, expected.socket_group);
  EXPECT_EQ(actual.job_quota, expected.job_quota);
  EXPECT_EQ(actual.max_writes_per_job, expected.max_writes_per_job);
  EXPECT_EQ(actual.max_sessions_per_job, expected.max_sessions_per_job);
  EXPECT_EQ(actual.max_jobs, expected.max_jobs);
  EXPECT_EQ(actual.grpc_max_streams, expected.grpc_max_streams);
  EXPECT_EQ(actual.grpc_max_connections, expected.grpc_max_connections);
  EXPECT_EQ(actual.grpc_memory_bytes, expected.grpc_memory_bytes);
  EXPECT_EQ(actual.data_dir, expected.data_dir);
  EXPECT_EQ(actual.shm_dir, expected.shm_dir);
  EXPECT_EQ(actual.shm_prefix, expected.shm_prefix);
  EXPECT_EQ(actual.memory_budget_bytes, expected.memory_budget_bytes);
  EXPECT_EQ(actual.retain_versions, expected.retain_versions);
  EXPECT_EQ(actual.max_items, expected.max_items);
  EXPECT_EQ(actual.write_timeout_seconds, expected.write_timeout_seconds);
  EXPECT_EQ(actual.lease_timeout_seconds, expected.lease_timeout_seconds);
  EXPECT_EQ(actual.verify, expected.verify);
  EXPECT_EQ(actual.verify_threads, expected.verify_threads);
  EXPECT_EQ(actual.cluster_file, expected.cluster_file);
  EXPECT_EQ(actual.tls_ca, expected.tls_ca);
  EXPECT_EQ(actual.tls_cert, expected.tls_cert);
  EXPECT_EQ(actual.tls_key, expected.tls_key);
  EXPECT_EQ(actual.ucx_tls, expected.ucx_tls);
  EXPECT_EQ(actual.ucx_net_devices, expected.ucx_net_devices);
  EXPECT_EQ(actual.log_level, expected.log_level);
  EXPECT_EQ(actual.scrub_enabled, expected.scrub_enabled);
  EXPECT_EQ(actual.scrub_rate, expected.scrub_rate);
  EXPECT_EQ(actual.scrub_interval_seconds, expected.scrub_interval_seconds);
}

// Dotted paths of every scalar in a YAML mapping.
void CollectKeys(const YAML::Node& node, const std::string& prefix, std::set<std::string>* out) {
  for (const auto& entry : node) {
    std::string path = prefix.empty() ? entry.first.Scalar() : prefix + "." + entry.first.Scalar();
    if (entry.second.IsMap()) {
      CollectKeys(entry.second, path, out);
    } else {
      out->insert(path);
    }
  }
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- ParseByteSize ---------------------------------------------------------

TEST(ConfigByteSizeTest, AcceptsBinaryUnitsAndPlainNumbers) {
  const struct {
    const char* text;
    uint64_t bytes;
  } cases[] = {
      {"0", 0},
      {"4096", 4096},
      {"8GiB", uint64_t{8} << 30},
      {"512MiB", uint64_t{512} << 20},
      {"1.5GiB", uint64_t{3} << 29},
      {"0.5KiB", 512},
      {"1.25MiB", (uint64_t{5} << 20) / 4},
      {"2.000GiB", uint64_t{2} << 30},
      {"1K", 1024},
      {"1k", 1024},
      {"3M", uint64_t{3} << 20},
      {"3G", uint64_t{3} << 30},
      {"2T", uint64_t{2} << 40},
      {"2TiB", uint64_t{2} << 40},
      {"2tib", uint64_t{2} << 40},
      {"10B", 10},
      {"8 GiB", uint64_t{8} << 30},
      {"  16MiB  ", uint64_t{16} << 20},
      {"007", 7},
      {"18446744073709551615", UINT64_MAX},
      {"16777215TiB", uint64_t{16777215} << 40},
  };
  for (const auto& c : cases) {
    Result<uint64_t> bytes = ParseByteSize(c.text);
    ASSERT_TRUE(bytes.ok()) << c.text << ": " << bytes.status().ToString();
    EXPECT_EQ(*bytes, c.bytes) << c.text;
  }
}

TEST(ConfigByteSizeTest, RejectsNegativesGarbageAndOverflow) {
  for (const char* text : {
           "",
           " ",
           "-1",
           "-1GiB",
           "-0",
           "+1",
           "GiB",
           "abc",
           "8 XB",
           "8GiBs",
           "8Gi B",
           "1e9",
           "0x10",
           "8,5GiB",
           "1.",
           ".5GiB",
           "1..5GiB",
           "1.5",
           "0.1GiB",
           "1.1B",
           "8GB",
           "8gb",
           "8KB",
           "1PiB",
           "nan",
           "18446744073709551616",
           "16777216TiB",
           "17179869184GiB",
           "99999999999999999999999",
           "1.0000000000000000001GiB",
       }) {
    Result<uint64_t> bytes = ParseByteSize(text);
    EXPECT_EQ(bytes.status().code(), StatusCode::kInvalidArgument) << '"' << text << '"';
  }
  // The message says what went wrong and what would be right.
  Status decimal = ParseByteSize("8GB").status();
  EXPECT_TRUE(Contains(decimal.message(), "8GB")) << decimal.message();
  EXPECT_TRUE(Contains(decimal.message(), "GiB")) << decimal.message();
  EXPECT_TRUE(Contains(ParseByteSize("-1GiB").status().message(), "negative"));
}

// ---- LoadConfigFile --------------------------------------------------------

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = fs::temp_directory_path() / "holdfast_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string Write(const std::string& text, const std::string& name = "holdfastd.yaml") {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  // Loads `text`, expecting INVALID_ARGUMENT whose message names every part.
  void ExpectInvalid(const std::string& text, const std::vector<std::string>& parts) {
    Result<DaemonConfig> config = LoadConfigFile(Write(text));
    ASSERT_EQ(config.status().code(), StatusCode::kInvalidArgument)
        << text << "\n-> " << config.status().ToString();
    for (const std::string& part : parts) {
      EXPECT_TRUE(Contains(config.status().message(), part))
          << "\"" << part << "\" not in: " << config.status().message();
    }
  }

  std::string dir_;
};

TEST_F(ConfigFileTest, ReadsEveryKey) {
  std::string path = Write(R"(
node_id: trainer-17
socket: /tmp/hf.sock
data_dir: /data/holdfast
shm:
  dir: /mnt/shm
  prefix: hf_test
memory:
  budget: 1.5GiB
snapshots:
  retain: 3
  max_items: 5000
  write_timeout_s: 30
  lease_timeout_s: 45
  verify: commit
  verify_threads: 8
log:
  level: debug
)");
  Result<DaemonConfig> config = LoadConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  DaemonConfig expected;
  expected.node_id = "trainer-17";
  expected.socket_path = "/tmp/hf.sock";
  expected.data_dir = "/data/holdfast";
  expected.shm_dir = "/mnt/shm";
  expected.shm_prefix = "hf_test";
  expected.memory_budget_bytes = uint64_t{3} << 29;
  expected.retain_versions = 3;
  expected.max_items = 5000;
  expected.write_timeout_seconds = 30;
  expected.lease_timeout_seconds = 45;
  expected.verify = "commit";
  expected.verify_threads = 8;
  expected.log_level = "debug";
  ExpectSameConfig(*config, expected);
}

TEST_F(ConfigFileTest, MissingKeysKeepTheirDefaults) {
  Result<DaemonConfig> config = LoadConfigFile(Write("snapshots:\n  retain: 5\nmemory:\n"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  DaemonConfig expected;
  expected.retain_versions = 5;
  ExpectSameConfig(*config, expected);

  for (const char* empty : {"", "\n\n", "# only a comment\n", "---\n", "~\n"}) {
    Result<DaemonConfig> defaults = LoadConfigFile(Write(empty));
    ASSERT_TRUE(defaults.ok()) << '"' << empty << "\": " << defaults.status().ToString();
    ExpectSameConfig(*defaults, DaemonConfig{});
  }
}

TEST_F(ConfigFileTest, ScalarSpellings) {
  Result<DaemonConfig> config = LoadConfigFile(Write(R"(
node_id: "0042"
memory: {budget: 1073741824}
snapshots: {verify: off, retain: "4"}
)"));
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->node_id, "0042");  // a string, not a number
  EXPECT_EQ(config->memory_budget_bytes, uint64_t{1} << 30);
  EXPECT_EQ(config->verify, "off");  // the mode, not YAML 1.1's boolean
  EXPECT_EQ(config->retain_versions, 4);

  for (const char* mode : {"commit", "background", "off", "'off'", "\"commit\""}) {
    Result<DaemonConfig> c =
        LoadConfigFile(Write(std::string("snapshots:\n  verify: ") + mode + "\n"));
    ASSERT_TRUE(c.ok()) << mode << ": " << c.status().ToString();
    EXPECT_NE(std::string(mode).find(c->verify), std::string::npos) << mode;
  }
}

TEST_F(ConfigFileTest, MissingFileIsNotFound) {
  Result<DaemonConfig> config = LoadConfigFile(dir_ + "/nope.yaml");
  EXPECT_EQ(config.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Contains(config.status().message(), dir_ + "/nope.yaml"));
  EXPECT_EQ(LoadConfigFile(dir_).status().code(), StatusCode::kInvalidArgument);  // a directory
}

TEST_F(ConfigFileTest, BadSyntaxNamesTheLine) {
  ExpectInvalid("node_id: a\nshm: {dir: /x\nlog:\n  level: info\n", {"line", "invalid YAML"});
  ExpectInvalid("node_id: [unclosed\n", {"line", "invalid YAML"});
  ExpectInvalid("node_id: a\n  data_dir: b\n", {"line 2"});
  ExpectInvalid("node_id: a\n---\nnode_id: b\n", {"more than one YAML document"});
  // From tests/fuzz/config_fuzz.cc: yaml-cpp 0.7's LoadAll never returned
  // (one more empty document per call) on a ',' outside brackets.
  ExpectInvalid(",", {"more than one YAML document"});
  ExpectInvalid("{node_id: a},\n", {"more than one YAML document"});
  ExpectInvalid("- node_id\n- socket\n", {"mapping", "node_id"});
  ExpectInvalid("just a string\n", {"mapping"});
}

TEST_F(ConfigFileTest, UnknownKeysNameThePathAndLine) {
  std::string text = R"(# holdfastd
node_id: n1
snapshots:
  retain: 2
  retian: 3
)";
  ExpectInvalid(text, {"snapshots.retian", "line 5", "retain, spares, max_items"});
  ExpectInvalid("nodeid: n1\n", {"nodeid", "line 1", "node_id"});
  ExpectInvalid("shm:\n  dir: /dev/shm\n  size: 1G\n", {"shm.size", "line 3"});
  ExpectInvalid("log: {level: info, file: /var/log/x}\n", {"log.file", "line 1"});
  ExpectInvalid("memory:\n  budget: 1G\nmemory_budget: 1G\n", {"memory_budget", "line 3"});
  // Flag spellings are not keys.
  ExpectInvalid("data-dir: /x\n", {"data-dir"});
  ExpectInvalid("node_id: a\nnode_id: b\n", {"duplicate", "node_id", "line 2"});
  // The boolean that `verify` replaced.
  ExpectInvalid("snapshots:\n  verify_on_commit: true\n",
                {"snapshots.verify_on_commit", "line 2", "verify"});
  ExpectInvalid("? [a, b]\n: c\n", {"line 1"});
}

TEST_F(ConfigFileTest, WrongTypesNameTheKey) {
  ExpectInvalid("snapshots:\n  retain: two\n", {"snapshots.retain", "line 2", "integer", "two"});
  ExpectInvalid("snapshots:\n  retain: [1, 2]\n", {"snapshots.retain", "line 2", "list"});
  ExpectInvalid("snapshots:\n  retain: 1.5\n", {"snapshots.retain", "integer"});
  ExpectInvalid("snapshots:\n  retain: 99999999999\n", {"snapshots.retain", "range"});
  ExpectInvalid("snapshots:\n  max_items: -1\n", {"snapshots.max_items", "non-negative"});
  ExpectInvalid("snapshots:\n  verify: [commit]\n", {"snapshots.verify", "line 2", "list"});
  ExpectInvalid("node_id: {name: a}\n", {"node_id", "mapping"});
  ExpectInvalid("node_id:\n", {"node_id", "line 1", "nothing"});
  ExpectInvalid("shm: /dev/shm\n", {"shm", "dir, prefix"});
  ExpectInvalid("log: [info]\n", {"log", "level"});
  ExpectInvalid("snapshots: 3\n", {"snapshots"});
}

TEST_F(ConfigFileTest, BadSizesAndRangesNameTheKeyAndLine) {
  ExpectInvalid("memory:\n  budget: 8GB\n", {"memory.budget", "line 2", "GiB"});
  ExpectInvalid("memory:\n  budget: -1GiB\n", {"memory.budget", "negative"});
  ExpectInvalid("memory:\n  budget: lots\n", {"memory.budget"});
  ExpectInvalid("memory:\n  budget: 99999999TiB\n", {"memory.budget", "too large"});
  ExpectInvalid("memory:\n  budget: 0\n", {"memory.budget", "greater than 0"});
  ExpectInvalid("snapshots:\n  retain: 0\n", {"snapshots.retain", "line 2", "at least 1"});
  ExpectInvalid("snapshots:\n  verify_threads: 65\n", {"snapshots.verify_threads", "[1, 64]"});
  ExpectInvalid("snapshots:\n  write_timeout_s: 0\n", {"snapshots.write_timeout_s"});
  ExpectInvalid("snapshots:\n  lease_timeout_s: -5\n", {"snapshots.lease_timeout_s"});
  ExpectInvalid("log:\n  level: verbose\n", {"log.level", "verbose", "critical"});
  ExpectInvalid("shm:\n  prefix: hold-fast\n", {"shm.prefix", "[A-Za-z0-9_]"});
  ExpectInvalid("data_dir: ''\n", {"data_dir", "empty"});
  ExpectInvalid("node_id: two words\n", {"node_id"});
}

// The example in deploy/ must load, name every key, and document the
// defaults exactly.
TEST_F(ConfigFileTest, ExampleFileHoldsEveryKeyWithItsDefault) {
  const std::string path = std::string(HOLDFAST_SOURCE_DIR) + "/deploy/holdfastd.example.yaml";
  Result<DaemonConfig> config = LoadConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  ExpectSameConfig(*config, DaemonConfig{});
  EXPECT_TRUE(Validate(*config).ok());

  const std::set<std::string> all_keys = {
      "node_id",
      "socket",
      "socket_group",
      "data_dir",
      "shm.dir",
      "shm.prefix",
      "memory.budget",
      "snapshots.retain",
      "snapshots.spares",
      "snapshots.max_items",
      "snapshots.write_timeout_s",
      "snapshots.lease_timeout_s",
      "snapshots.verify",
      "snapshots.verify_threads",
      "jobs.quota",
      "jobs.max_writes",
      "jobs.max_sessions",
      "jobs.max",
      "grpc.max_streams",
      "grpc.max_connections",
      "grpc.memory",
      "cluster.file",
      "cluster.tls.ca",
      "cluster.tls.cert",
      "cluster.tls.key",
      "transport.tls",
      "transport.net_devices",
      "log.level",
      "scrub.enabled",
      "scrub.rate",
      "scrub.interval_s",
  };
  std::set<std::string> keys;
  CollectKeys(YAML::LoadFile(path), "", &keys);
  EXPECT_EQ(keys, all_keys);
}

// ---- Validate ----------------------------------------------------------------

TEST(ConfigValidateTest, JobQuotaIsASizeOrAFractionOfTheBudget) {
  DaemonConfig c;
  c.memory_budget_bytes = uint64_t{8} << 30;
  c.job_quota = "0";
  EXPECT_EQ(JobQuotaBytes(c).value(), 0u);
  c.job_quota = "2GiB";
  EXPECT_EQ(JobQuotaBytes(c).value(), uint64_t{2} << 30);
  c.job_quota = "0.25";
  EXPECT_EQ(JobQuotaBytes(c).value(), uint64_t{2} << 30);
  c.job_quota = "1.0";
  EXPECT_EQ(JobQuotaBytes(c).value(), uint64_t{8} << 30);
  for (const char* bad : {"0.0", "1.5", "-1", "half"}) {
    c.job_quota = bad;
    EXPECT_FALSE(JobQuotaBytes(c).ok()) << bad;
  }
}

TEST(ConfigValidateTest, DefaultsAreValid) { EXPECT_TRUE(Validate(DaemonConfig{}).ok()); }

TEST(ConfigValidateTest, EachRule) {
  const struct {
    const char* key;
    void (*breakit)(DaemonConfig*);
  } cases[] = {
      {"node_id", [](DaemonConfig* c) { c->node_id = ""; }},
      {"jobs.quota", [](DaemonConfig* c) { c->job_quota = "1.5"; }},
      {"jobs.quota", [](DaemonConfig* c) { c->job_quota = "lots"; }},
      {"jobs.max_writes", [](DaemonConfig* c) { c->max_writes_per_job = 0; }},
      {"grpc.max_streams", [](DaemonConfig* c) { c->grpc_max_streams = 1; }},
      {"grpc.max_connections", [](DaemonConfig* c) { c->grpc_max_connections = 0; }},
      {"node_id", [](DaemonConfig* c) { c->node_id = "a\tb"; }},
      {"socket", [](DaemonConfig* c) { c->socket_path = ""; }},
      {"socket", [](DaemonConfig* c) { c->socket_path = "/" + std::string(107, 's'); }},
      {"data_dir", [](DaemonConfig* c) { c->data_dir = ""; }},
      {"shm.dir", [](DaemonConfig* c) { c->shm_dir = ""; }},
      {"shm.prefix", [](DaemonConfig* c) { c->shm_prefix = ""; }},
      {"shm.prefix", [](DaemonConfig* c) { c->shm_prefix = "a.b"; }},
      {"shm.prefix", [](DaemonConfig* c) { c->shm_prefix = std::string(33, 'a'); }},
      {"memory.budget", [](DaemonConfig* c) { c->memory_budget_bytes = 0; }},
      {"snapshots.retain", [](DaemonConfig* c) { c->retain_versions = 0; }},
      {"snapshots.retain", [](DaemonConfig* c) { c->retain_versions = -1; }},
      {"snapshots.max_items", [](DaemonConfig* c) { c->max_items = 0; }},
      {"snapshots.write_timeout_s", [](DaemonConfig* c) { c->write_timeout_seconds = 0; }},
      {"snapshots.lease_timeout_s", [](DaemonConfig* c) { c->lease_timeout_seconds = -1; }},
      {"snapshots.verify", [](DaemonConfig* c) { c->verify = ""; }},
      {"snapshots.verify", [](DaemonConfig* c) { c->verify = "sometimes"; }},
      {"snapshots.verify_threads", [](DaemonConfig* c) { c->verify_threads = 0; }},
      {"snapshots.verify_threads", [](DaemonConfig* c) { c->verify_threads = 65; }},
      {"log.level", [](DaemonConfig* c) { c->log_level = "INFO"; }},
      {"log.level", [](DaemonConfig* c) { c->log_level = "warning"; }},
  };
  for (const auto& c : cases) {
    DaemonConfig config;
    c.breakit(&config);
    Status status = Validate(config);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << c.key;
    EXPECT_TRUE(Contains(status.message(), c.key)) << c.key << ": " << status.message();
  }

  // The edges themselves are fine.
  DaemonConfig edges;
  edges.shm_prefix = std::string(32, 'Z');
  edges.socket_path = "/" + std::string(106, 's');
  edges.retain_versions = 1;
  edges.verify_threads = 64;
  edges.memory_budget_bytes = 1;
  for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    edges.log_level = level;
    EXPECT_TRUE(Validate(edges).ok()) << level << ": " << Validate(edges).ToString();
  }
  for (const char* mode : {"commit", "background", "off"}) {
    edges.verify = mode;
    EXPECT_TRUE(Validate(edges).ok()) << mode << ": " << Validate(edges).ToString();
  }
  edges.verify_threads = 1;
  EXPECT_TRUE(Validate(edges).ok());
}

TEST(ConfigValidateTest, ReportsEveryProblem) {
  DaemonConfig config;
  config.data_dir = "";
  config.verify_threads = 100;
  Status status = Validate(config);
  EXPECT_TRUE(Contains(status.message(), "data_dir")) << status.message();
  EXPECT_TRUE(Contains(status.message(), "snapshots.verify_threads")) << status.message();
}

// ---- ParseCommandLine --------------------------------------------------------

// Owns argv strings for ParseCommandLine.
class Args {
 public:
  explicit Args(const std::vector<std::string>& args) : storage_{"holdfastd"} {
    storage_.insert(storage_.end(), args.begin(), args.end());
    for (std::string& s : storage_) pointers_.push_back(s.data());
    pointers_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(storage_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<char*> pointers_;
};

Result<DaemonConfig> Parse(const std::vector<std::string>& args, bool* exit_now = nullptr) {
  Args a(args);
  bool ignored = true;
  Result<DaemonConfig> config =
      ParseCommandLine(a.argc(), a.argv(), exit_now ? exit_now : &ignored);
  if (exit_now == nullptr) {
    EXPECT_FALSE(ignored);
  }
  return config;
}

class ConfigCommandLineTest : public ConfigFileTest {};

TEST_F(ConfigCommandLineTest, NoArgumentsGivesDefaults) {
  Result<DaemonConfig> config = Parse({});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  ExpectSameConfig(*config, DaemonConfig{});
}

TEST_F(ConfigCommandLineTest, EveryFieldHasAFlag) {
  Result<DaemonConfig> config = Parse({
      "--node-id=n9",
      "--socket",
      "/tmp/s.sock",
      "--data-dir",
      "/d",
      "--shm-dir",
      "/s",
      "--shm-prefix",
      "p_1",
      "--memory-budget",
      "512MiB",
      "--retain",
      "4",
      "--max-items",
      "77",
      "--write-timeout-s",
      "5",
      "--lease-timeout-s",
      "6",
      "--verify",
      "off",
      "--verify-threads",
      "3",
      "--cluster",
      "/etc/holdfast/cluster.yaml",
      "--tls-ca",
      "/etc/holdfast/ca.pem",
      "--tls-cert",
      "/etc/holdfast/n9.pem",
      "--tls-key",
      "/etc/holdfast/n9.key",
      "--ucx-tls",
      "tcp",
      "--ucx-net-devices",
      "eth1",
      "--log-level",
      "warn",
      "--scrub",
      "false",
      "--scrub-rate",
      "16MiB",
      "--scrub-interval-s",
      "60",
      "--socket-group",
      "trainers",
      "--job-quota",
      "0.5",
      "--max-writes-per-job",
      "8",
      "--max-sessions-per-job",
      "9",
      "--max-jobs",
      "10",
      "--grpc-max-streams",
      "11",
      "--grpc-max-connections",
      "12",
      "--grpc-memory",
      "64MiB",
  });
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  DaemonConfig expected;
  expected.socket_group = "trainers";
  expected.job_quota = "0.5";
  expected.max_writes_per_job = 8;
  expected.max_sessions_per_job = 9;
  expected.max_jobs = 10;
  expected.grpc_max_streams = 11;
  expected.grpc_max_connections = 12;
  expected.grpc_memory_bytes = uint64_t{64} << 20;
  expected.node_id = "n9";
  expected.socket_path = "/tmp/s.sock";
  expected.data_dir = "/d";
  expected.shm_dir = "/s";
  expected.shm_prefix = "p_1";
  expected.memory_budget_bytes = uint64_t{512} << 20;
  expected.retain_versions = 4;
  expected.max_items = 77;
  expected.write_timeout_seconds = 5;
  expected.lease_timeout_seconds = 6;
  expected.verify = "off";
  expected.verify_threads = 3;
  expected.cluster_file = "/etc/holdfast/cluster.yaml";
  expected.tls_ca = "/etc/holdfast/ca.pem";
  expected.tls_cert = "/etc/holdfast/n9.pem";
  expected.tls_key = "/etc/holdfast/n9.key";
  expected.ucx_tls = "tcp";
  expected.ucx_net_devices = "eth1";
  expected.log_level = "warn";
  expected.scrub_enabled = false;
  expected.scrub_rate = uint64_t{16} << 20;
  expected.scrub_interval_seconds = 60;
  ExpectSameConfig(*config, expected);
}

TEST_F(ConfigCommandLineTest, FlagsOverrideTheFile) {
  std::string path = Write(R"(
node_id: from-file
memory: {budget: 2GiB}
snapshots:
  retain: 7
  verify: off
log: {level: debug}
)");
  Result<DaemonConfig> config =
      Parse({"--retain", "3", "--config", path, "--verify", "commit", "--log-level=error"});
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->node_id, "from-file");                    // file only
  EXPECT_EQ(config->memory_budget_bytes, uint64_t{2} << 30);  // file only
  EXPECT_EQ(config->retain_versions, 3);                      // flag wins, whatever its place
  EXPECT_EQ(config->verify, "commit");                        // flag wins
  EXPECT_EQ(config->log_level, "error");                      // flag wins
  EXPECT_EQ(config->verify_threads, DaemonConfig{}.verify_threads);  // neither

  Result<DaemonConfig> background = Parse({"--verify=background"});
  ASSERT_TRUE(background.ok()) << background.status().ToString();
  EXPECT_EQ(background->verify, "background");
}

TEST_F(ConfigCommandLineTest, FileErrorsPassThrough) {
  EXPECT_EQ(Parse({"--config", dir_ + "/missing.yaml"}).status().code(), StatusCode::kNotFound);
  Result<DaemonConfig> bad = Parse({"--config", Write("snapshots:\n  retian: 3\n")});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status().message(), "snapshots.retian"));
}

TEST_F(ConfigCommandLineTest, BadFlagsAreInvalidWithUsage) {
  const std::vector<std::vector<std::string>> bad = {
      {"--no-such-flag"},
      {"--retain"},  // no value
      {"stray-positional"},
      {"--config"},
      {"--retain", "1", "--retain", "2"},
      {"--verify"},               // no value
      {"--no-verify-on-commit"},  // replaced by --verify off

  };
  for (const std::vector<std::string>& args : bad) {
    Result<DaemonConfig> config = Parse(args);
    EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument) << args[0];
    EXPECT_TRUE(Contains(config.status().message(), "--memory-budget"))  // the usage text
        << config.status().message();
  }
}

TEST_F(ConfigCommandLineTest, BadValuesNameTheFlag) {
  const struct {
    std::vector<std::string> args;
    const char* part;
  } cases[] = {
      {{"--retain", "0"}, "--retain"},
      {{"--retain", "two"}, "--retain"},
      {{"--memory-budget", "8GB"}, "--memory-budget"},
      {{"--memory-budget", "-1"}, "--memory-budget"},
      {{"--log-level", "loud"}, "--log-level"},
      {{"--verify-threads", "65"}, "--verify-threads"},
      {{"--shm-prefix", "a/b"}, "--shm-prefix"},
      {{"--node-id", ""}, "--node-id"},
      {{"--max-items", "-3"}, "--max-items"},
      {{"--verify", "no"}, "--verify"},
  };
  for (const auto& c : cases) {
    Result<DaemonConfig> config = Parse(c.args);
    EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument) << c.part;
    EXPECT_TRUE(Contains(config.status().message(), c.part)) << config.status().message();
  }
}

// An unknown verify mode names the key (file) or the flag, and every mode
// that would have been accepted. Modes are lower case, like log levels.
TEST_F(ConfigCommandLineTest, UnknownVerifyModeNamesTheAllowedValues) {
  for (const char* bad : {"true", "Commit", "BACKGROUND", "none", "on-commit", "1"}) {
    SCOPED_TRACE(bad);
    Result<DaemonConfig> file = LoadConfigFile(Write(std::string("snapshots:\n  verify: ") + bad));
    ASSERT_EQ(file.status().code(), StatusCode::kInvalidArgument) << file.status().ToString();
    Result<DaemonConfig> flag = Parse({"--verify", bad});
    ASSERT_EQ(flag.status().code(), StatusCode::kInvalidArgument) << flag.status().ToString();
    for (const std::string& part :
         {std::string(bad), std::string("commit"), std::string("background"), std::string("off")}) {
      EXPECT_TRUE(Contains(file.status().message(), part)) << file.status().message();
      EXPECT_TRUE(Contains(flag.status().message(), part)) << flag.status().message();
    }
    EXPECT_TRUE(Contains(file.status().message(), "snapshots.verify")) << file.status().message();
    EXPECT_TRUE(Contains(file.status().message(), "line 2")) << file.status().message();
    EXPECT_TRUE(Contains(flag.status().message(), "--verify")) << flag.status().message();
  }
}

TEST_F(ConfigCommandLineTest, HelpAndVersionPrintAndExit) {
  bool exit_now = false;
  ::testing::internal::CaptureStdout();
  Result<DaemonConfig> help = Parse({"--help"}, &exit_now);
  std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_TRUE(help.ok()) << help.status().ToString();
  EXPECT_TRUE(exit_now);
  for (const char* part : {"--config", "--node-id", "--memory-budget", "--verify", "MODE",
                           "default background", "--log-level", "8GiB", "snapshots.retain"}) {
    EXPECT_TRUE(Contains(out, part)) << part << " not in:\n" << out;
  }

  exit_now = false;
  ::testing::internal::CaptureStdout();
  Result<DaemonConfig> version = Parse({"--version"}, &exit_now);
  out = ::testing::internal::GetCapturedStdout();
  EXPECT_TRUE(version.ok());
  EXPECT_TRUE(exit_now);
  EXPECT_TRUE(Contains(out, "holdfastd ")) << out;

  // --help wins over a broken config file: it is never read.
  exit_now = false;
  ::testing::internal::CaptureStdout();
  Result<DaemonConfig> both = Parse({"--config", dir_ + "/missing.yaml", "-h"}, &exit_now);
  (void)::testing::internal::GetCapturedStdout();
  EXPECT_TRUE(both.ok());
  EXPECT_TRUE(exit_now);
}

}  // namespace
}  // namespace holdfast::smp
