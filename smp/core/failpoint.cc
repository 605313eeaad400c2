#include "core/failpoint.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace holdfast::smp {

void TriggerFailpoint(const char* name) {
  static const std::string spec = [] {
    const char* env = std::getenv("HOLDFAST_FAILPOINTS");
    return std::string(env ? env : "");
  }();
  if (spec.empty()) return;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    const std::string entry = spec.substr(start, end - start);
    const size_t eq = entry.find('=');
    if (entry.substr(0, eq) == name) {
      const std::string action = eq == std::string::npos ? "kill" : entry.substr(eq + 1);
      if (action.rfind("sleep:", 0) == 0) {
        // Widens a window for a race: only this thread waits.
        std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(action.c_str() + 6)));
        return;
      }
      const char msg[] = "holdfast: failpoint hit\n";
      (void)!write(2, msg, sizeof(msg) - 1);
      if (action == "abort") std::abort();
      raise(SIGKILL);
    }
    start = end + 1;
  }
}

}  // namespace holdfast::smp
