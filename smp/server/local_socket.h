// The trainers' Unix socket, accepted by holdfastd itself rather than by
// gRPC, so that the number of open connections is capped
// (grpc.max_connections; docs/security.md). gRPC 1.51 has no such limit: a
// local process looping on connect() would otherwise take every descriptor
// the daemon may open, and with them the segment files and the catalog its
// committed snapshots need.
//
//   Listen(options)  socket, bind (mode 0660 from the start: umask 0117),
//                    listen, chown to the socket group, chmod 0660
//   Start(server)    the accept thread: each connection under the cap goes to
//                    `server` (grpc::AddInsecureChannelFromFd, so the server's
//                    channel arguments and resource quota apply); a duplicate
//                    of its descriptor is watched (EPOLLRDHUP) to count it
//                    until it ends. gRPC shuts a connection's socket down
//                    before closing it, so the duplicate sees the end from
//                    either side. A connection over the cap is closed at once
//                    (the client sees UNAVAILABLE) and logged.
//   Stop()           stops accepting; call it before server->Shutdown().
//
// Each counted connection costs two descriptors (gRPC's and the watched
// duplicate). Thread-safety: Listen/Start/Stop from one thread; the counters
// from any.
#ifndef HOLDFAST_SMP_SERVER_LOCAL_SOCKET_H_
#define HOLDFAST_SMP_SERVER_LOCAL_SOCKET_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>

#include "holdfast/ec/status.h"

namespace grpc {
class Server;
}

namespace holdfast::smp {

class LocalSocket {
 public:
  struct Options {
    std::string path;
    std::optional<gid_t> group;  // chown to it; none: the daemon's own group
    std::string group_name;      // for messages
    int max_connections = 1024;
  };

  static Result<std::unique_ptr<LocalSocket>> Listen(Options options);
  ~LocalSocket();
  LocalSocket(const LocalSocket&) = delete;
  LocalSocket& operator=(const LocalSocket&) = delete;

  void Start(grpc::Server* server);
  void Stop();

  int open_connections() const { return open_.load(std::memory_order_relaxed); }
  uint64_t refused_connections() const { return refused_.load(std::memory_order_relaxed); }

 private:
  LocalSocket(Options options, int listen_fd, int epoll_fd, int wake_fd);
  void Run(grpc::Server* server);
  void Accept(grpc::Server* server);
  void Refuse(int fd, const char* why);
  void Forget(int watched_fd);

  const Options options_;
  const int listen_fd_;
  const int epoll_fd_;
  const int wake_fd_;
  std::thread thread_;
  std::atomic<int> open_{0};
  std::atomic<uint64_t> refused_{0};
  std::unordered_set<int> watched_;  // accept thread only: the duplicates
  int64_t last_refusal_log_us_ = 0;  // accept thread only
  uint64_t refused_since_log_ = 0;   // accept thread only
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_SERVER_LOCAL_SOCKET_H_
