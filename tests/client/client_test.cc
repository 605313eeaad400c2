// libholdfast against a real holdfastd: asynchronous snapshots (staged and
// committed, in order, errors on the handle), restores bit for bit, and what
// a trainer sees when its daemon stalls or dies.
#include "holdfast/client/client.h"

#include <signal.h>

#include <cstring>
#include <thread>
#include <vector>

#include "harness.h"
#include "holdfast/testing/status_matchers.h"

namespace holdfast::testing {
namespace {

using client::Client;
using client::DType;
using client::ItemView;
using client::RestoreTarget;
using client::SnapshotHandle;

constexpr int kItems = 6;
constexpr uint64_t kItemBytes = 3 << 20;  // several copy slices per item, with a tail

// One rank's state: kItems fp32 tensors, a distinct pattern per step.
struct State {
  std::vector<std::vector<uint8_t>> tensors;

  State(std::mt19937_64& rng) {
    for (int i = 0; i < kItems; ++i) tensors.push_back(RandomBytes(rng, kItemBytes));
  }
  std::vector<ItemView> Items() const {
    std::vector<ItemView> items;
    for (int i = 0; i < kItems; ++i) {
      items.push_back({.name = "param" + std::to_string(i),
                       .dtype = DType::kFloat32,
                       .shape = {static_cast<int64_t>(kItemBytes / 4)},
                       .data = tensors[i].data(),
                       .nbytes = kItemBytes});
    }
    return items;
  }
};

class ClientTest : public ::testing::Test {
 protected:
  ClientTest() : daemon_({.memory_budget = "512MiB", .retain = 2}) {}

  void SetUp() override { ASSERT_TRUE(daemon_.Start()); }

  std::unique_ptr<Client> Connect(int copy_threads = 0) {
    client::Options o;
    o.endpoint = "unix:" + daemon_.socket_path();
    o.job_id = "job";
    o.copy_threads = copy_threads;
    o.rpc_timeout = Scaled(20s);
    auto c = Client::Connect(o);
    EXPECT_TRUE(IsOk(c));
    return c.ok() ? std::move(c).value() : nullptr;
  }

  // Restores the newest (or `step`) into fresh buffers and compares.
  ::testing::AssertionResult RestoresAs(Client& c, const State& want, std::optional<int64_t> step,
                                        int64_t want_step) {
    std::vector<std::vector<uint8_t>> got(kItems, std::vector<uint8_t>(kItemBytes, 0));
    std::vector<RestoreTarget> targets;
    for (int i = 0; i < kItems; ++i) {
      targets.push_back({"param" + std::to_string(i), got[i].data(), kItemBytes});
    }
    auto stats = c.Restore(step, targets);
    if (!stats.ok()) return ::testing::AssertionFailure() << stats.status().ToString();
    if (stats->step != want_step) {
      return ::testing::AssertionFailure() << "restored step " << stats->step << ", want "
                                           << want_step;
    }
    for (int i = 0; i < kItems; ++i) {
      if (got[i] != want.tensors[i]) {
        return ::testing::AssertionFailure() << "item " << i << " differs";
      }
    }
    return ::testing::AssertionSuccess();
  }

  Daemon daemon_;
};

TEST_F(ClientTest, AsyncSaveStagesCommitsAndRestoresBitForBit) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  State s(rng);
  SnapshotHandle h = c->SaveAsync(7, s.Items());
  EXPECT_TRUE(h.valid());
  EXPECT_EQ(h.step(), 7);
  ASSERT_TRUE(IsOk(h.WaitStaged()));
  EXPECT_TRUE(h.staged());
  auto stats = h.Wait();
  ASSERT_TRUE(IsOk(stats));
  EXPECT_TRUE(h.done());
  EXPECT_EQ(stats->step, 7);
  EXPECT_EQ(stats->bytes, kItems * kItemBytes);
  EXPECT_TRUE(stats->version_complete);
  EXPECT_EQ(stats->copy_threads, c->copy_threads());
  EXPECT_GT(stats->copy_seconds, 0);
  auto latest = c->LatestStep();
  ASSERT_TRUE(IsOk(latest));
  EXPECT_EQ(latest->value_or(-1), 7);
  EXPECT_TRUE(RestoresAs(*c, s, std::nullopt, 7));
}

// Once staged, the caller may change its buffers: the snapshot keeps the
// bytes it had when it was asked for.
TEST_F(ClientTest, BuffersMayChangeOnceStaged) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  State s(rng);
  const State original = s;
  SnapshotHandle h = c->SaveAsync(1, s.Items());
  ASSERT_TRUE(IsOk(h.WaitStaged()));
  for (auto& t : s.tensors) std::memset(t.data(), 0xEE, t.size());  // "optimizer step"
  ASSERT_TRUE(IsOk(h.Wait()));
  EXPECT_TRUE(RestoresAs(*c, original, 1, 1));
}

