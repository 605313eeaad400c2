#include "child_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

extern char** environ;

namespace holdfast::bench {
namespace {

struct Registry {
  std::mutex mu;
  std::vector<pid_t> pids;
  std::vector<std::string> dirs;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: used from exit paths
  return *r;
}

std::vector<char*> Argv(std::vector<std::string>& args) {
  std::vector<char*> out;
  for (std::string& a : args) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

// Waits for `pid` up to `timeout_seconds`, then SIGKILLs and reaps it.
void Reap(pid_t pid, double timeout_seconds) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start <
         std::chrono::duration<double>(timeout_seconds)) {
    if (waitpid(pid, nullptr, WNOHANG) != 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace

[[noreturn]] void Fatal(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, message.c_str());
  CleanUpAll();
  std::exit(1);
}

void CheckOk(const Status& status, const std::string& what) {
  if (!status.ok()) Fatal(what + ": " + status.ToString());
}

void RemoveAtExit(const std::string& dir, bool keep) {
  if (keep) return;
  std::lock_guard lock(registry().mu);
  registry().dirs.push_back(dir);
}

void CleanUpAll() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  for (pid_t pid : r.pids) {
    kill(pid, SIGTERM);
    Reap(pid, 5);
  }
  r.pids.clear();
  for (const std::string& dir : r.dirs) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  r.dirs.clear();
}

void StartSignalWatcher() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A helper that dies turns writes to its pipe into EPIPE, which the
  // caller reports, instead of killing the bench before it cleans up.
  signal(SIGPIPE, SIG_IGN);
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "%s: signal %d, cleaning up\n", program_invocation_short_name, sig);
    CleanUpAll();
    std::_Exit(128 + sig);
  }).detach();
}

pid_t ForkExec(std::vector<std::string> args, int in_fd, int out_fd, int err_fd) {
  std::vector<char*> argv = Argv(args);
  // Registered under the lock so that a signal cannot miss the child.
  std::lock_guard lock(registry().mu);
  const pid_t pid = fork();
  if (pid < 0) Fatal(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);  // StartSignalWatcher ignores it in the bench
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (in_fd >= 0) dup2(in_fd, 0);
    if (out_fd >= 0) dup2(out_fd, 1);
    if (err_fd >= 0) dup2(err_fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  registry().pids.push_back(pid);
  return pid;
}

void StopProcess(pid_t pid, int signal_number, double timeout_seconds) {
  if (pid <= 0) return;
  kill(pid, signal_number);
  Reap(pid, timeout_seconds);
  Forget(pid);
}

void Forget(pid_t pid) {
  std::lock_guard lock(registry().mu);
  std::erase(registry().pids, pid);
}

std::string RunAndCapture(std::vector<std::string> args) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) Fatal(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, pipe_default;
  sigemptyset(&none);
  sigemptyset(&pipe_default);
  sigaddset(&pipe_default, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &pipe_default);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> argv = Argv(args);
  pid_t pid;
  const int rc = posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    Fatal("cannot start " + args[0] + ": " + std::strerror(rc));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string command;
    for (const std::string& a : args) command += (command.empty() ? "" : " ") + a;
    Fatal(command + " failed (wait status " + std::to_string(status) + "): " + out);
  }
  return out;
}

std::string Tail(const std::string& path, size_t bytes) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

}  // namespace holdfast::bench
