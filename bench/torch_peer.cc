#include "torch_peer.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "child_process.h"

namespace holdfast::bench {

void TorchPeer::Start(const std::string& python, const std::string& script,
                      const std::string& data_file, const std::string& out_file, int items) {
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) {
    Fatal(std::string("pipe: ") + std::strerror(errno));
  }
  pid_ = ForkExec({python, script, "--serve", "--data", data_file, "--out", out_file, "--items",
                   std::to_string(items)},
                  to[0], from[1], -1);
  close(to[0]);
  close(from[1]);
  to_ = fdopen(to[1], "w");
  from_ = fdopen(from[0], "r");
  const std::string ready = ReadLine();
  if (!ready.starts_with("ready ")) Fatal(script + ": " + ready);
  versions_ = ready.substr(6);
}

double TorchPeer::Time(const char* command) {
  std::fprintf(to_, "%s\n", command);
  std::fflush(to_);
  const std::string line = ReadLine();
  char* end = nullptr;
  const double seconds = std::strtod(line.c_str(), &end);
  if (end == line.c_str() || seconds <= 0) Fatal(std::string("torch ") + command + ": " + line);
  return seconds;
}

void TorchPeer::Expect(const char* command, const char* answer) {
  std::fprintf(to_, "%s\n", command);
  std::fflush(to_);
  const std::string line = ReadLine();
  if (line != answer) Fatal(std::string("torch ") + command + ": " + line);
}

void TorchPeer::Stage() { Expect("stage", "ok"); }
void TorchPeer::Unstage() { Expect("unstage", "ok"); }

void TorchPeer::Stop() {
  if (pid_ == 0) return;
  std::fprintf(to_, "quit\n");
  std::fclose(to_);
  std::fclose(from_);
  waitpid(pid_, nullptr, 0);
  Forget(pid_);
  pid_ = 0;
}

std::string TorchPeer::ReadLine() {
  char buf[512];
  if (std::fgets(buf, sizeof buf, from_) == nullptr) Fatal("torch_save_bench.py exited");
  std::string line = buf;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  return line;
}

}  // namespace holdfast::bench