// Snapshots asked for back to back are saved in order; every handle ends
// committed and the newest step wins.
TEST_F(ClientTest, QueuedSnapshotsCommitInOrder) {
  auto rng = TestRng();
  for (int threads : {1, 2}) {
    SCOPED_TRACE("copy threads " + std::to_string(threads));
    auto c = Connect(threads);
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(IsOk(c->Drop(std::nullopt)));
    std::vector<State> states;
    for (int i = 0; i < 5; ++i) states.emplace_back(rng);
    std::vector<SnapshotHandle> handles;
    for (int i = 0; i < 5; ++i) handles.push_back(c->SaveAsync(10 + i, states[i].Items()));
    for (int i = 0; i < 5; ++i) {
      auto stats = handles[i].Wait();
      ASSERT_TRUE(IsOk(stats)) << "step " << 10 + i;
      EXPECT_EQ(stats->step, 10 + i);
      EXPECT_EQ(stats->copy_threads, threads);
    }
    EXPECT_TRUE(RestoresAs(*c, states[4], std::nullopt, 14));
    EXPECT_TRUE(RestoresAs(*c, states[3], 13, 13));  // retain 2
  }
}

// A handle dropped without waiting still lets its snapshot commit; the
// destructor returns only once the caller's buffers are no longer read.
TEST_F(ClientTest, DroppedHandleStillCommits) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto s = std::make_unique<State>(rng);
  const State original = *s;
  { SnapshotHandle h = c->SaveAsync(3, s->Items()); }
  s.reset();  // free the buffers the snapshot was taken from
  const auto deadline = std::chrono::steady_clock::now() + Scaled(20s);
  std::optional<int64_t> latest;
  while (std::chrono::steady_clock::now() < deadline) {
    auto l = c->LatestStep();
    ASSERT_TRUE(IsOk(l));
    if ((latest = *l)) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(latest.value_or(-1), 3);
  EXPECT_TRUE(RestoresAs(*c, original, 3, 3));
}

// Bad snapshots fail on their handle, and the next one still works.
TEST_F(ClientTest, ErrorsSurfaceOnTheHandle) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  State s(rng);
  ASSERT_TRUE(IsOk(c->Save(5, s.Items())));

  // Not newer than the latest step.
  SnapshotHandle old = c->SaveAsync(5, s.Items());
  EXPECT_TRUE(HasCode(old.Wait(), StatusCode::kFailedPrecondition));
  EXPECT_TRUE(old.staged());
  EXPECT_TRUE(old.done());

  // Duplicate names.
  std::vector<ItemView> dup = s.Items();
  dup[1].name = dup[0].name;
  EXPECT_TRUE(HasCode(c->SaveAsync(6, dup).Wait(), StatusCode::kInvalidArgument));

  // Missing data.
  std::vector<ItemView> null_data = s.Items();
  null_data[2].data = nullptr;
  SnapshotHandle h = c->SaveAsync(6, null_data);
  EXPECT_TRUE(HasCode(h.WaitStaged(), StatusCode::kInvalidArgument));

  // A restore needs targets.
  EXPECT_TRUE(HasCode(c->Restore(std::nullopt, {}), StatusCode::kInvalidArgument));

  // A CUDA item in a process without CUDA (every test machine here).
  if (!Client::CudaAvailable()) {
    std::vector<ItemView> cuda = s.Items();
    cuda[0].device = client::Device::kCuda;
    auto r = c->SaveAsync(6, cuda).Wait();
    EXPECT_TRUE(HasCode(r, StatusCode::kFailedPrecondition));
    EXPECT_NE(r.status().message().find("CUDA"), std::string::npos) << r.status().ToString();
  }

  auto latest = c->LatestStep();
  ASSERT_TRUE(IsOk(latest));
  EXPECT_EQ(latest->value_or(-1), 5);
  ASSERT_TRUE(IsOk(c->Save(6, s.Items())));
  EXPECT_TRUE(RestoresAs(*c, s, std::nullopt, 6));
}

