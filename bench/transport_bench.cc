// transport_bench: throughput of smp/transport (UCX tagged messages) between
// two processes, next to ucx_perftest tag_bw over the same UCX transports in
// the same run (bench/ucx_limit.py under /usr/bin/python3), alternating.
//
// This process sends --bytes (default 1 GiB) as --window messages (default
// 1 MiB) with at most --inflight (default 16) sends outstanding to a peer
// process (this binary again, `transport_bench --peer ...`, forked and exec'd
// before any UCX object exists; worker addresses go over its stdin/stdout).
// The peer posts every receive of a round into its own pre-faulted buffer
// before the round starts, checks that each window landed where its tag
// says, and answers with a small message; a round is timed from the first
// send to that answer. GB = 10^9 bytes.
//
// Not quite the same work: ucx_perftest sends from and receives into one
// message-sized buffer per side (libperf_memory.c), which stays in cache,
// while this bench moves --bytes through distinct memory on both sides, as
// the daemon does. With --bytes 8M or 64M (cache-sized) the two agree.
//
//   transport_bench [--bytes 1G] [--window 1M] [--inflight 16] [--repeats 3]
//                   [--tls tcp] [--net-devices lo] [--no-perftest] [--script PATH]
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "child_process.h"
#include "transport/transport.h"

namespace holdfast::bench {
namespace {

using smp::Transport;
using smp::TransportOptions;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kAckTag = 0xffffffff00000000ULL;

struct Flags {
  uint64_t bytes = 1ULL << 30;
  uint64_t window = 1ULL << 20;
  int inflight = 16;
  int repeats = 3;
  std::string tls = "tcp";
  std::string net_devices = "lo";
  bool perftest = true;
  std::string script = HOLDFAST_UCX_LIMIT_SCRIPT;
  bool peer = false;
};

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "transport_bench: %s\nusage: transport_bench [--bytes 1G] [--window 1M] "
               "[--inflight 16] [--repeats 3] [--tls tcp] [--net-devices lo] [--no-perftest] "
               "[--script PATH]\n",
               why.c_str());
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--bytes") {
      if (!ParseBytes(value(), &f.bytes)) Usage("bad --bytes");
    } else if (a == "--window") {
      if (!ParseBytes(value(), &f.window)) Usage("bad --window");
    } else if (a == "--inflight") {
      f.inflight = std::atoi(value().c_str());
    } else if (a == "--repeats") {
      f.repeats = std::atoi(value().c_str());
    } else if (a == "--tls") {
      f.tls = value();
    } else if (a == "--net-devices") {
      f.net_devices = value();
    } else if (a == "--no-perftest") {
      f.perftest = false;
    } else if (a == "--script") {
      f.script = value();
    } else if (a == "--peer") {
      f.peer = true;
    } else {
      Usage("unknown flag " + a);
    }
  }
  if (f.window < 8 || f.bytes < f.window || f.bytes % f.window != 0) {
    Usage("--bytes must be a multiple of --window (>= 8)");
  }
  if (f.inflight < 1 || f.repeats < 1) Usage("--inflight and --repeats must be >= 1");
  return f;
}

std::string Hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

uint64_t Tag(int round, uint64_t window) { return (static_cast<uint64_t>(round) << 32) | window; }

// A pre-faulted, huge-page-advised buffer.
struct Buffer {
  explicit Buffer(uint64_t n) : size(n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) Fatal("mmap failed");
    madvise(p, n, MADV_HUGEPAGE);
    data = static_cast<uint8_t*>(p);
    std::memset(data, 0x11, n);
  }
  ~Buffer() { munmap(data, size); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  uint8_t* data;
  uint64_t size;
};

Transport::EndpointId ConnectTo(Transport& t, const std::string& address) {
  auto ep = t.Connect(address);
  CheckOk(ep.status(), "connect");
  return *ep;
}

std::unique_ptr<Transport> MakeTransport(const Flags& f) {
  TransportOptions options;
  options.tls = f.tls;
  options.net_devices = f.net_devices;
  auto created = Transport::Create(options);
  CheckOk(created.status(), "transport");
  return std::move(created).value();
}

bool ReadLine(FILE* in, std::string* line) {
  char buf[1 << 16];
  if (std::fgets(buf, sizeof buf, in) == nullptr) return false;
  *line = buf;
  while (!line->empty() && (line->back() == '\n' || line->back() == '\r')) line->pop_back();
  return true;
}

// ---- the peer: receives every round, answers each --------------------------------

