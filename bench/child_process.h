// Child processes and cleanup for benchmarks that start daemons and helpers.
//
// A benchmark registers every child it starts and every temporary directory
// it creates; CleanUpAll() stops the children (SIGTERM, then SIGKILL after a
// grace period) and removes the directories, whether the run ends normally,
// through Fatal(), or by SIGINT/SIGTERM once StartSignalWatcher() runs.
//
// Thread-safety: every function may be called from any thread.
#ifndef HOLDFAST_BENCH_CHILD_PROCESS_H_
#define HOLDFAST_BENCH_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "holdfast/ec/status.h"

namespace holdfast::bench {

// Prints "<program>: <message>" to stderr, cleans up and exits with 1.
[[noreturn]] void Fatal(const std::string& message);

// Fatal("<what>: <status>") unless `status` is OK.
void CheckOk(const Status& status, const std::string& what);

// Removes `dir` (recursively) at cleanup, unless `keep`.
void RemoveAtExit(const std::string& dir, bool keep);

// Stops every registered child and removes the registered directories.
void CleanUpAll();

// Blocks SIGINT and SIGTERM in the calling thread (call it before starting
// any other thread, so that all inherit the mask) and takes them on a
// detached thread that cleans up and exits with 128 + the signal. Also
// ignores SIGPIPE (children get the default back).
void StartSignalWatcher();

// Starts `args` (args[0] is a path, not searched in PATH) with the given
// descriptors as stdin, stdout, stderr (-1: inherit), an empty signal mask
// and SIGPIPE at its default; the child is killed if this process dies
// (PR_SET_PDEATHSIG) and is registered for cleanup. It forks: call it only
// while this process has a single thread that matters (before gRPC starts
// its threads), or use RunAndCapture.
pid_t ForkExec(std::vector<std::string> args, int in_fd, int out_fd, int err_fd);

// Sends `signal_number` to `pid`, waits up to `timeout_seconds` for it to
// exit, then SIGKILLs it; forgets it for cleanup.
void StopProcess(pid_t pid, int signal_number, double timeout_seconds);

// Forgets `pid` for cleanup (it has been reaped).
void Forget(pid_t pid);

// Runs `args` to completion with posix_spawn (safe in a process with gRPC
// threads) and returns its standard output; Fatal() if it does not exit 0.
std::string RunAndCapture(std::vector<std::string> args);

// The last `bytes` bytes of the file at `path` (for error messages).
std::string Tail(const std::string& path, size_t bytes);

}  // namespace holdfast::bench

#endif  // HOLDFAST_BENCH_CHILD_PROCESS_H_
