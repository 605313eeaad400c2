// smp_bench: how long a trainer process takes to hand a host-memory snapshot
// to holdfastd and to get it back, next to memcpy of the same bytes (the
// limit) and torch.save / torch.load to /dev/shm (the peer), all measured in
// one run with the contenders interleaved.
//
// The bench starts its own daemons: one with default settings (the daemon
// verifies checksums in the background, after answering the commit) and one
// with --verify commit (the commit waits for the verification), each with its
// own socket and catalog in a temporary directory and its segments in a fresh
// directory under /dev/shm. After every hand-off to the background daemon the
// bench waits, untimed, until its verification has finished, so that it does
// not run into the next contender; that time is reported beside the hand-off. The snapshot is --items items of --item-bytes
// (default 64 x 16 MiB = 1 GiB) in one pre-faulted buffer of this process.
// Contenders, each timed as a whole call:
//
//   memcpy                 the snapshot into a second pre-faulted buffer, on
//                          one thread (the limit) and on two; and the client's
//                          copy engine (copy + checksum) between the same
//                          buffers on one and on two threads
//   hand-off               Client::Save (Begin, copy + checksum into the
//                          daemon's shared memory, Commit): cold (the first
//                          saves, which get new segments and new mappings),
//                          steady (segments reused, mappings cached; also
//                          with one copy thread, and against the daemon that
//                          verifies at commit), and with a new Client per save
//                          (segment reused, mapping new)
//   restore                Client::Restore into the pre-faulted memcpy
//                          destination (warm: the client has the segment
//                          mapped; two copy threads and one), and in a new process (this binary run as
//                          `smp_bench restore-child`, timing itself) into
//                          fresh or pre-faulted buffers
//   torch.save/torch.load  bench/torch_save_bench.py under /usr/bin/python3,
//                          driven over a pipe; it times only the torch call
//
// The cold saves (the first three per daemon, which create the segments)
// run once. Then two phases of --repeats repeats each; a repeat runs every
// contender of its phase once, in an order reversed every other repeat:
//
//   A  memcpy (+ checksum), steady hand-off (both daemons), warm restore:
//      nothing in the rotation maps or faults in new memory
//   B  memcpy, steady hand-off, warm restore again, rotated with everything
//      that does: the new-Client hand-off, both new-process restores and
//      torch. On the VMs we run on, first touches of new mappings slow down
//      the next pass over memory mapped earlier; B shows by how much.
//
// The table gives median and min-max over the repeats, the ratio of medians
// to the memcpy of the same phase and to torch, and the median of the
// per-repeat ratios to memcpy (paired: both ran within seconds).
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "child_process.h"
#include "copy_engine.h"
#include "holdfast/client/client.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/ec/status.h"
#include "holdfast/v1/snapshot.grpc.pb.h"
#include "torch_peer.h"