int PeerMain(const Flags& f) {
  const uint64_t windows = f.bytes / f.window;
  Buffer buffer(f.bytes);
  auto transport = MakeTransport(f);
  std::printf("address %s\n", Hex(transport->address()).c_str());
  std::fflush(stdout);
  std::string line;
  if (!ReadLine(stdin, &line) || line.rfind("address ", 0) != 0) return 2;
  const Transport::EndpointId ep = ConnectTo(*transport, Unhex(line.substr(8)));

  std::mutex mu;
  std::condition_variable cv;
  for (int round = 0; round < f.repeats + 1; ++round) {  // round 0 warms up
    uint64_t finished = 0, failed = 0;
    for (uint64_t w = 0; w < windows; ++w) {
      uint8_t* at = buffer.data + w * f.window;
      transport->Recv(Tag(round, w), at, f.window, [&, at, w, round](Status s, uint64_t n) {
        uint64_t header = 0;
        std::memcpy(&header, at, sizeof header);
        std::lock_guard lock(mu);
        if (!s.ok() || n != f.window || header != Tag(round, w)) ++failed;
        if (++finished == windows) cv.notify_all();
      });
    }
    std::printf("posted %d\n", round);
    std::fflush(stdout);
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return finished == windows; });
    }
    uint64_t answer = failed;
    bool acked = false;
    transport->Send(ep, kAckTag | static_cast<uint64_t>(round), &answer, sizeof answer,
                    [&](Status, uint64_t) {
                      std::lock_guard lock(mu);
                      acked = true;
                      cv.notify_all();
                    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return acked; });
  }
  // Stay until the driver is done (it closes our stdin).
  while (ReadLine(stdin, &line)) {
  }
  transport.reset();
  return 0;
}

// ---- the driver ----------------------------------------------------------------

struct Peer {
  pid_t pid = -1;
  FILE* out = nullptr;  // its stdout
  int in = -1;          // its stdin
};

Peer StartPeer(const Flags& f, const char* self) {
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) Fatal("pipe2 failed");
  std::vector<std::string> args = {self, "--peer"};
  auto flag = [&args](const char* name, std::string value) {
    args.push_back(name);
    args.push_back(std::move(value));
  };
  flag("--bytes", std::to_string(f.bytes));
  flag("--window", std::to_string(f.window));
  flag("--repeats", std::to_string(f.repeats));
  flag("--tls", f.tls);
  flag("--net-devices", f.net_devices);
  Peer peer;
  peer.pid = ForkExec(args, to[0], from[1], -1);
  close(to[0]);
  close(from[1]);
  peer.in = to[1];
  peer.out = fdopen(from[0], "r");
  return peer;
}

void WriteLine(int fd, const std::string& s) {
  const std::string line = s + "\n";
  if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    Fatal("cannot write to the peer");
  }
}

void ExpectLine(FILE* in, const std::string& expected) {
  std::string line;
  if (!ReadLine(in, &line)) Fatal("peer exited (expected '" + expected + "')");
  if (line != expected) Fatal("peer said '" + line + "', expected '" + expected + "'");
}

// Sends one round; returns seconds from the first send to the peer's answer.
double SendRound(Transport& t, Transport::EndpointId ep, const Flags& f, Buffer& source,
                 int round) {
  const uint64_t windows = f.bytes / f.window;
  for (uint64_t w = 0; w < windows; ++w) {
    const uint64_t header = Tag(round, w);
    std::memcpy(source.data + w * f.window, &header, sizeof header);
  }
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  uint64_t failed = 0;
  std::string first_error;
  bool answered = false;
  uint64_t answer = ~uint64_t{0};
  t.Recv(kAckTag | static_cast<uint64_t>(round), &answer, sizeof answer, [&](Status s, uint64_t) {
    std::lock_guard lock(mu);
    answered = true;
    if (!s.ok() && first_error.empty()) first_error = "answer: " + s.ToString();
    cv.notify_all();
  });
  const auto start = Clock::now();
  for (uint64_t w = 0; w < windows; ++w) {
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return in_flight < f.inflight; });
      ++in_flight;
    }
    t.Send(ep, Tag(round, w), source.data + w * f.window, f.window, [&](Status s, uint64_t) {
      std::lock_guard lock(mu);
      --in_flight;
      if (!s.ok()) {
        ++failed;
        if (first_error.empty()) first_error = s.ToString();
      }
      cv.notify_all();
    });
  }
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return answered && in_flight == 0; });
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed != 0 || !first_error.empty()) Fatal("round failed: " + first_error);
  if (answer != 0) Fatal("peer found " + std::to_string(answer) + " misplaced windows");
  return seconds;
}

