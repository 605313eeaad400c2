// Tells the service manager how holdfastd is doing (systemd Type=notify,
// deploy/holdfastd.service): READY=1 once the daemon serves, STATUS= lines,
// STOPPING=1 at shutdown, and WATCHDOG=1 while its event loop answers.
//
// Without a service manager (NOTIFY_SOCKET unset) every call does nothing
// and no thread is started: the daemon behaves exactly as before.
//
// Thread-safety: Starting, Ready and Stopping are called from one thread
// (main), in that order; Status from any thread. The heartbeat thread only
// posts probes to the loop and sends datagrams.
#ifndef HOLDFAST_SMP_LIFECYCLE_NOTIFY_H_
#define HOLDFAST_SMP_LIFECYCLE_NOTIFY_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "holdfast/v1/snapshot.pb.h"

namespace holdfast::smp {

// One line for systemd's STATUS= (shown by `systemctl status`): versions,
// memory, and in a cluster the group, members up and a rebuild in progress,
// e.g. "serving: 1 job, 2 versions, 1.5 GiB of 8.0 GiB used; cluster c1
// group 0 position 1, 3/3 members up".
std::string DescribeStatus(const v1::GetStatusResponse& status);

class ServiceNotifier {
 public:
  // Runs a task on the daemon's event loop (EventLoop::Post).
  using Post = std::function<void(std::function<void()>)>;
  // Runs on the loop; the STATUS= line (DescribeStatus of GetStatus).
  using Describe = std::function<std::string()>;

  struct Options {
    Post post;
    Describe describe;
    // How often STATUS= is refreshed when systemd asks for no watchdog.
    std::chrono::milliseconds status_interval{5000};
  };

  // Reads NOTIFY_SOCKET and WATCHDOG_USEC (sd_watchdog_enabled); starts
  // nothing.
  explicit ServiceNotifier(Options options);
  ~ServiceNotifier();  // stops the heartbeat thread
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  bool enabled() const { return enabled_; }
  // systemd's WatchdogSec; zero when it asks for no watchdog.
  std::chrono::microseconds watchdog() const { return watchdog_; }

  // Before recovery: sends STATUS=`status` and, with a watchdog, starts the
  // heartbeat, which keeps systemd's watchdog fed while main() recovers
  // (recovery is bounded by TimeoutStartSec instead).
  void Starting(const std::string& status);

  // Once the daemon serves (recovered, every listening socket open): sends
  // READY=1 with STATUS=`status`. From then on the heartbeat posts a probe to
  // the loop every period (half the watchdog, or status_interval); a probe
  // that ran sends STATUS=<describe()> and WATCHDOG=1. While a probe has not
  // run, no WATCHDOG=1 is sent (a warning is logged once), so a stuck loop
  // makes systemd kill the daemon after WatchdogSec and Restart= restart it;
  // segments and catalog survive that like any crash.
  void Ready(const std::string& status);

  // Sends STATUS=`text` now.
  void Status(const std::string& text);

  // Stops the heartbeat (before the loop stops), then sends STOPPING=1 with
  // STATUS=`status`.
  void Stopping(const std::string& status);

 private:
  struct Probe;
  void Send(const std::string& message);
  void Heartbeat();
  std::chrono::microseconds Period() const;

  Options options_;
  bool enabled_ = false;
  std::chrono::microseconds watchdog_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  bool ready_ = false;     // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread heartbeat_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_LIFECYCLE_NOTIFY_H_
