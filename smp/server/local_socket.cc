#include "server/local_socket.h"

#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

namespace holdfast::smp {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

int64_t MonotonicMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Closes what it holds unless released.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

}  // namespace

Result<std::unique_ptr<LocalSocket>> LocalSocket::Listen(Options options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.path.empty() || options.path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("socket path must be 1-" +
                                   std::to_string(sizeof(addr.sun_path) - 1) + " bytes: " +
                                   options.path);
  }
  if (options.max_connections < 1) {
    return Status::InvalidArgument("grpc.max_connections must be >= 1");
  }
  std::memcpy(addr.sun_path, options.path.data(), options.path.size());
  Fd listener{socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (listener.fd < 0) return Status::Unavailable(Errno("socket"));
  // bind() creates the socket file with the umask's mode: never wider than
  // 0660, even before the chmod below.
  const mode_t old_umask = umask(0117);
  const int bound = bind(listener.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  umask(old_umask);
  if (bound != 0) {
    errno = bind_errno;
    return Status::Unavailable(Errno("cannot listen on unix:" + options.path + ": bind"));
  }
  if (listen(listener.fd, SOMAXCONN) != 0) {
    return Status::Unavailable(Errno("cannot listen on unix:" + options.path + ": listen"));
  }
  // Who may connect: the socket's group (until the chown, the daemon's own).
  if (options.group && chown(options.path.c_str(), static_cast<uid_t>(-1), *options.group) != 0) {
    return Status(StatusCode::kPermissionDenied,
                  Errno("cannot give " + options.path + " to group " +
                        (options.group_name.empty() ? std::to_string(*options.group)
                                                    : options.group_name)));
  }
  if (chmod(options.path.c_str(), 0660) != 0) {
    return Status::Unavailable(Errno("cannot chmod " + options.path));
  }
  Fd epoll{epoll_create1(EPOLL_CLOEXEC)};
  if (epoll.fd < 0) return Status::Unavailable(Errno("epoll_create1"));
  Fd wake{eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
  if (wake.fd < 0) return Status::Unavailable(Errno("eventfd"));
  for (const int fd : {listener.fd, wake.fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll.fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Status::Unavailable(Errno("epoll_ctl"));
    }
  }
  return std::unique_ptr<LocalSocket>(
      new LocalSocket(std::move(options), listener.release(), epoll.release(), wake.release()));
}

LocalSocket::LocalSocket(Options options, int listen_fd, int epoll_fd, int wake_fd)
    : options_(std::move(options)), listen_fd_(listen_fd), epoll_fd_(epoll_fd), wake_fd_(wake_fd) {}

LocalSocket::~LocalSocket() {
  Stop();
  close(wake_fd_);
  close(epoll_fd_);
  close(listen_fd_);
}

void LocalSocket::Start(grpc::Server* server) {
  if (thread_.joinable()) return;
  thread_ = std::thread([this, server] { Run(server); });
}

void LocalSocket::Stop() {
  if (!thread_.joinable()) return;
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  thread_.join();
}

void LocalSocket::Run(grpc::Server* server) {
  epoll_event events[64];
  bool stop = false;
  while (!stop) {
    const int n = epoll_wait(epoll_fd_, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("{}: epoll_wait failed ({}); no longer accepting connections", options_.path,
                    std::strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        stop = true;
      } else if (fd == listen_fd_) {
        Accept(server);
      } else {
        Forget(fd);
      }
    }
  }
  // Connections gRPC still serves stay open (the server's shutdown ends
  // them); only their watchers go.
  for (const int fd : watched_) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
  }
  watched_.clear();
}

void LocalSocket::Accept(grpc::Server* server) {
  for (;;) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued; do
      // not spin on a listener that stays readable.
      spdlog::error("{}: accept failed: {} ({} connections open)", options_.path,
                    std::strerror(errno), open_connections());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      return;
    }
    if (open_connections() >= options_.max_connections) {
      Refuse(fd, "the limit");
      continue;
    }
    const int watcher = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (watcher < 0) {
      Refuse(fd, "no descriptor left to watch it");
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLRDHUP;  // EPOLLHUP and EPOLLERR are always reported
    ev.data.fd = watcher;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, watcher, &ev) != 0) {
      close(watcher);
      Refuse(fd, "epoll_ctl failed");
      continue;
    }
    watched_.insert(watcher);
    open_.fetch_add(1, std::memory_order_relaxed);
    grpc::AddInsecureChannelFromFd(server, fd);  // gRPC owns fd from here
  }
}

void LocalSocket::Refuse(int fd, const char* why) {
  close(fd);
  refused_.fetch_add(1, std::memory_order_relaxed);
  ++refused_since_log_;
  // The first refusal, then at most one line every 10 s.
  const int64_t now = MonotonicMicros();
  if (last_refusal_log_us_ == 0 || now - last_refusal_log_us_ >= 10'000'000) {
    spdlog::warn("{}: refused {} connection(s): {} open, {} (grpc.max_connections {})",
                 options_.path, refused_since_log_, open_connections(), why,
                 options_.max_connections);
    last_refusal_log_us_ = now;
    refused_since_log_ = 0;
  }
}

void LocalSocket::Forget(int watched_fd) {
  if (watched_.erase(watched_fd) == 0) return;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, watched_fd, nullptr);
  close(watched_fd);
  open_.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace holdfast::smp