double PerftestBytesPerSecond(const Flags& f) {
  const std::string out =
      RunAndCapture({"/usr/bin/python3", f.script, "--message-bytes", std::to_string(f.window),
                     "--tls", f.tls, "--net-devices", f.net_devices});
  const std::string key = "\"bytes_per_second\": ";
  const size_t at = out.find(key);
  if (at == std::string::npos) Fatal("no bytes_per_second in ucx_limit.py output:\n" + out);
  return std::strtod(out.c_str() + at + key.size(), nullptr);
}

int DriverMain(const Flags& f, const char* self) {
  StartSignalWatcher();
  // Fork before any UCX object (or thread of ours) exists.
  Peer peer = StartPeer(f, self);
  const MachineBasics mc = DescribeMachineBasics();
  Buffer source(f.bytes);
  auto transport = MakeTransport(f);

  std::string line;
  if (!ReadLine(peer.out, &line) || line.rfind("address ", 0) != 0) Fatal("peer did not start");
  const Transport::EndpointId ep = ConnectTo(*transport, Unhex(line.substr(8)));
  WriteLine(peer.in, "address " + Hex(transport->address()));

  std::printf("transport_bench %s\n", mc.date.c_str());
  std::printf("cpu       %s (%u logical cores)\nmemory    %s; THP %s\nkernel    %s\n",
              mc.cpu.c_str(), mc.cores, mc.memory.c_str(), mc.thp.c_str(), mc.kernel.c_str());
  std::printf("compiler  %s, %s\n", mc.compiler.c_str(), mc.build.c_str());
  std::printf("load      %s (1, 5, 15 min)\n", LoadAverage().c_str());
  std::printf("transfer  %" PRIu64 " bytes as %" PRIu64
              "-byte windows, <= %d in flight; "
              "UCX_TLS=%s UCX_NET_DEVICES=%s; two processes\n",
              f.bytes, f.window, f.inflight, f.tls.c_str(), f.net_devices.c_str());
  std::printf("limit     ucx_perftest tag_bw, %" PRIu64
              "-byte messages, one reused buffer per side (%s)\n\n",
              f.window, f.perftest ? f.script.c_str() : "skipped");
  std::fflush(stdout);

  std::vector<double> ours, limit;
  for (int round = 0; round < f.repeats + 1; ++round) {
    ExpectLine(peer.out, "posted " + std::to_string(round));
    const double seconds = SendRound(*transport, ep, f, source, round);
    if (round == 0) continue;  // warm-up: connections, page faults on the peer
    ours.push_back(static_cast<double>(f.bytes) / seconds / 1e9);
    std::fprintf(stderr, "round %d: transport %.3f GB/s\n", round, ours.back());
    if (f.perftest) {
      limit.push_back(PerftestBytesPerSecond(f) / 1e9);
      std::fprintf(stderr, "round %d: ucx_perftest %.3f GB/s\n", round, limit.back());
    }
  }
  // Close our side first (nothing is in flight: a graceful close), so that
  // the peer's exit is not reported as a failed peer.
  transport->Disconnect(ep);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  close(peer.in);  // the peer exits
  int status = 0;
  waitpid(peer.pid, &status, 0);
  Forget(peer.pid);
  fclose(peer.out);
  transport.reset();

  const Stats o = Summarize(ours);
  std::printf("| what | GB/s median | min-max | runs |\n|---|---|---|---|\n");
  std::printf("| Transport (this code) | %.3f | %.3f-%.3f | %zu |\n", o.median, o.min, o.max,
              ours.size());
  if (!limit.empty()) {
    const Stats l = Summarize(limit);
    std::printf("| ucx_perftest tag_bw | %.3f | %.3f-%.3f | %zu |\n", l.median, l.min, l.max,
                limit.size());
    std::printf("\nratio of medians: %.2f of ucx_perftest\n", o.median / l.median);
  }
  std::printf("load      %s after\n", LoadAverage().c_str());
  return 0;
}

}  // namespace
}  // namespace holdfast::bench

int main(int argc, char** argv) {
  const holdfast::bench::Flags flags = holdfast::bench::ParseFlags(argc, argv);
  if (flags.peer) return holdfast::bench::PeerMain(flags);
  return holdfast::bench::DriverMain(flags, "/proc/self/exe");
}
