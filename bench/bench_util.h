// Helpers shared by the benchmarks: statistics, flag parsing, and the
// description of the machine a run happened on.
#ifndef HOLDFAST_BENCH_BENCH_UTIL_H_
#define HOLDFAST_BENCH_BENCH_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace holdfast::bench {

struct Stats {
  double median = 0;
  double min = 0;
  double max = 0;
};

// Median, min and max; all zero for no samples.
Stats Summarize(std::vector<double> v);

// "1G", "64M", "16K", "4096" (binary suffixes, either case) -> bytes.
bool ParseBytes(std::string_view text, uint64_t* out);

// `v` with `digits` decimals.
std::string Fixed(double v, int digits);

// `s` as a JSON string literal (control characters become spaces).
std::string JsonString(const std::string& s);

std::string Trim(std::string s);

// The value of the first "key : value" line of a /proc file, or "unknown".
std::string ProcField(const char* path, const std::string& key);

// What `command` printed on stdout, trimmed.
std::string CommandOutput(const char* command);

// "0.52 0.60 0.41": the 1, 5 and 15 minute load averages.
std::string LoadAverage();

// The facts every benchmark records about its machine.
struct MachineBasics {
  std::string cpu;  // model name
  unsigned cores = 0;
  std::string memory;  // MemTotal
  std::string kernel;
  std::string compiler;
  std::string build;  // "NDEBUG" or a warning that assertions are on
  std::string thp;    // /sys/kernel/mm/transparent_hugepage/enabled
  std::string date;   // UTC, ISO 8601
};
MachineBasics DescribeMachineBasics();

}  // namespace holdfast::bench

#endif  // HOLDFAST_BENCH_BENCH_UTIL_H_
