// Segments on a tmpfs mounted with huge=within_size (deploy/dev-shm-holdfast.mount):
// holdfastd says so at start-up, maps them in 2 MiB pages (one page-table entry
// per 2 MiB instead of 512, the lever behind docs/benchmarks.md's cold-save,
// new-process restore and rebuild figures), and everything else is unchanged:
// restores are bit for bit, and a SIGKILLed daemon recovers them from the same
// tmpfs. On plain /dev/shm it says which pages it gets and how to change that.
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness.h"

namespace holdfast::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kItems = 4;
constexpr uint64_t kItemBytes = 4 << 20;  // 16 MiB per version: eight 2 MiB pages

// kB of the process's mappings of files under `dir` mapped with PMDs (2 MiB).
uint64_t PmdMappedKb(pid_t pid, const std::string& dir) {
  std::ifstream smaps("/proc/" + std::to_string(pid) + "/smaps");
  uint64_t total = 0;
  bool ours = false;
  for (std::string line; std::getline(smaps, line);) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
        line.find('-') != std::string::npos && line.find(' ') != std::string::npos) {
      ours = line.find(dir + "/") != std::string::npos;  // a new mapping's header
    } else if (ours && line.rfind("ShmemPmdMapped:", 0) == 0) {
      std::istringstream in(line.substr(15));
      uint64_t kb = 0;
      in >> kb;
      total += kb;
    }
  }
  return total;
}

ToolOptions Tool(const Daemon& d) {
  ToolOptions t;
  t.socket = d.socket_path();
  t.job = "job";
  t.items = kItems;
  t.item_bytes = kItemBytes;
  return t;
}

TEST(DaemonHugePagesTest, SegmentsOnAHugePageTmpfsAreMappedInHugePages) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  Daemon daemon;
  fs::create_directories(daemon.shm_dir());
  if (mount("holdfast-test", daemon.shm_dir().c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
            "huge=within_size,mode=0770") != 0) {
    GTEST_SKIP() << "mount -t tmpfs " << daemon.shm_dir() << ": " << std::strerror(errno);
  }
  // Lazily unmounted first thing at the end: the daemon's mappings keep the
  // memory until the Daemon's destructor kills it.
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{daemon.shm_dir()};

  ASSERT_TRUE(daemon.Start());
  EXPECT_NE(daemon.Log().find("in 2 MiB pages: tmpfs " + daemon.shm_dir() + " huge=within_size"),
            std::string::npos)
      << daemon.Log();
  const ToolRun saved = RunTool(Tool(daemon), {"save", "--steps", "1:2"});
  ASSERT_TRUE(saved.ok()) << saved.Describe();
  const uint64_t pmd_kb = PmdMappedKb(daemon.pid(), daemon.shm_dir());
  std::printf("holdfastd maps %llu kB of its segments with 2 MiB pages\n",
              static_cast<unsigned long long>(pmd_kb));
  // Both versions are fully huge-mapped: 2 x 16 MiB (the budget's pool may
  // hold a spare too).
  EXPECT_GE(pmd_kb, 2 * kItems * kItemBytes / 1024);
  EXPECT_TRUE(VerifiesAs(Tool(daemon), std::nullopt, 2));
  EXPECT_TRUE(VerifiesAs(Tool(daemon), 1, 1));

  // SIGKILL: the segments stay in the tmpfs, recovery maps them again.
  daemon.Kill();
  ASSERT_TRUE(daemon.Start());
  EXPECT_TRUE(VerifiesAs(Tool(daemon), std::nullopt, 2));
  EXPECT_GE(PmdMappedKb(daemon.pid(), daemon.shm_dir()), 2 * kItems * kItemBytes / 1024);
}

TEST(DaemonHugePagesTest, OnPlainDevShmTheLogSaysWhichPagesAndWhy) {
  Daemon daemon;
  ASSERT_TRUE(daemon.Start());
  const std::string log = daemon.Log();
  // This machine's /dev/shm: 4 KiB pages unless shmem_enabled says otherwise.
  EXPECT_TRUE(log.find(" in 4 KiB pages: tmpfs /dev/shm huge=") != std::string::npos ||
              log.find(" in 2 MiB pages: ") != std::string::npos)
      << log;
}

}  // namespace
}  // namespace holdfast::testing