namespace {

using holdfast::Status;
using holdfast::bench::CheckOk;
using holdfast::bench::Fatal;
using holdfast::bench::Fixed;
using holdfast::bench::Forget;
using holdfast::bench::ForkExec;
using holdfast::bench::JsonString;
using holdfast::bench::LoadAverage;
using holdfast::bench::ParseBytes;
using holdfast::bench::RemoveAtExit;
using holdfast::bench::RunAndCapture;
using holdfast::bench::Stats;
using holdfast::bench::StopProcess;
using holdfast::bench::Summarize;
using holdfast::bench::TorchPeer;
using holdfast::client::Client;
using holdfast::client::DType;
using holdfast::client::ItemView;
using holdfast::client::RestoreTarget;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr char kJob[] = "bench";

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// ---- memory ----------------------------------------------------------------------

// An anonymous mapping, optionally pre-faulted by writing every page.
class Buffer {
 public:
  Buffer(uint64_t size, bool prefault) : size_(size) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) Fatal("mmap of " + std::to_string(size) + " bytes failed");
    data_ = static_cast<uint8_t*>(p);
    if (prefault) std::memset(data_, 0, size);
  }
  ~Buffer() { munmap(data_, size_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

void FillRandom(uint8_t* p, uint64_t size) {
  uint64_t x = 0x9E3779B97F4A7C15ULL;
  for (uint64_t i = 0; i + 8 <= size; i += 8) {
    x ^= x << 13;  // xorshift64
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
}

// Keeps the compiler from dropping a copy nobody reads back.
void Clobber(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

std::string ItemName(int i) {
  char name[32];
  std::snprintf(name, sizeof name, "layer%02d.weight", i);
  return name;
}

std::vector<ItemView> MakeItems(const uint8_t* base, int items, uint64_t item_bytes) {
  std::vector<ItemView> out;
  for (int i = 0; i < items; ++i) {
    out.push_back({ItemName(i),
                   DType::kFloat32,
                   {static_cast<int64_t>(item_bytes / 4)},
                   base + i * item_bytes,
                   item_bytes});
  }
  return out;
}

std::vector<RestoreTarget> MakeTargets(uint8_t* base, int items, uint64_t item_bytes) {
  std::vector<RestoreTarget> out;
  for (int i = 0; i < items; ++i) out.push_back({ItemName(i), base + i * item_bytes, item_bytes});
  return out;
}

// ---- flags -----------------------------------------------------------------------

struct Flags {
  int repeats = 7;
  int items = 64;
  uint64_t item_bytes = 16 * kMiB;
  uint64_t budget = 4 * kGiB;
  std::string json_path;
  std::string shm_root = "/dev/shm";  // where the daemons' segment directories go
  std::string holdfastd = HOLDFAST_HOLDFASTD;
  std::string python = "/usr/bin/python3";
  std::string script = HOLDFAST_TORCH_SCRIPT;
  bool torch = true;
  bool keep = false;
  int spares = -1;  // holdfastd --spares; -1: its default
  std::vector<std::string> only;  // contender keys to run (empty: all)
  // restore-child only
  std::string socket;
  bool prefault = false;
};

constexpr char kUsage[] =
    "usage: smp_bench [--repeats N] [--items N] [--item-bytes N] [--budget N] [--json FILE]\n"
    "                 [--holdfastd PATH] [--python PATH] [--script PATH] [--no-torch] [--keep]\n"
    "                 [--only KEY,...] [--shm-root DIR] [--spares N]\n"
    "  --repeats N      timed runs of every contender (default 7)\n"
    "  --items N        items per snapshot (default 64)\n"
    "  --item-bytes N   bytes per item, a multiple of 4 (default 16M; suffixes K, M, G)\n"
    "  --budget N       memory budget of each daemon (default 4G: 3 versions + headroom)\n"
    "  --json FILE      also write every sample as JSON\n"
    "  --shm-root DIR   a tmpfs for the daemons' segments (default /dev/shm; e.g. one mounted\n"
    "                   with huge=within_size, as deploy/dev-shm-holdfast.mount does)\n"
    "  --holdfastd P    daemon binary (default: the one built with this bench)\n"
    "  --python P       interpreter with torch (default /usr/bin/python3)\n"
    "  --script P       torch_save_bench.py (default: the source tree's)\n"
    "  --no-torch       skip torch.save / torch.load\n"
    "  --keep           keep the temporary directories (daemon logs, catalogs)\n"
    "  --only K,K       run only these contenders (keys as in the JSON; for profiling)\n"
    "  --spares N       the daemons' --spares (segments made ahead; default: theirs)\n"
    "internal: smp_bench restore-child --socket S --items N --item-bytes N [--prefault]\n";

Flags ParseFlags(int argc, char** argv, int first) {
  Flags flags;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--no-torch" || arg == "--keep" || arg == "--prefault") {
      (arg == "--no-torch" ? flags.torch
       : arg == "--keep"   ? flags.keep
                           : flags.prefault) = arg != "--no-torch";
      continue;
    }
    if (i + 1 >= argc) Fatal(arg + " needs a value\n" + kUsage);
    const std::string value = argv[++i];
    bool ok = true;
    if (arg == "--repeats") {
      flags.repeats = std::atoi(value.c_str());
      ok = flags.repeats >= 1;
    } else if (arg == "--items") {
      flags.items = std::atoi(value.c_str());
      ok = flags.items >= 1;
    } else if (arg == "--item-bytes") {
      ok = ParseBytes(value, &flags.item_bytes) && flags.item_bytes >= 4 &&
           flags.item_bytes % 4 == 0;
    } else if (arg == "--shm-root") {
      flags.shm_root = value;
      ok = !value.empty();
    } else if (arg == "--spares") {
      flags.spares = std::atoi(value.c_str());
      ok = flags.spares >= 0 && flags.spares <= 2;
    } else if (arg == "--budget") {
      ok = ParseBytes(value, &flags.budget);
    } else if (arg == "--json") {
      flags.json_path = value;
    } else if (arg == "--holdfastd") {
      flags.holdfastd = value;
    } else if (arg == "--python") {
      flags.python = value;
    } else if (arg == "--script") {
      flags.script = value;
    } else if (arg == "--only") {
      std::stringstream in(value);
      for (std::string key; std::getline(in, key, ',');) flags.only.push_back(key);
    } else if (arg == "--socket") {
      flags.socket = value;
    } else {
      Fatal("unknown flag " + arg + "\n" + kUsage);
    }
    if (!ok) Fatal("bad value for " + arg + ": '" + value + "'\n" + kUsage);
  }
  return flags;
}

// ---- restore-child: a cold restore in a new process ------------------------------

holdfast::client::Options ClientOptions(const std::string& socket, int copy_threads = 0) {
  holdfast::client::Options options;
  options.endpoint = "unix:" + socket;
  options.job_id = kJob;
  options.copy_threads = copy_threads;
  return options;
}

// Connects, restores the newest version into buffers this process has not
// touched (or has, with --prefault) and prints its own timings.
int RestoreChild(const Flags& flags) {
  const uint64_t total = flags.items * flags.item_bytes;
  Buffer buffer(total, flags.prefault);
  std::vector<RestoreTarget> targets = MakeTargets(buffer.data(), flags.items, flags.item_bytes);
  auto start = Clock::now();
  auto client = Client::Connect(ClientOptions(flags.socket));
  CheckOk(client.status(), "restore-child: connect");
  const double connect = Since(start);
  start = Clock::now();
  auto stats = (*client)->Restore(std::nullopt, targets);
  const double restore = Since(start);
  CheckOk(stats.status(), "restore-child: restore");
  std::printf("connect %.9f restore %.9f open %.9f copy %.9f step %" PRId64 "\n", connect, restore,
              stats->open_seconds, stats->copy_seconds, stats->step);
  return 0;
}

// ---- daemons and the torch peer ----------------------------------------------------

struct Daemon {
  std::string label;
  std::string socket;
  std::string prefix;
  std::string log;
  pid_t pid = 0;
};

Daemon StartDaemon(const Flags& flags, const std::string& label, const std::string& tmp,
                   const std::string& shm, const std::string& verify_mode) {
  Daemon d;
  d.label = label;
  d.socket = tmp + "/" + label + ".sock";
  d.prefix = "bench_" + label;
  d.log = tmp + "/" + label + ".log";
  std::vector<std::string> args = {flags.holdfastd, "--node-id", label, "--socket", d.socket};
  args.insert(args.end(), {"--data-dir", tmp + "/" + label + "-data", "--shm-dir", shm});
  args.insert(args.end(),
              {"--shm-prefix", d.prefix, "--memory-budget", std::to_string(flags.budget)});
  args.insert(args.end(), {"--retain", "2", "--log-level", "info"});
  args.insert(args.end(), {"--verify", verify_mode});
  if (flags.spares >= 0) args.insert(args.end(), {"--spares", std::to_string(flags.spares)});
  const int log_fd = open(d.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) Fatal("cannot create " + d.log);
  d.pid = ForkExec(args, -1, log_fd, log_fd);
  close(log_fd);
  return d;
}

// Connects to `d` once it listens (up to 30 s).
std::unique_ptr<Client> ConnectWhenReady(const Daemon& d) {
  const auto start = Clock::now();
  for (;;) {
    int status;
    if (waitpid(d.pid, &status, WNOHANG) == d.pid) {
      Forget(d.pid);
      Fatal("holdfastd (" + d.label + ") exited during startup:\n" +
            holdfast::bench::Tail(d.log, 2000));
    }
    if (access(d.socket.c_str(), F_OK) == 0) {
      auto client = Client::Connect(ClientOptions(d.socket));
      if (client.ok()) return std::move(client).value();
      if (Since(start) > 30) CheckOk(client.status(), "connect to holdfastd (" + d.label + ")");
    }
    if (Since(start) > 30) Fatal("holdfastd (" + d.label + ") did not listen within 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Segment files of `d` in the shared-memory directory.
int CountSegments(const std::string& shm, const Daemon& d) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(shm)) {
    if (entry.path().filename().string().starts_with(d.prefix + "-")) ++n;
  }
  return n;
}

// Commit-time work the daemon logged ("commit job bench step S rank 0: ...,
// verify V ms, catalog C ms", or "verify background, ..."), by step.
struct CommitLog {
  double verify_ms = 0;
  double catalog_ms = 0;
};

std::map<int64_t, CommitLog> ParseCommitLog(const std::string& path) {
  std::map<int64_t, CommitLog> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto at = line.find("commit job ");
    if (at == std::string::npos) continue;
    long long step = 0;
    int rank = 0, items = 0;
    double mib = 0;
    CommitLog c;
    // "verify V ms" (verify mode commit) or "verify background".
    if (std::sscanf(line.c_str() + at,
                    "commit job %*s step %lld rank %d: %d items, %lf MiB, verify %lf ms, "
                    "catalog %lf ms",
                    &step, &rank, &items, &mib, &c.verify_ms, &c.catalog_ms) == 6 ||
        std::sscanf(line.c_str() + at,
                    "commit job %*s step %lld rank %d: %d items, %lf MiB, verify background, "
                    "catalog %lf ms",
                    &step, &rank, &items, &mib, &c.catalog_ms) == 5) {
      out[step] = c;
    }
  }
  return out;
}

// ---- samples and statistics ----------------------------------------------------------

struct Sample {
  double seconds = 0;
  int64_t step = 0;
  // Save: begin / copy / commit as SaveStats reports them; the daemon's log
  // splits commit further. Restore: open / copy as RestoreStats reports them.
  double begin = 0;
  double copy = 0;
  double commit = 0;
  double open = 0;
  double connect = 0;
  double verify_ms = 0;
  double catalog_ms = 0;
  // Background daemon: from the call's return until its verification ended
  // (waited for, untimed in `seconds`).
  double background_verify = 0;
  int new_segments = 0;  // segment files that appeared during the call
};

enum class Kind { kLimit, kHandOff, kRestore, kTorchSave, kTorchLoad };

struct Contender {
  std::string key;    // for JSON
  std::string label;  // for the table
  Kind kind;
  // 1: phase A (warm), 2: phase B (among first-touch work), 0: cold calls
  // made once before the phases, compared with phase A's memcpy.
  int phase = 1;
  std::function<Sample()> run;  // null: samples collected outside the loop
  std::vector<Sample> samples;  // one per repeat (cold rows: the cold calls)

  std::vector<double> Field(double Sample::*field) const {
    std::vector<double> out;
    for (const Sample& s : samples) out.push_back(s.*field);
    return out;
  }
  Stats Seconds() const { return Summarize(Field(&Sample::seconds)); }
};

// Median over repeats of this contender's time / the other's in the same repeat.
std::optional<double> PairedRatio(const Contender& ours, const Contender& limit) {
  if (ours.phase == 0 || ours.samples.size() != limit.samples.size()) return std::nullopt;
  std::vector<double> r;
  for (size_t i = 0; i < ours.samples.size(); ++i) {
    r.push_back(ours.samples[i].seconds / limit.samples[i].seconds);
  }
  return Summarize(r).median;
}

// ---- machine -----------------------------------------------------------------------

struct Machine : holdfast::bench::MachineBasics {
  std::string torch;
  std::string rpc;
  std::string first_saves;  // the daemons' first three saves: Begin time, segments created
  std::string load_before;
  std::string load_after;
};

Machine DescribeMachine() {
  Machine mc;
  static_cast<holdfast::bench::MachineBasics&>(mc) = holdfast::bench::DescribeMachineBasics();
  mc.load_before = LoadAverage();
  return mc;
}

// ---- output ------------------------------------------------------------------------

struct Report {
  const Flags* flags = nullptr;
  const Machine* machine = nullptr;
  uint64_t bytes = 0;
  std::vector<Contender>* contenders = nullptr;
  const Contender* memcpy_a = nullptr;
  const Contender* memcpy_b = nullptr;
  const Contender* memcpy2_a = nullptr;  // phase A, two threads
  const Contender* torch_save = nullptr;
  const Contender* torch_load = nullptr;
  const Contender* torch_load_new = nullptr;  // in a new process

  // The memcpy of the same phase (phase A's for the cold rows).
  const Contender& Limit(const Contender& c) const { return c.phase == 2 ? *memcpy_b : *memcpy_a; }

  const Contender* Peer(const Contender& c) const {
    if (c.kind == Kind::kHandOff) return torch_save;
    if (c.kind == Kind::kRestore) {
      return c.key.find("process") != std::string::npos ? torch_load_new : torch_load;
    }
    return nullptr;
  }
};

constexpr const char* kPhaseTitle[] = {
    "Cold: the first saves of each daemon (new segments, new mappings); x memcpy uses phase A's",
    "Phase A, warm: segments and mappings reused, nothing else touches new memory",
    "Phase B, among first-touch work: new mappings, new processes and torch in the same rotation"};

void PrintTables(const Report& r) {
  for (int phase : {1, 0, 2}) {
    std::printf(
        "%s\n\n| figure | median s | GB/s | min-max s | n | x memcpy | x memcpy, paired | "
        "x memcpy 2 thr | x torch |\n|---|---|---|---|---|---|---|---|---|\n",
        kPhaseTitle[phase]);
    for (const Contender& c : *r.contenders) {
      if (c.samples.empty() || c.phase != phase) continue;
      const Stats s = c.Seconds();
      const Contender& limit = r.Limit(c);
      const Contender* peer = r.Peer(c);
      const auto paired = &c == &limit ? std::nullopt : PairedRatio(c, limit);
      const bool two = c.phase == 1 && r.memcpy2_a != nullptr && !r.memcpy2_a->samples.empty();
      std::printf("| %s | %.3f | %.2f | %.3f-%.3f | %zu | %.2f | %s | %s | %s |\n",
                  c.label.c_str(), s.median, static_cast<double>(r.bytes) / s.median / 1e9, s.min,
                  s.max, c.samples.size(), s.median / limit.Seconds().median,
                  paired ? Fixed(*paired, 2).c_str() : "-",
                  two ? Fixed(s.median / r.memcpy2_a->Seconds().median, 2).c_str() : "-",
                  peer != nullptr && !peer->samples.empty()
                      ? Fixed(s.median / peer->Seconds().median, 3).c_str()
                      : "-");
    }
    std::printf("\n");
  }
  std::printf(
      "median s = median wall time of one call over the repeats (n); GB/s = %" PRIu64
      " bytes / median.\nx memcpy = median / memcpy median of the phase; paired = median over\n"
      "repeats of the ratio to the memcpy of the same repeat; x memcpy 2 thr = median /\n"
      "median of memcpy on two threads (phase A); x torch = median / torch.save\n"
      "median (hand-off rows) or torch.load median (restore rows; new-process restores:\n"
      "torch.load in a new process), from phase B.\n\n",
      r.bytes);

  std::printf(
      "| split (medians, ms) | begin/open | copy | copy x memcpy | commit | daemon verify | "
      "catalog | rest | background verify |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const Contender& c : *r.contenders) {
    if (c.samples.empty() || (c.kind != Kind::kHandOff && c.kind != Kind::kRestore)) continue;
    auto median = [&](double Sample::*f) { return Summarize(c.Field(f)).median; };
    const bool save = c.kind == Kind::kHandOff;
    std::vector<double> rest;
    for (const Sample& x : c.samples)
      rest.push_back(x.seconds - x.begin - x.open - x.copy - x.commit);
    std::printf("| %s%s | %.1f | %.1f | %.2f | %s | %s | %s | %.1f | %s |\n",
                c.phase == 2   ? "B: "
                : c.phase == 1 ? "A: "
                               : "",
                c.label.c_str(), 1e3 * median(save ? &Sample::begin : &Sample::open),
                1e3 * median(&Sample::copy), median(&Sample::copy) / r.Limit(c).Seconds().median,
                save ? Fixed(1e3 * median(&Sample::commit), 1).c_str() : "-",
                save ? Fixed(median(&Sample::verify_ms), 1).c_str() : "-",
                save ? Fixed(median(&Sample::catalog_ms), 2).c_str() : "-",
                1e3 * Summarize(rest).median,
                save && median(&Sample::background_verify) > 0
                    ? Fixed(1e3 * median(&Sample::background_verify), 1).c_str()
                    : "-");
  }
  std::printf(
      "\nbegin = BeginSnapshot round trip + mapping; open = OpenRestore round trip; copy =\n"
      "copy + checksum into shared memory (restore: out of it, with the mapping when new);\n"
      "commit = CommitSnapshot round trip, of which the daemon logs verify (checksum pass on\n"
      "its workers) and catalog (RocksDB batch); rest = the call's time outside those (restore:\n"
      "the CloseRestore round trip); background verify = after the call returned, until the\n"
      "background daemon's checksum pass ended (waited for, not part of the call).\n");
}

void WriteJson(const std::string& path, const Report& r) {
  std::ofstream out(path);
  if (!out) Fatal("cannot write " + path);
  const Machine& mc = *r.machine;
  const Flags& f = *r.flags;
  out << "{\n  \"bench\": \"smp_bench\",\n  \"date\": " << JsonString(mc.date) << ",\n"
      << "  \"machine\": {\"cpu\": " << JsonString(mc.cpu) << ", \"cores\": " << mc.cores
      << ", \"memory\": " << JsonString(mc.memory) << ", \"kernel\": " << JsonString(mc.kernel)
      << ", \"compiler\": " << JsonString(mc.compiler) << ", \"build\": " << JsonString(mc.build)
      << ", \"thp\": " << JsonString(mc.thp) << ", \"torch_numpy_python\": " << JsonString(mc.torch)
      << ", \"rpc\": " << JsonString(mc.rpc) << ", \"first_saves\": " << JsonString(mc.first_saves)
      << ", \"load_before\": " << JsonString(mc.load_before)
      << ", \"load_after\": " << JsonString(mc.load_after) << "},\n"
      << "  \"config\": {\"items\": " << f.items << ", \"item_bytes\": " << f.item_bytes
      << ", \"bytes\": " << r.bytes << ", \"repeats\": " << f.repeats
      << ", \"budget\": " << f.budget << ", \"retain\": 2, \"verify_threads\": 2"
      << ", \"shm_root\": " << JsonString(f.shm_root) << "},\n"
      << "  \"contenders\": [";
  bool first = true;
  for (const Contender& c : *r.contenders) {
    if (c.samples.empty()) continue;
    const Stats s = c.Seconds();
    const Contender& limit = r.Limit(c);
    const auto paired = &c == &limit ? std::nullopt : PairedRatio(c, limit);
    out << (first ? "\n" : ",\n") << "    {\"key\": " << JsonString(c.key)
        << ", \"label\": " << JsonString(c.label) << ", \"phase\": "
        << JsonString(c.phase == 0   ? "cold"
                      : c.phase == 1 ? "A"
                                     : "B")
        << ", \"median_seconds\": " << Fixed(s.median, 6)
        << ", \"min_seconds\": " << Fixed(s.min, 6) << ", \"max_seconds\": " << Fixed(s.max, 6)
        << ", \"gbps\": " << Fixed(static_cast<double>(r.bytes) / s.median / 1e9, 3)
        << ", \"ratio_to_memcpy\": " << Fixed(s.median / limit.Seconds().median, 4)
        << ", \"ratio_to_memcpy_paired\": " << (paired ? Fixed(*paired, 4) : "null");
    if (const Contender* peer = r.Peer(c); peer != nullptr && !peer->samples.empty()) {
      out << ", \"ratio_to_torch\": " << Fixed(s.median / peer->Seconds().median, 4);
    }
    out << ",\n     \"samples\": [";
    for (size_t i = 0; i < c.samples.size(); ++i) {
      const Sample& x = c.samples[i];
      out << (i ? ", " : "") << "{\"s\": " << Fixed(x.seconds, 6);
      if (c.kind == Kind::kHandOff) {
        out << ", \"step\": " << x.step << ", \"begin\": " << Fixed(x.begin, 6)
            << ", \"copy\": " << Fixed(x.copy, 6) << ", \"commit\": " << Fixed(x.commit, 6)
            << ", \"verify_ms\": " << Fixed(x.verify_ms, 3)
            << ", \"catalog_ms\": " << Fixed(x.catalog_ms, 3)
            << ", \"background_verify\": " << Fixed(x.background_verify, 6)
            << ", \"new_segments\": " << x.new_segments;
      } else if (c.kind == Kind::kRestore) {
        out << ", \"step\": " << x.step << ", \"open\": " << Fixed(x.open, 6)
            << ", \"copy\": " << Fixed(x.copy, 6) << ", \"connect\": " << Fixed(x.connect, 6);
      }
      out << "}";
    }
    out << "]}";
    first = false;
  }
  out << "\n  ]\n}\n";
  if (!out) Fatal("error writing " + path);
}

// ---- the run -------------------------------------------------------------------------

// One daemon with its saving client and the steps it has used.
struct Target {
  Daemon daemon;
  std::unique_ptr<Client> client;
  int64_t next_step = 1;
  bool background_verify = false;
  std::unique_ptr<holdfast::v1::Snapshot::Stub> status_stub;  // for GetStatus
};

// Waits until `t`'s daemon has no background verification running; returns
// the seconds waited.
double WaitVerified(Target& t) {
  if (!t.status_stub) {
    t.status_stub = holdfast::v1::Snapshot::NewStub(grpc::CreateChannel(
        "unix:" + t.daemon.socket, grpc::InsecureChannelCredentials()));
  }
  const auto start = Clock::now();
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    holdfast::v1::GetStatusResponse resp;
    const grpc::Status st = t.status_stub->GetStatus(&ctx, {}, &resp);
    if (!st.ok()) Fatal("GetStatus (" + t.daemon.label + "): " + st.error_message());
    if (resp.damaged_versions() != 0) Fatal("the daemon found a damaged version");
    if (resp.background_verifications() == 0) return Since(start);
    if (Since(start) > 60) Fatal("background verification did not finish within 60 s");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Sample TimedSave(Target& t, Client& client, std::span<const ItemView> items,
                 const std::string& shm) {
  const int before = CountSegments(shm, t.daemon);
  Sample s;
  s.step = t.next_step++;
  const auto start = Clock::now();
  auto stats = client.Save(s.step, items);
  s.seconds = Since(start);
  CheckOk(stats.status(), "Save step " + std::to_string(s.step) + " (" + t.daemon.label + ")");
  if (!stats->version_complete) Fatal("Save did not complete the version");
  s.begin = stats->begin_seconds;
  s.copy = stats->copy_seconds;
  s.commit = stats->commit_seconds;
  s.new_segments = CountSegments(shm, t.daemon) - before;
  if (t.background_verify) s.background_verify = WaitVerified(t);
  return s;
}

Sample ParseChild(const std::string& out) {
  Sample s;
  long long step = 0;
  if (std::sscanf(out.c_str(), "connect %lf restore %lf open %lf copy %lf step %lld", &s.connect,
                  &s.seconds, &s.open, &s.copy, &step) != 5) {
    Fatal("restore-child printed: " + out);
  }
  s.step = step;
  return s;
}

int RunBench(const Flags& flags, const char* self) {
  Machine mc = DescribeMachine();
  const uint64_t bytes = flags.items * flags.item_bytes;
  std::printf("smp_bench %s\n", mc.date.c_str());
  std::printf("cpu       %s (%u logical cores)\nmemory    %s; THP %s\nkernel    %s\n",
              mc.cpu.c_str(), mc.cores, mc.memory.c_str(), mc.thp.c_str(), mc.kernel.c_str());
  std::printf("compiler  %s, %s\n", mc.compiler.c_str(), mc.build.c_str());
  std::printf("snapshot  %d items x %" PRIu64 " bytes = %" PRIu64
              " bytes; %d repeats; daemons: budget %" PRIu64 ", retain 2, verify threads 2\n",
              flags.items, flags.item_bytes, bytes, flags.repeats, flags.budget);
  std::printf("load      %s (1, 5, 15 min)\n", mc.load_before.c_str());
  std::fflush(stdout);

  holdfast::bench::StartSignalWatcher();
  char tmp_template[] = "/tmp/smp_bench.XXXXXX";
  std::string shm_template = flags.shm_root + "/smp_bench.XXXXXX";
  if (mkdtemp(tmp_template) == nullptr || mkdtemp(shm_template.data()) == nullptr) {
    Fatal("mkdtemp failed");
  }
  const std::string tmp = tmp_template;
  const std::string shm = shm_template;
  RemoveAtExit(shm, flags.keep);
  RemoveAtExit(tmp, flags.keep);

  // The snapshot, and the buffer memcpy and the warm restore write into.
  Buffer src(bytes, true);
  Buffer dst(bytes, true);
  FillRandom(src.data(), bytes);
  const std::vector<ItemView> items = MakeItems(src.data(), flags.items, flags.item_bytes);
  const std::vector<RestoreTarget> targets = MakeTargets(dst.data(), flags.items, flags.item_bytes);

  // Every fork happens here, before the first gRPC channel.
  TorchPeer torch;
  const std::string torch_file = shm + "/torch_save_bench.pt";
  if (flags.torch) {
    const std::string data_file = shm + "/snapshot.bin";
    {
      std::ofstream out(data_file, std::ios::binary);
      out.write(reinterpret_cast<const char*>(src.data()), static_cast<std::streamsize>(bytes));
      if (!out) Fatal("cannot write " + data_file);
    }
    torch.Start(flags.python, flags.script, data_file, torch_file, flags.items);
    std::filesystem::remove(data_file);
    mc.torch = torch.versions();
    std::printf("torch     %s (torch, numpy, python) via %s\n", mc.torch.c_str(),
                flags.python.c_str());
  }
  // `bg`: the default daemon (verification in the background); `cv`: verification at commit.
  Target bg;
  bg.daemon = StartDaemon(flags, "background", tmp, shm, "background");
  bg.background_verify = true;
  Target cv;
  cv.daemon = StartDaemon(flags, "commit", tmp, shm, "commit");
  bg.client = ConnectWhenReady(bg.daemon);
  cv.client = ConnectWhenReady(cv.daemon);
  // The same daemon and rank, copying on one thread.
  auto one_thread = Client::Connect(ClientOptions(bg.daemon.socket, 1));
  CheckOk(one_thread.status(), "connect (1 copy thread)");
  std::printf("copying   %d threads (client default), and 1\n", bg.client->copy_threads());
  std::printf("daemons   %s; segments in %s\n", flags.holdfastd.c_str(), shm.c_str());
  std::fflush(stdout);

  std::vector<Contender> cs;
  cs.reserve(16);
  auto add = [&](int phase, std::string key, std::string label, Kind kind,
                 std::function<Sample()> run) {
    if (!flags.only.empty() && kind != Kind::kLimit &&
        std::find(flags.only.begin(), flags.only.end(), key) == flags.only.end()) {
      run = nullptr;
    }
    cs.push_back({std::move(key), std::move(label), kind, phase, std::move(run), {}});
    return cs.size() - 1;
  };
  auto memcpy_run = [&] {
    const auto start = Clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    Clobber(dst.data());
    return Sample{.seconds = Since(start)};
  };
  auto memcpy2_run = [&] {
    const uint64_t half = bytes / 2;
    const auto start = Clock::now();
    std::thread other([&] { std::memcpy(dst.data() + half, src.data() + half, bytes - half); });
    std::memcpy(dst.data(), src.data(), half);
    other.join();
    Clobber(dst.data());
    return Sample{.seconds = Since(start)};
  };
  holdfast::client::internal::CopyEngine engine1(1);
  holdfast::client::internal::CopyEngine engine2(2);
  auto engine_run = [&](holdfast::client::internal::CopyEngine& engine) {
    std::vector<holdfast::client::internal::CopyJob> jobs;
    for (int i = 0; i < flags.items; ++i) {
      jobs.push_back({dst.data() + i * flags.item_bytes, src.data() + i * flags.item_bytes,
                      flags.item_bytes});
    }
    std::vector<uint64_t> sums(jobs.size());
    const auto start = Clock::now();
    engine.CopyAndChecksum(jobs, sums);
    const double seconds = Since(start);
    Clobber(sums.data());
    return Sample{.seconds = seconds};
  };
  auto steady = [&] { return TimedSave(bg, *bg.client, items, shm); };
  auto restore_with = [&](Client& client) {
    Sample s;
    const auto start = Clock::now();
    auto stats = client.Restore(std::nullopt, targets);
    s.seconds = Since(start);
    CheckOk(stats.status(), "Restore");
    s.step = stats->step;
    s.open = stats->open_seconds;
    s.copy = stats->copy_seconds;
    return s;
  };
  auto warm_restore = [&] { return restore_with(*bg.client); };
  const std::vector<std::string> child = {self,           "restore-child",
                                          "--socket",     bg.daemon.socket,
                                          "--items",      std::to_string(flags.items),
                                          "--item-bytes", std::to_string(flags.item_bytes)};
  constexpr char kMemcpy[] = "memcpy, pre-faulted buffers (limit)";
  constexpr char kSteady[] = "hand-off, steady (segment reused, mapped)";
  constexpr char kWarm[] = "restore, warm (mapped, pre-faulted buffers)";

  // Phase A: only work that touches memory already mapped.
  const size_t i_memcpy_a = add(1, "memcpy", kMemcpy, Kind::kLimit, memcpy_run);
  const size_t i_memcpy2 =
      add(1, "memcpy_2threads", "memcpy, 2 threads, pre-faulted buffers", Kind::kLimit, memcpy2_run);
  // The client's copy engine (copy_engine.h: memcpy and CRC-64 per 256 KiB
  // piece) between the same private buffers: what the checksum costs.
  add(1, "memcpy_checksum", "copy engine (memcpy + checksum), 1 thread, pre-faulted buffers",
      Kind::kLimit, [&] { return engine_run(engine1); });
  add(1, "memcpy_checksum_2threads", "copy engine (memcpy + checksum), 2 threads",
      Kind::kLimit, [&] { return engine_run(engine2); });
  const size_t i_steady = add(1, "handoff_steady", kSteady, Kind::kHandOff, steady);
  add(1, "handoff_steady_1thread", "hand-off, steady, 1 copy thread", Kind::kHandOff,
      [&] { return TimedSave(bg, **one_thread, items, shm); });
  add(1, "handoff_steady_commit_verify", "hand-off, steady, daemon verifies at commit",
      Kind::kHandOff, [&] { return TimedSave(cv, *cv.client, items, shm); });
  const size_t i_warm = add(1, "restore_warm", kWarm, Kind::kRestore, warm_restore);
  add(1, "restore_warm_1thread", "restore, warm, 1 copy thread", Kind::kRestore,
      [&] { return restore_with(**one_thread); });
  // Cold: measured once, before the phases.
  const size_t i_cold =
      add(0, "handoff_cold", "hand-off, cold (new segment + mapping)", Kind::kHandOff, nullptr);
  const size_t i_cold_cv = add(0, "handoff_cold_commit_verify",
                               "hand-off, cold, daemon verifies at commit", Kind::kHandOff, nullptr);
  // Phase B: the same warm figures, rotated with calls that map or fault in
  // new memory.
  const size_t i_memcpy_b = add(2, "memcpy_b", kMemcpy, Kind::kLimit, memcpy_run);
  add(2, "handoff_steady_b", kSteady, Kind::kHandOff, steady);
  add(2, "handoff_new_client", "hand-off, new Client (segment reused, new mapping)", Kind::kHandOff,
      [&] {
        auto client = Client::Connect(ClientOptions(bg.daemon.socket));
        CheckOk(client.status(), "connect");
        return TimedSave(bg, **client, items, shm);
      });
  add(2, "restore_warm_b", kWarm, Kind::kRestore, warm_restore);
  add(2, "restore_cold_process", "restore, new process, fresh buffers", Kind::kRestore,
      [&] { return ParseChild(RunAndCapture(child)); });
  add(2, "restore_new_process_prefaulted", "restore, new process, pre-faulted buffers",
      Kind::kRestore, [&] {
        std::vector<std::string> args = child;
        args.push_back("--prefault");
        return ParseChild(RunAndCapture(args));
      });
  std::optional<size_t> i_tsave, i_tload, i_tload_new;
  if (flags.torch) {
    i_tsave = add(2, "torch_save", "torch.save to /dev/shm (peer)", Kind::kTorchSave,
                  [&] { return Sample{.seconds = torch.Time("save")}; });
    i_tload = add(2, "torch_load", "torch.load from /dev/shm (peer)", Kind::kTorchLoad,
                  [&] { return Sample{.seconds = torch.Time("load")}; });
    // In a new Python process, like the new-process restores.
    i_tload_new = add(2, "torch_load_new_process", "torch.load in a new process (peer)",
                      Kind::kTorchLoad, [&] {
                        torch.Stage();
                        const std::string out =
                            RunAndCapture({flags.python, flags.script, "--load-once", torch_file});
                        torch.Unstage();
                        const double seconds = std::strtod(out.c_str(), nullptr);
                        if (seconds <= 0) Fatal("torch_save_bench.py --load-once: " + out);
                        return Sample{.seconds = seconds};
                      });
  }

  // The round trip every call pays at least once: ListVersions, no bytes.
  std::vector<double> rtt;
  for (int i = 0; i < 200; ++i) {
    const auto start = Clock::now();
    CheckOk(bg.client->LatestStep().status(), "LatestStep");
    rtt.push_back(Since(start));
  }
  std::sort(rtt.begin(), rtt.end());
  mc.rpc = "gRPC round trip (LatestStep, 200 calls): median " + Fixed(rtt[100] * 1e3, 3) +
           " ms, p99 " + Fixed(rtt[197] * 1e3, 3) + " ms, max " + Fixed(rtt.back() * 1e3, 3) +
           " ms";
  std::printf("rpc       %s\n\n", mc.rpc.c_str());

  // Cold: the first saves get new segments (3 with retain 2: two kept
  // versions and the one being written), the client maps each for the first
  // time. Only calls that created a segment count as cold.
  // With spares (holdfastd --spares), the first save's Begin also queues
  // the next segments in the background: the second and third saves take
  // them if they are ready, which the alternation between the two daemons
  // gives them time for (as a training step would).
  std::fprintf(stderr, "cold saves...\n");
  for (int i = 0; i < 3; ++i) {
    for (Target* t : {&bg, &cv}) {
      Sample s = TimedSave(*t, *t->client, items, shm);
      if (s.new_segments > 0) cs[t == &bg ? i_cold : i_cold_cv].samples.push_back(s);
      mc.first_saves += (mc.first_saves.empty() ? "" : "; ") + std::string(t == &bg ? "bg" : "cv") +
                        " save " + std::to_string(i + 1) + ": " + Fixed(s.seconds, 3) +
                        " s, Begin " + Fixed(s.begin, 3) + " s, " +
                        std::to_string(s.new_segments) + " new segment file(s)";
    }
  }
  std::printf("first saves (spares %s): %s\n\n",
              flags.spares < 0 ? "default" : std::to_string(flags.spares).c_str(),
              mc.first_saves.c_str());
  // Each repeat runs every contender of the phase once, in an order reversed
  // every other repeat, after untimed warm-up rotations (two for phase A, so
  // that the cold saves' first touches have settled).
  for (int phase : {1, 2}) {
    std::vector<Contender*> order;
    for (Contender& c : cs) {
      if (c.phase == phase && c.run) order.push_back(&c);
    }
    for (int r = -(phase == 1 ? 2 : 1); r < flags.repeats; ++r) {
      std::fprintf(stderr, "phase %c %s %d/%d (load %s)\n", 'A' + phase - 1,
                   r < 0 ? "warm-up before repeat" : "repeat", std::max(r, 0) + 1, flags.repeats,
                   LoadAverage().c_str());
      for (Contender* c : order) {
        Sample s = c->run();
        if (r >= 0) c->samples.push_back(s);
      }
      std::reverse(order.begin(), order.end());
    }
  }
  mc.load_after = LoadAverage();

  // Checks, untimed: the restored bytes are the saved ones, and the steady
  // saves reused segments.
  std::memset(dst.data(), 0, bytes);
  CheckOk(bg.client->Restore(std::nullopt, targets).status(), "final restore");
  if (std::memcmp(dst.data(), src.data(), bytes) != 0) Fatal("restored bytes differ");
  for (const Contender& c : cs) {
    if (c.phase == 0 || c.kind != Kind::kHandOff) continue;
    for (const Sample& s : c.samples) {
      if (s.new_segments != 0) {
        std::fprintf(stderr, "warning: %s step %" PRId64 " created %d segment(s)\n",
                     c.label.c_str(), s.step, s.new_segments);
      }
    }
  }

  if (flags.torch) torch.Stop();
  one_thread->reset();
  for (Target* t : {&bg, &cv}) {
    t->client.reset();
    t->status_stub.reset();
    StopProcess(t->daemon.pid, SIGTERM, 10);
  }
  // Daemon-side split of every commit, from the daemons' logs.
  const auto log_bg = ParseCommitLog(bg.daemon.log);
  const auto log_cv = ParseCommitLog(cv.daemon.log);
  for (Contender& c : cs) {
    if (c.kind != Kind::kHandOff) continue;
    const bool at_commit = c.key.ends_with("commit_verify");
    for (Sample& s : c.samples) {
      const auto& log = at_commit ? log_cv : log_bg;
      if (auto it = log.find(s.step); it != log.end()) {
        s.verify_ms = it->second.verify_ms;
        s.catalog_ms = it->second.catalog_ms;
      }
    }
  }

  std::printf("load      %s after\n\n", mc.load_after.c_str());
  Report report{&flags,
                &mc,
                bytes,
                &cs,
                &cs[i_memcpy_a],
                &cs[i_memcpy_b],
                &cs[i_memcpy2],
                i_tsave ? &cs[*i_tsave] : nullptr,
                i_tload ? &cs[*i_tload] : nullptr,
                i_tload_new ? &cs[*i_tload_new] : nullptr};
  PrintTables(report);
  std::printf("\n");
  for (auto [i, what, goal] : {std::tuple{i_steady, "hand-off (steady, phase A)", 1.3},
                               std::tuple{i_warm, "restore (warm, phase A)", 1.2}}) {
    if (cs[i].samples.empty()) continue;
    const double ratio = cs[i].Seconds().median / cs[i_memcpy_a].Seconds().median;
    std::printf("goal: %s %.2fx memcpy (paired %.2f; %.2fx memcpy on 2 threads); goal <= %.1f: %s\n",
                what, ratio, PairedRatio(cs[i], cs[i_memcpy_a]).value_or(0),
                cs[i].Seconds().median / cs[i_memcpy2].Seconds().median, goal,
                ratio <= goal ? "met" : "MISSED");
  }
  if (!flags.json_path.empty()) {
    WriteJson(flags.json_path, report);
    std::printf("wrote %s\n", flags.json_path.c_str());
  }
  if (flags.keep) std::printf("kept %s and %s\n", tmp.c_str(), shm.c_str());
  holdfast::bench::CleanUpAll();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "restore-child") {
    const Flags flags = ParseFlags(argc, argv, 2);
    if (flags.socket.empty()) Fatal("restore-child needs --socket");
    return RestoreChild(flags);
  }
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  return RunBench(ParseFlags(argc, argv, 1), self.empty() ? argv[0] : self.c_str());
}
