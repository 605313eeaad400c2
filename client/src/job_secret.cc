#include "holdfast/client/job_secret.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "holdfast/proto/job_credentials.h"

namespace holdfast::client {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

Status Errno(const std::string& what) {
  return Status(StatusCode::kPermissionDenied, what + ": " + std::strerror(errno));
}

// The directory of stored secrets, created if missing; refused when another
// user could read or replace what is in it.
Result<std::string> SecretDir() {
  std::string dir = Env("HOLDFAST_SECRET_DIR");
  if (dir.empty()) {
    const std::string runtime = Env("XDG_RUNTIME_DIR");
    const std::string home = Env("HOME");
    if (!runtime.empty()) {
      dir = runtime + "/holdfast";
    } else if (!home.empty()) {
      (void)mkdir((home + "/.holdfast").c_str(), 0700);
      dir = home + "/.holdfast/secrets";
    } else {
      return Status::FailedPrecondition(
          "no directory for job secrets: set HOLDFAST_SECRET_DIR, XDG_RUNTIME_DIR or HOME, or "
          "HOLDFAST_JOB_TOKEN");
    }
  }
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Errno("cannot create " + dir);
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) return Errno("cannot stat " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
    return Status(StatusCode::kPermissionDenied,
                  "job secret directory " + dir +
                      " must be a directory of this user, not writable by others");
  }
  return dir;
}

// Which daemon: "unix:/run/x.sock", "unix:///run/x.sock" and "/run/x.sock"
// are one.
std::string DaemonKey(std::string endpoint) {
  if (endpoint.rfind("unix://", 0) == 0) {
    endpoint.erase(0, 7);
  } else if (endpoint.rfind("unix:", 0) == 0) {
    endpoint.erase(0, 5);
  }
  static constexpr char kDigits[] = "0123456789abcdef";
  const std::string h = proto::HashSecret(endpoint);
  std::string out;
  for (size_t i = 0; i < 8 && i < h.size(); ++i) {
    out += kDigits[static_cast<unsigned char>(h[i]) >> 4];
    out += kDigits[static_cast<unsigned char>(h[i]) & 15];
  }
  return out;
}

bool JobIdUsable(const std::string& job_id) {
  // The daemon refuses other ids anyway; they must not make a path here.
  if (job_id.empty() || job_id.size() > 128) return false;
  for (char c : job_id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

// "" when the file does not exist.
Result<std::string> ReadSecretFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::string();
    return Errno("cannot open " + path);
  }
  char buf[80];
  const ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  std::string secret(buf, n > 0 ? static_cast<size_t>(n) : 0);
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == ' ')) secret.pop_back();
  if (!proto::WellFormedSecret(secret)) {
    return Status::DataLoss("job secret file " + path + " is damaged; remove it only if the job " +
                            "is dropped from the daemon too");
  }
  return secret;
}

Status WriteSecretFile(const std::string& path, const std::string& secret) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Errno("cannot create " + tmp);
  const std::string line = secret + "\n";
  const bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                       fsync(fd) == 0;
  close(fd);
  if (!written || rename(tmp.c_str(), path.c_str()) != 0) {
    const Status s = Errno("cannot write " + path);
    unlink(tmp.c_str());
    return s;
  }
  return Status::Ok();
}

}  // namespace

Result<std::string> LoadJobSecret(const std::string& endpoint, const std::string& job_id) {
  if (const std::string token = Env("HOLDFAST_JOB_TOKEN"); !token.empty()) {
    return proto::SecretFromToken(token, job_id);
  }
  if (!JobIdUsable(job_id)) return std::string();
  HOLDFAST_ASSIGN_OR_RETURN(std::string dir, SecretDir());
  return ReadSecretFile(dir + "/" + DaemonKey(endpoint) + "-" + job_id);
}

Result<std::string> RegisterWithJobSecret(
    const std::string& endpoint, const std::string& job_id,
    const std::function<Result<std::string>(const std::string& secret)>& call) {
  if (const std::string token = Env("HOLDFAST_JOB_TOKEN"); !token.empty()) {
    const std::string secret = proto::SecretFromToken(token, job_id);
    HOLDFAST_ASSIGN_OR_RETURN(std::string issued, call(secret));
    (void)issued;  // the daemon issues none when one is presented
    return secret;
  }
  if (!JobIdUsable(job_id)) {
    // Let the daemon say what is wrong with the id.
    HOLDFAST_ASSIGN_OR_RETURN(std::string issued, call(""));
    return issued;
  }
  HOLDFAST_ASSIGN_OR_RETURN(std::string dir, SecretDir());
  const std::string path = dir + "/" + DaemonKey(endpoint) + "-" + job_id;
  // Ranks of one job on the node register at once: the first gets the
  // secret issued and stores it, the others then read it.
  const int lock_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_fd < 0) return Errno("cannot open " + dir);
  while (flock(lock_fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      const Status s = Errno("cannot lock " + dir);
      close(lock_fd);
      return s;
    }
  }
  auto run = [&]() -> Result<std::string> {
    HOLDFAST_ASSIGN_OR_RETURN(std::string secret, ReadSecretFile(path));
    auto issued = call(secret);
    if (!issued.ok()) {
      if (!secret.empty() && issued.status().code() == StatusCode::kPermissionDenied) {
        return issued.status().WithContext("the secret in " + path);
      }
      return issued.status();
    }
    if (issued->empty()) return secret;
    HOLDFAST_RETURN_IF_ERROR(WriteSecretFile(path, *issued));
    return *issued;
  };
  Result<std::string> out = run();
  close(lock_fd);  // releases the lock
  return out;
}

}  // namespace holdfast::client
