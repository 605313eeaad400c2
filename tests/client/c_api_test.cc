// The C ABI (holdfast/client/holdfast.h): the C99 program c_api_roundtrip
// against a real holdfastd (and against one that was SIGKILLed), and, from
// C++, argument checks, codes and the per-thread error message.
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "holdfast/client/client.h"
#include "holdfast/client/holdfast.h"

namespace holdfast::testing {
namespace {

// Runs `argv` to completion (killing it at the deadline) and reports its exit
// and output; the output files go to `dir`.
struct ProgramRun {
  ExitInfo exit;
  std::string out;
  std::string err;
  std::string Describe() const {
    return exit.ToString() + "\n---- stdout ----\n" + out + "---- stderr ----\n" + err;
  }
};

std::string OutputDir(const Daemon& daemon) {
  return std::filesystem::path(daemon.log_path()).parent_path().string();
}

ProgramRun Finish(ChildProcess& child, const std::string& out_path, const std::string& err_path,
                  std::chrono::milliseconds timeout) {
  ProgramRun run;
  std::optional<ExitInfo> exit = child.Wait(timeout);
  run.exit = exit ? *exit : child.Kill();
  run.out = ReadFile(out_path);
  run.err = ReadFile(err_path);
  return run;
}

class CApiTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.Start()); }

  hf_client* Connect() {
    const std::string endpoint = "unix:" + daemon_.socket_path();
    hf_options o;
    hf_options_init(&o);
    o.endpoint = endpoint.c_str();
    o.job_id = "c-api-cc";
    o.rpc_timeout_ms = static_cast<int>(Scaled(20s).count());
    hf_client* c = nullptr;
    EXPECT_EQ(hf_connect(&o, &c), HF_OK) << hf_last_error();
    return c;
  }

  Daemon daemon_;
};

TEST_F(CApiTest, CProgramRoundTrips) {
  const std::string dir = OutputDir(daemon_);
  ChildProcess child =
      ChildProcess::Spawn({HOLDFAST_C_API_ROUNDTRIP_PATH, daemon_.socket_path(), "roundtrip"}, {},
                          dir + "/roundtrip.out", dir + "/roundtrip.err");
  ASSERT_TRUE(child.valid());
  ProgramRun run = Finish(child, dir + "/roundtrip.out", dir + "/roundtrip.err", Scaled(120s));
  EXPECT_TRUE(run.exit.exited && run.exit.code == 0) << run.Describe();
  EXPECT_NE(run.out.find("ok\n"), std::string::npos) << run.Describe();
}

