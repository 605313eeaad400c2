// Pure logic of the `holdfast` operator CLI (docs/cli.md): the health
// verdict, human formats (bytes, durations, tables) and progress math.
// No I/O: main.cc talks to the daemon and prints; tests/smp/cli_logic_test.cc
// covers this file.
#ifndef HOLDFAST_SMP_CLI_CLI_LOGIC_H_
#define HOLDFAST_SMP_CLI_CLI_LOGIC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "holdfast/v1/snapshot.pb.h"

namespace holdfast::cli {

// Exit codes of every command (docs/cli.md, `holdfast --help`).
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // any other failure (refused, permission, timeout)
  kExitUsage = 2,        // bad flags or arguments; a confirmation needed without a tty
  kExitUnreachable = 3,  // the daemon did not answer
  kExitNotFound = 4,     // unknown job or step
  kExitDataLoss = 5,     // verify found damage; recover cannot rebuild; DATA_LOSS
  kExitHealthWarn = 6,   // status: HEALTH_WARN
  kExitHealthErr = 7,    // status: HEALTH_ERR
};

// ---- health ----------------------------------------------------------------

enum class HealthLevel { kOk, kWarn, kErr };

struct Health {
  HealthLevel level = HealthLevel::kOk;
  std::vector<std::string> reasons;  // one line each, the most serious first
  std::string Verdict() const;       // "HEALTH_OK", "HEALTH_WARN", "HEALTH_ERR"
  std::string Line() const;          // "HEALTH_WARN: why; why"
};

// State of one group member as `status` shows it: "up", "down", "rebuilding".
std::string MemberState(const v1::PeerStatus& member);

// The verdict from one node's status and version list:
//   ERR:  more than m members of the group down; a version that cannot be
//         rebuilt (rebuild state DATA_LOSS, last_error DATA_LOSS); damaged
//         versions found since the daemon started; damage the scrub could
//         not repair (ScrubStatus.unrepairable > 0). Chunks the scrub
//         repaired are not a reason: they are shown by ScrubLine.
//   WARN: a member down (data still protected); a rebuild in progress or
//         retrying; a job with complete versions but none protected, or whose
//         newest protected step is behind more than one complete version;
//         memory used above 90% of the budget.
Health AssessHealth(const v1::GetStatusResponse& status, const v1::ListVersionsResponse& versions);

// One line of scrub state for `status`: the running pass and its bytes, the
// last finished pass, and the counters ("off" when disabled).
std::string ScrubLine(const v1::ScrubStatus& scrub, int64_t now_unix_micros);

// ---- formats ---------------------------------------------------------------

std::string FormatBytes(uint64_t bytes);  // "0 B", "512 B", "1.5 KiB", "3.0 GiB"
std::string FormatRate(double bytes_per_second);  // "12.3 MiB/s"
std::string FormatDuration(double seconds);       // "0.4s", "12s", "3m05s", "2h01m"

// A table with left-aligned columns separated by two spaces; no trailing
// blanks. Rows shorter than the header are padded with empty cells.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::string Render() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// ---- progress --------------------------------------------------------------

struct ProgressFigures {
  double fraction = 0;                // 0..1
  double bytes_per_second = 0;        // 0 when unknown
  std::optional<double> eta_seconds;  // unknown before any byte moved
};
ProgressFigures ComputeProgress(uint64_t done, uint64_t total, double elapsed_seconds);
// "[#########...........]" of `width` cells inside the brackets.
std::string ProgressBar(double fraction, int width);
// One line: bar, percent, bytes, rate, ETA.
std::string ProgressLine(uint64_t done, uint64_t total, double elapsed_seconds, int bar_width);

}  // namespace holdfast::cli

#endif  // HOLDFAST_SMP_CLI_CLI_LOGIC_H_
