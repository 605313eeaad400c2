// ServiceNotifier (smp/lifecycle/notify.h) against a Unix datagram socket
// standing in for systemd, and a loop the test runs or stalls by hand: the
// watchdog keep-alive must stop while the loop does not answer, and come
// back when it does; nothing at all happens without NOTIFY_SOCKET.
#include "lifecycle/notify.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace holdfast::smp {
namespace {

using namespace std::chrono_literals;

// A bound datagram socket and NOTIFY_SOCKET/WATCHDOG_USEC naming it, for the
// test's lifetime.
class FakeSystemd {
 public:
  explicit FakeSystemd(const char* watchdog_usec) {
    char tmpl[] = "/tmp/hf-notify-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/notify";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
    if (watchdog_usec != nullptr) setenv("WATCHDOG_USEC", watchdog_usec, 1);
  }
  ~FakeSystemd() {
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    close(fd_);
    std::filesystem::remove_all(dir_);
  }

  // Every message that arrives within `window`.
  std::vector<std::string> Receive(std::chrono::milliseconds window) {
    std::vector<std::string> out;
    const auto deadline = std::chrono::steady_clock::now() + window;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return out;
      timeval tv{.tv_sec = static_cast<time_t>(left.count() / 1000000),
                 .tv_usec = static_cast<suseconds_t>(left.count() % 1000000)};
      setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) out.emplace_back(buf, static_cast<size_t>(n));
    }
  }

 private:
  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

int Count(const std::vector<std::string>& messages, const std::string& line) {
  int n = 0;
  for (const std::string& m : messages) {
    size_t start = 0;
    while (start <= m.size()) {
      size_t end = m.find('\n', start);
      if (end == std::string::npos) end = m.size();
      if (m.compare(start, end - start, line) == 0) ++n;
      start = end + 1;
    }
  }
  return n;
}

// A loop the test can stall: tasks run on its thread only while `running`.
class ManualLoop {
 public:
  ManualLoop() : thread_([this] { Run(); }) {}
  ~ManualLoop() {
    stop_ = true;
    thread_.join();
  }
  void Post(std::function<void()> task) {
    std::lock_guard lock(mu_);
    tasks_.push_back(std::move(task));
    ++posted_;
  }
  void set_running(bool running) { running_ = running; }
  int posted() {
    std::lock_guard lock(mu_);
    return posted_;
  }

 private:
  void Run() {
    while (!stop_) {
      std::function<void()> task;
      {
        std::lock_guard lock(mu_);
        if (running_ && !tasks_.empty()) {
          task = std::move(tasks_.front());
          tasks_.pop_front();
        }
      }
      if (task) {
        task();
      } else {
        std::this_thread::sleep_for(2ms);
      }
    }
  }
  std::mutex mu_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  int posted_ = 0;                           // guarded by mu_
  std::atomic<bool> running_{true};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

ServiceNotifier::Options OptionsFor(ManualLoop* loop, std::atomic<int>* described) {
  ServiceNotifier::Options options;
  options.post = [loop](std::function<void()> task) { loop->Post(std::move(task)); };
  options.describe = [described] { return "probe " + std::to_string(++*described); };
  return options;
}

TEST(ServiceNotifierTest, WithoutNotifySocketNothingHappens) {
  unsetenv("NOTIFY_SOCKET");
  ManualLoop loop;
  std::atomic<int> described{0};
  ServiceNotifier notifier(OptionsFor(&loop, &described));
  EXPECT_FALSE(notifier.enabled());
  notifier.Starting("recovering");
  notifier.Ready("serving");
  notifier.Status("x");
  std::this_thread::sleep_for(50ms);
  notifier.Stopping("stopping");
  EXPECT_EQ(loop.posted(), 0);
}

TEST(ServiceNotifierTest, WatchdogFollowsTheLoop) {
  FakeSystemd systemd("100000");  // 100 ms: a probe every 50 ms
  ManualLoop loop;
  std::atomic<int> described{0};
  auto notifier = std::make_unique<ServiceNotifier>(OptionsFor(&loop, &described));
  ASSERT_TRUE(notifier->enabled());
  EXPECT_EQ(notifier->watchdog(), 100ms);

  // While recovering, keep-alives come without asking the loop.
  loop.set_running(false);
  notifier->Starting("recovering");
  auto messages = systemd.Receive(200ms);
  EXPECT_EQ(Count(messages, "STATUS=recovering"), 1);
  EXPECT_GE(Count(messages, "WATCHDOG=1"), 2);
  EXPECT_EQ(loop.posted(), 0);

  loop.set_running(true);
  notifier->Ready("serving on x");
  messages = systemd.Receive(400ms);
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages[0], "READY=1\nSTATUS=serving on x");
  EXPECT_GE(Count(messages, "WATCHDOG=1"), 4);
  EXPECT_GE(described.load(), 4);

  // A stalled loop: at most the keep-alive of a probe answered before the
  // stall, then none; and no probes pile up.
  loop.set_running(false);
  (void)systemd.Receive(120ms);
  const int posted = loop.posted();
  messages = systemd.Receive(400ms);
  EXPECT_EQ(Count(messages, "WATCHDOG=1"), 0);
  EXPECT_EQ(loop.posted(), posted);

  loop.set_running(true);
  messages = systemd.Receive(300ms);
  EXPECT_GE(Count(messages, "WATCHDOG=1"), 2);

  notifier->Stopping("stopping");
  messages = systemd.Receive(150ms);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0], "STOPPING=1\nSTATUS=stopping");
  notifier.reset();
}

TEST(ServiceNotifierTest, StatusIsSentWhenItChanges) {
  FakeSystemd systemd(nullptr);
  ManualLoop loop;
  ServiceNotifier::Options options;
  options.post = [&loop](std::function<void()> task) { loop.Post(std::move(task)); };
  options.describe = [] { return std::string("the same"); };
  options.status_interval = 30ms;
  ServiceNotifier notifier(std::move(options));
  EXPECT_EQ(notifier.watchdog().count(), 0);
  notifier.Ready("serving");
  auto messages = systemd.Receive(300ms);
  EXPECT_EQ(Count(messages, "READY=1"), 1);
  EXPECT_EQ(Count(messages, "STATUS=the same"), 1);
  EXPECT_EQ(Count(messages, "WATCHDOG=1"), 0);
  EXPECT_GE(loop.posted(), 3);
  notifier.Stopping("bye");
}

TEST(DescribeStatusTest, OneLine) {
  v1::GetStatusResponse st;
  st.set_memory_budget_bytes(uint64_t{8} << 30);
  st.set_memory_used_bytes(uint64_t{3} << 29);
  auto* job = st.add_jobs();
  job->set_versions(2);
  EXPECT_EQ(DescribeStatus(st), "serving: 1 job, 2 versions, 1.5 GiB of 8.0 GiB used");

  auto* c = st.mutable_cluster();
  c->set_cluster_id("c1");
  c->set_position(2);
  c->add_members()->set_up(true);
  c->add_members()->set_up(false);
  c->add_members()->set_up(true);
  c->set_rebuilding(true);
  c->set_parity_bytes(uint64_t{1} << 30);
  c->set_last_error("DATA_LOSS: job j step 4\ngroup 0");
  EXPECT_EQ(DescribeStatus(st),
            "rebuilding: 1 job, 2 versions, 1.5 GiB of 8.0 GiB used; cluster c1 group 0 "
            "position 2, 2/3 members up, 1.0 GiB parity; last error: DATA_LOSS: job j step 4 "
            "group 0");
}

}  // namespace
}  // namespace holdfast::smp
