#include "bench_util.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <thread>

namespace holdfast::bench {

Stats Summarize(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return {n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v.front(), v.back()};
}

bool ParseBytes(std::string_view text, uint64_t* out) {
  const auto suffix = std::string_view("KMGkmg").find(text.empty() ? ' ' : text.back());
  const uint64_t scale =
      suffix == std::string_view::npos ? 1 : uint64_t{1} << (10 * (suffix % 3 + 1));
  if (scale != 1) text.remove_suffix(1);
  if (text.empty() || text.size() > 12 ||
      text.find_first_not_of("0123456789") != std::string_view::npos) {
    return false;
  }
  *out = std::stoull(std::string(text)) * scale;
  return true;
}

std::string Fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += static_cast<unsigned char>(ch) < 0x20 ? ' ' : ch;
  }
  return out + "\"";
}

std::string Trim(std::string s) {
  const auto first = s.find_first_not_of(" \t\n");
  const auto last = s.find_last_not_of(" \t\n");
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}

std::string ProcField(const char* path, const std::string& key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon != std::string::npos && Trim(line.substr(0, colon)) == key) {
      return Trim(line.substr(colon + 1));
    }
  }
  return "unknown";
}

std::string CommandOutput(const char* command) {
  std::string out;
  if (FILE* f = popen(command, "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, f) != nullptr) out += buf;
    pclose(f);
  }
  return Trim(out);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

MachineBasics DescribeMachineBasics() {
  MachineBasics mc;
  mc.cpu = ProcField("/proc/cpuinfo", "model name");
  mc.cores = std::thread::hardware_concurrency();
  mc.memory = ProcField("/proc/meminfo", "MemTotal");
  utsname u;
  mc.kernel = uname(&u) == 0 ? std::string(u.sysname) + " " + u.release : "unknown";
#if defined(__clang__)
  mc.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  mc.compiler = std::string("gcc ") + __VERSION__;
#else
  mc.compiler = "unknown";
#endif
#ifdef NDEBUG
  mc.build = "NDEBUG";
#else
  mc.build = "assertions on (not a Release build)";
#endif
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::getline(thp, mc.thp);
  char date[64];
  const std::time_t now = std::time(nullptr);
  std::tm tm_utc;
  gmtime_r(&now, &tm_utc);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm_utc);
  mc.date = date;
  return mc;
}

}  // namespace holdfast::bench
