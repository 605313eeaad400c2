#include "lifecycle/notify.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <utility>

namespace holdfast::smp {
namespace {

std::string Plural(uint64_t n, const char* word) {
  return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s");
}

double GiB(uint64_t bytes) { return static_cast<double>(bytes) / double(uint64_t{1} << 30); }

}  // namespace

std::string DescribeStatus(const v1::GetStatusResponse& status) {
  uint64_t versions = 0;
  for (const auto& job : status.jobs()) versions += job.versions();
  const bool rebuilding = status.has_cluster() && status.cluster().rebuilding();
  std::string out = fmt::format("{}: {}, {}, {:.1f} GiB of {:.1f} GiB used",
                                rebuilding ? "rebuilding" : "serving",
                                Plural(static_cast<uint64_t>(status.jobs_size()), "job"),
                                Plural(versions, "version"), GiB(status.memory_used_bytes()),
                                GiB(status.memory_budget_bytes()));
  if (status.background_verifications() > 0) {
    out += fmt::format(", {} being verified",
                       Plural(status.background_verifications(), "rank part"));
  }
  if (status.damaged_versions() > 0) {
    out += fmt::format(", {} found damaged", Plural(status.damaged_versions(), "version"));
  }
  if (status.has_cluster()) {
    const v1::ClusterStatus& c = status.cluster();
    int up = 0;
    for (const auto& member : c.members()) up += member.up() ? 1 : 0;
    out += fmt::format("; cluster {} group {} position {}, {}/{} members up, {:.1f} GiB parity",
                       c.cluster_id(), c.group(), c.position(), up, c.members_size(),
                       GiB(c.parity_bytes()));
    if (!c.last_error().empty()) {
      // systemctl shows one line; the log has the whole message.
      constexpr size_t kMaxError = 160;
      std::string error = c.last_error().substr(0, kMaxError);
      for (char& ch : error) {
        if (ch == '\n') ch = ' ';
      }
      out += "; last error: " + error;
    }
  }
  return out;
}

struct ServiceNotifier::Probe {
  std::mutex mu;
  bool done = false;  // guarded by mu
  std::string text;   // guarded by mu
};

ServiceNotifier::ServiceNotifier(Options options) : options_(std::move(options)) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && socket[0] != '\0';
  uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is us.
  if (enabled_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_ = std::chrono::microseconds(usec);
  }
}

ServiceNotifier::~ServiceNotifier() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void ServiceNotifier::Send(const std::string& message) {
  if (!enabled_) return;
  const int r = sd_notify(0, message.c_str());
  if (r < 0) {
    // Not fatal: systemd then times the start out, or kills us for a
    // missing keep-alive, and says so in its own log.
    spdlog::warn("sd_notify({}): {}", message.substr(0, message.find('\n')),
                 std::strerror(-r));
  }
}

std::chrono::microseconds ServiceNotifier::Period() const {
  if (watchdog_.count() > 0) return watchdog_ / 2;
  return std::chrono::duration_cast<std::chrono::microseconds>(options_.status_interval);
}

void ServiceNotifier::Starting(const std::string& status) {
  if (!enabled_) return;
  Send("STATUS=" + status);
  if (watchdog_.count() > 0 && !heartbeat_.joinable()) {
    heartbeat_ = std::thread([this] { Heartbeat(); });
  }
}

void ServiceNotifier::Ready(const std::string& status) {
  if (!enabled_) return;
  Send("READY=1\nSTATUS=" + status);
  {
    std::lock_guard lock(mu_);
    ready_ = true;
  }
  cv_.notify_all();
  if (!heartbeat_.joinable()) heartbeat_ = std::thread([this] { Heartbeat(); });
}

void ServiceNotifier::Status(const std::string& text) { Send("STATUS=" + text); }

void ServiceNotifier::Stopping(const std::string& status) {
  if (!enabled_) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
  Send("STOPPING=1\nSTATUS=" + status);
}

void ServiceNotifier::Heartbeat() {
  const bool watchdog = watchdog_.count() > 0;
  std::shared_ptr<Probe> probe;  // posted to the loop, not yet seen back
  std::string last_status;
  auto since = std::chrono::steady_clock::now();
  bool warned = false;
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (!ready_) {
      // main() is recovering; the loop is not serving yet.
      lock.unlock();
      if (watchdog) Send("WATCHDOG=1");
      lock.lock();
    } else {
      lock.unlock();
      if (probe) {
        bool done = false;
        std::string text;
        {
          std::lock_guard probe_lock(probe->mu);
          done = probe->done;
          text = probe->text;
        }
        if (done) {
          std::string message = watchdog ? "WATCHDOG=1" : "";
          if (text != last_status) {
            if (!message.empty()) message += '\n';
            message += "STATUS=" + text;
            last_status = text;
          }
          if (!message.empty()) Send(message);
          if (warned) spdlog::info("event loop answers again");
          probe.reset();
          warned = false;
        } else if (!warned) {
          const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - since);
          spdlog::warn("event loop has not answered a probe for {} ms{}", waited.count(),
                       watchdog ? "; withholding the watchdog keep-alive" : "");
          warned = true;
        }
      }
      if (!probe) {
        // The task holds the probe, not `this`: it may run after we are gone.
        probe = std::make_shared<Probe>();
        since = std::chrono::steady_clock::now();
        options_.post([probe, describe = options_.describe] {
          std::string text = describe();
          std::lock_guard probe_lock(probe->mu);
          probe->text = std::move(text);
          probe->done = true;
        });
      }
      lock.lock();
    }
    cv_.wait_for(lock, Period(), [this] { return stopping_; });
  }
}

}  // namespace holdfast::smp