// The daemon is SIGKILLed under a connected C client: its saves fail with
// HF_UNAVAILABLE and a message instead of hanging.
TEST_F(CApiTest, CProgramSeesUnavailableWhenTheDaemonIsGone) {
  const std::string dir = OutputDir(daemon_);
  const std::string out = dir + "/gone.out";
  const std::string err = dir + "/gone.err";
  const std::string go = dir + "/gone.go";
  ChildProcess child = ChildProcess::Spawn(
      {HOLDFAST_C_API_ROUNDTRIP_PATH, daemon_.socket_path(), "daemon-gone", go}, {}, out, err);
  ASSERT_TRUE(child.valid());
  const auto deadline = std::chrono::steady_clock::now() + Scaled(60s);
  while (ReadFile(out).find("ready\n") == std::string::npos && child.Running() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_NE(ReadFile(out).find("ready\n"), std::string::npos)
      << Finish(child, out, err, 0ms).Describe();
  daemon_.Kill();
  std::ofstream(go) << "go\n";
  ProgramRun run = Finish(child, out, err, Scaled(120s));
  EXPECT_TRUE(run.exit.exited && run.exit.code == 0) << run.Describe();
  EXPECT_NE(run.out.find("UNAVAILABLE"), std::string::npos) << run.Describe();
  EXPECT_NE(run.out.find("ok\n"), std::string::npos) << run.Describe();
}

// Item fields the layer converts are checked before anything is queued.
TEST_F(CApiTest, ItemFieldsAreChecked) {
  hf_client* c = Connect();
  ASSERT_NE(c, nullptr);
  const int64_t shape[] = {4};
  float data[4] = {1, 2, 3, 4};
  hf_item item{.name = "x",
               .dtype = HF_DTYPE_FLOAT32,
               .shape = shape,
               .ndim = 1,
               .data = data,
               .nbytes = sizeof data,
               .device = HF_DEVICE_CPU,
               .device_index = 0};
  hf_snapshot* h = nullptr;

  hf_item bad = item;
  bad.dtype = 0;
  EXPECT_EQ(hf_save_async(c, 1, &bad, 1, &h), HF_INVALID_ARGUMENT);
  EXPECT_NE(std::string(hf_last_error()).find("items[0].dtype"), std::string::npos)
      << hf_last_error();
  bad.dtype = HF_DTYPE_FLOAT8_E5M2 + 1;
  EXPECT_EQ(hf_save_async(c, 1, &bad, 1, &h), HF_INVALID_ARGUMENT);
  bad = item;
  bad.device = 7;
  EXPECT_EQ(hf_save(c, 1, &bad, 1, nullptr), HF_INVALID_ARGUMENT);
  EXPECT_NE(std::string(hf_last_error()).find("items[0].device"), std::string::npos)
      << hf_last_error();
  EXPECT_EQ(h, nullptr);

  // C++ exceptions become codes: a count no vector can hold makes the
  // layer's reserve() throw before any item is read.
  for (int rc : {hf_save_async(c, 1, &item, SIZE_MAX, &h), hf_save(c, 1, &item, SIZE_MAX, nullptr)}) {
    EXPECT_TRUE(rc == HF_INTERNAL || rc == HF_RESOURCE_EXHAUSTED) << hf_code_name(rc);
    EXPECT_EQ(std::string(hf_last_error()).rfind("hf_save", 0), 0u) << hf_last_error();
  }
  hf_target target{"x", data, sizeof data};
  const int restore_rc = hf_restore(c, 0, 1, &target, SIZE_MAX, nullptr);
  EXPECT_TRUE(restore_rc == HF_INTERNAL || restore_rc == HF_RESOURCE_EXHAUSTED)
      << hf_code_name(restore_rc);
  EXPECT_EQ(std::string(hf_last_error()).rfind("hf_restore: ", 0), 0u) << hf_last_error();
  EXPECT_EQ(h, nullptr);

  // The C++ library's own checks arrive on the handle, as in C++.
  hf_item dup[2] = {item, item};
  ASSERT_EQ(hf_save_async(c, 1, dup, 2, &h), HF_OK) << hf_last_error();
  EXPECT_EQ(hf_snapshot_wait(h, -1, nullptr), HF_INVALID_ARGUMENT);
  EXPECT_STRNE(hf_last_error(), "");
  hf_snapshot_free(h);

  hf_save_stats stats{};
  EXPECT_EQ(hf_save(c, 1, &item, 1, &stats), HF_OK) << hf_last_error();
  EXPECT_STREQ(hf_last_error(), "");
  EXPECT_EQ(stats.step, 1);
  EXPECT_EQ(stats.bytes, sizeof data);
  hf_client_free(c);
}

// A handle outlives its client: freeing the client finishes the snapshots
// already asked for. Several threads may wait on one handle.
TEST_F(CApiTest, HandlesOutliveTheClientAndTakeConcurrentWaits) {
  hf_client* c = Connect();
  ASSERT_NE(c, nullptr);
  std::vector<uint8_t> bytes(5 << 20, 0x3C);
  hf_item item{.name = "blob",
               .dtype = HF_DTYPE_BYTES,
               .shape = nullptr,
               .ndim = 0,
               .data = bytes.data(),
               .nbytes = bytes.size(),
               .device = HF_DEVICE_CPU,
               .device_index = 0};
  hf_snapshot* first = nullptr;
  hf_snapshot* second = nullptr;
  ASSERT_EQ(hf_save_async(c, 1, &item, 1, &first), HF_OK) << hf_last_error();
  ASSERT_EQ(hf_save_async(c, 2, &item, 1, &second), HF_OK) << hf_last_error();
  std::vector<std::thread> waiters;
  std::vector<int> codes(4, -1);
  for (size_t i = 0; i < codes.size(); ++i) {
    waiters.emplace_back([&, i] { codes[i] = hf_snapshot_wait(first, -1, nullptr); });
  }
  for (std::thread& t : waiters) t.join();
  for (int code : codes) EXPECT_EQ(code, HF_OK);
  hf_client_free(c);
  EXPECT_EQ(hf_snapshot_done(second), 1);
  hf_save_stats stats{};
  EXPECT_EQ(hf_snapshot_wait(second, 0, &stats), HF_OK) << hf_last_error();
  EXPECT_EQ(stats.step, 2);
  hf_snapshot_free(first);
  hf_snapshot_free(second);
}

TEST(CApiArguments, CodesAndNames) {
  for (int code = 0; code <= 15; ++code) {
    EXPECT_EQ(hf_code_name(code), StatusCodeName(static_cast<StatusCode>(code)));
  }
  EXPECT_STREQ(hf_code_name(HF_INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_STREQ(hf_code_name(-1), "(invalid code)");
  EXPECT_STREQ(hf_code_name(16), "(invalid code)");
  EXPECT_EQ(hf_api_version(), HOLDFAST_C_API_VERSION);
  EXPECT_EQ(hf_cuda_available(), client::Client::CudaAvailable() ? 1 : 0);
}

TEST(CApiArguments, OptionDefaultsAreTheCppDefaults) {
  hf_options o;
  hf_options_init(&o);
  const client::Options d;
  ASSERT_NE(o.endpoint, nullptr);
  EXPECT_EQ(o.endpoint, d.endpoint);
  ASSERT_NE(o.job_id, nullptr);
  EXPECT_EQ(o.job_id, d.job_id);
  EXPECT_EQ(o.rank, d.rank);
  EXPECT_EQ(o.world_size, d.world_size);
  EXPECT_EQ(o.local_ranks, nullptr);
  EXPECT_EQ(o.num_local_ranks, 0u);
  EXPECT_EQ(o.rpc_timeout_ms, d.rpc_timeout.count());
  EXPECT_EQ(o.open_session != 0, d.open_session);
  EXPECT_EQ(o.mapping_cache, d.mapping_cache);
  EXPECT_EQ(o.copy_threads, d.copy_threads);
  hf_options_init(nullptr);  // ignored
}

// Every NULL argument is refused with a message naming it; outputs are left
// alone; free functions take NULL.
TEST(CApiArguments, NullArgumentsAreRefused) {
  auto expect_invalid = [](int rc, const char* argument) {
    EXPECT_EQ(rc, HF_INVALID_ARGUMENT) << argument << ": " << hf_code_name(rc);
    EXPECT_NE(std::string(hf_last_error()).find(argument), std::string::npos)
        << "'" << hf_last_error() << "' does not name " << argument;
  };
  hf_options o;
  hf_options_init(&o);
  hf_client* c = nullptr;
  expect_invalid(hf_connect(nullptr, &c), "options");
  expect_invalid(hf_connect(&o, nullptr), "out");
  o.endpoint = nullptr;
  expect_invalid(hf_connect(&o, &c), "options->endpoint");
  hf_options_init(&o);
  o.job_id = nullptr;
  expect_invalid(hf_connect(&o, &c), "options->job_id");
  hf_options_init(&o);
  o.num_local_ranks = 2;
  expect_invalid(hf_connect(&o, &c), "options->local_ranks");
  hf_options_init(&o);
  o.rpc_timeout_ms = 0;
  expect_invalid(hf_connect(&o, &c), "options->rpc_timeout_ms");
  EXPECT_EQ(c, nullptr);

  hf_snapshot* h = nullptr;
  hf_item item{};
  item.name = "x";
  item.dtype = HF_DTYPE_BYTES;
  expect_invalid(hf_save_async(nullptr, 1, &item, 1, &h), "client");
  expect_invalid(hf_save(nullptr, 1, &item, 1, nullptr), "client");
  EXPECT_EQ(h, nullptr);
  expect_invalid(hf_snapshot_wait(nullptr, -1, nullptr), "snapshot");
  expect_invalid(hf_snapshot_wait_staged(nullptr, 0), "snapshot");
  EXPECT_EQ(hf_snapshot_staged(nullptr), -1);
  EXPECT_NE(std::string(hf_last_error()).find("snapshot"), std::string::npos);
  EXPECT_EQ(hf_snapshot_done(nullptr), -1);

  int64_t step = 0;
  int found = 0;
  expect_invalid(hf_latest_step(nullptr, &step, &found), "client");
  hf_item_list* list = nullptr;
  expect_invalid(hf_list_items(nullptr, 0, 1, &list), "client");
  EXPECT_EQ(list, nullptr);
  EXPECT_EQ(hf_item_list_size(nullptr), 0u);
  hf_item_info info{};
  expect_invalid(hf_item_list_get(nullptr, 0, &info), "list");
  hf_target target{"x", nullptr, 0};
  expect_invalid(hf_restore(nullptr, 0, 1, &target, 1, nullptr), "client");
  expect_invalid(hf_drop(nullptr, 0, 1), "client");

  hf_client_free(nullptr);
  hf_snapshot_free(nullptr);
  hf_item_list_free(nullptr);
}

// hf_last_error is per thread, and only calls that return a code change it
// (success clearing it is checked against a daemon, above and in
// c_api_roundtrip.c).
TEST(CApiArguments, LastErrorIsPerThread) {
  EXPECT_EQ(hf_drop(nullptr, 0, 1), HF_INVALID_ARGUMENT);
  const std::string message = hf_last_error();
  EXPECT_NE(message, "");
  std::string other_thread = "unset";
  std::thread([&] { other_thread = hf_last_error(); }).join();
  EXPECT_EQ(other_thread, "");
  hf_client_free(nullptr);
  hf_item_list_free(nullptr);
  EXPECT_EQ(hf_item_list_size(nullptr), 0u);
  EXPECT_STREQ(hf_code_name(HF_OK), "OK");
  hf_options o;
  hf_options_init(&o);
  EXPECT_EQ(hf_last_error(), message);
}

// Nothing listens at the endpoint: HF_UNAVAILABLE with a message, no client.
TEST(CApiArguments, ConnectWithoutADaemon) {
  hf_options o;
  hf_options_init(&o);
  o.endpoint = "unix:/nonexistent/holdfast-c-api-test.sock";
  o.rpc_timeout_ms = static_cast<int>(Scaled(5s).count());
  hf_client* c = nullptr;
  EXPECT_EQ(hf_connect(&o, &c), HF_UNAVAILABLE) << hf_last_error();
  EXPECT_EQ(c, nullptr);
  EXPECT_STRNE(hf_last_error(), "");
}

}  // namespace
}  // namespace holdfast::testing