// A stalled daemon: waits with a time limit report DEADLINE_EXCEEDED, and the
// snapshot completes once the daemon runs again.
TEST_F(ClientTest, WaitWithTimeoutWhileTheDaemonStalls) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  State s(rng);
  ASSERT_EQ(kill(daemon_.pid(), SIGSTOP), 0);
  SnapshotHandle h = c->SaveAsync(1, s.Items());
  EXPECT_TRUE(HasCode(h.WaitStagedFor(200ms), StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(HasCode(h.WaitFor(50ms), StatusCode::kDeadlineExceeded));
  EXPECT_FALSE(h.staged());
  EXPECT_FALSE(h.done());
  ASSERT_EQ(kill(daemon_.pid(), SIGCONT), 0);
  ASSERT_TRUE(IsOk(h.Wait()));
  EXPECT_TRUE(RestoresAs(*c, s, 1, 1));
}

// The daemon died: the save fails on its handle with a clear error, and
// training code can go on (the next save fails the same way, no hang).
TEST_F(ClientTest, SaveFailsCleanlyWhenTheDaemonIsGone) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  State s(rng);
  ASSERT_TRUE(IsOk(c->Save(1, s.Items())));
  daemon_.Kill();
  for (int64_t step : {2, 3}) {
    SnapshotHandle h = c->SaveAsync(step, s.Items());
    auto r = h.WaitFor(Scaled(30s));
    EXPECT_TRUE(HasCode(r, StatusCode::kUnavailable)) << r.status().ToString();
    EXPECT_NE(r.status().message().find("step " + std::to_string(step)), std::string::npos)
        << r.status().ToString();
    EXPECT_TRUE(h.staged());
  }
  EXPECT_FALSE(c->LatestStep().ok());
}

// holdfastd restarts (an upgrade, or a crash and systemd's restart) under a
// running trainer: the client opens a new session and goes on saving; the
// committed versions come back.
TEST_F(ClientTest, SavingGoesOnAcrossDaemonRestarts) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  std::vector<State> states;
  for (int i = 0; i < 3; ++i) states.emplace_back(rng);
  ASSERT_TRUE(IsOk(c->Save(1, states[0].Items())));
  for (bool hard : {false, true}) {
    SCOPED_TRACE(hard ? "SIGKILL + restart" : "SIGTERM + restart");
    ASSERT_TRUE(daemon_.Restart(hard));
    const int64_t step = hard ? 3 : 2;
    auto saved = c->SaveAsync(step, states[step - 1].Items()).WaitFor(Scaled(30s));
    ASSERT_TRUE(IsOk(saved)) << saved.status().ToString();
    EXPECT_TRUE(RestoresAs(*c, states[step - 1], std::nullopt, step));
    EXPECT_TRUE(RestoresAs(*c, states[step - 2], step - 1, step - 1));
  }
}

// Saves on one thread while other threads restore and list: a Client is
// thread-safe.
TEST_F(ClientTest, ConcurrentSaveAndRestore) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  State first(rng);
  ASSERT_TRUE(IsOk(c->Save(1, first.Items())));
  std::vector<State> later;
  for (int i = 0; i < 4; ++i) later.emplace_back(rng);
  std::atomic<bool> failed{false};
  std::thread reader([&] {
    for (int i = 0; i < 6 && !failed; ++i) {
      std::vector<std::vector<uint8_t>> got(kItems, std::vector<uint8_t>(kItemBytes));
      std::vector<RestoreTarget> targets;
      for (int j = 0; j < kItems; ++j) {
        targets.push_back({"param" + std::to_string(j), got[j].data(), kItemBytes});
      }
      auto r = c->Restore(std::nullopt, targets);
      if (!r.ok()) {
        ADD_FAILURE() << r.status().ToString();
        failed = true;
        break;
      }
      // Whatever step it got must be that step's bytes.
      const State& want = r->step == 1 ? first : later[r->step - 2];
      for (int j = 0; j < kItems; ++j) {
        if (got[j] != want.tensors[j]) {
          ADD_FAILURE() << "step " << r->step << " item " << j << " differs";
          failed = true;
        }
      }
    }
  });
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(IsOk(c->SaveAsync(2 + i, later[i].Items()).Wait()));
  }
  reader.join();
  EXPECT_TRUE(RestoresAs(*c, later[3], std::nullopt, 5));
}

TEST_F(ClientTest, RestoreAllIntoLibraryMemory) {
  auto rng = TestRng();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  State s(rng);
  ASSERT_TRUE(IsOk(c->Save(2, s.Items())));
  auto all = c->RestoreAll(std::nullopt);
  ASSERT_TRUE(IsOk(all));
  EXPECT_EQ(all->step, 2);
  ASSERT_EQ(all->items.size(), static_cast<size_t>(kItems));
  for (int i = 0; i < kItems; ++i) {
    EXPECT_EQ(all->items[i].info.name, "param" + std::to_string(i));
    EXPECT_EQ(all->items[i].info.dtype, DType::kFloat32);
    ASSERT_EQ(all->items[i].info.nbytes, kItemBytes);
    EXPECT_EQ(std::memcmp(all->items[i].data.get(), s.tensors[i].data(), kItemBytes), 0);
  }
}

}  // namespace
}  // namespace holdfast::testing
