// ec_bench: throughput of holdfast's erasure coding next to raw ISA-L and
// memcpy, measured side by side in one run on the same buffers.
//
// For each code (k, m) the data buffer (--total-bytes, default 1 GiB) is cut
// into as many stripes of k chunks of --chunk-bytes (default 1 MiB) as fit,
// and each contender makes full passes over every stripe:
//
//   memcpy            the stripes' data bytes into another buffer: the limit
//   encode            ours: Codec::Encode, and StripeCoder::Encode
//                     raw:  ec_init_tables once, ec_encode_data per stripe
//   decode            ours: Codec::Decode of data chunks 0..m-1 (m lost data
//                           chunks: the expensive case, a full k x k inverse)
//                     raw:  decode matrix built once with gf_invert_matrix,
//                           then ec_encode_data per stripe
//   verified rebuild  ours: StripeCoder::VerifiedRebuild of that pattern
//                     raw:  crc64_ecma_refl of the k survivors, the raw
//                           decode, crc64_ecma_refl of the m rebuilt chunks
//
// and Checksum against crc64_ecma_refl over the whole data buffer, one call
// per chunk. Every figure is GB/s (1e9 bytes) of stripe data, k * chunk-bytes
// per stripe, whatever the operation reads or writes.
//
// All buffers are mmap'ed and pre-faulted before timing; every contender uses
// the same ones. Outputs are checked against each other (and rebuilt chunks
// against the original data) before timing, the rebuilt chunks again after.
// Codes run one after another. Within a code, each repeat is one pass per
// contender, taken in turns of --slice-bytes (every contender does the first
// slice, then every contender the next, order reversed every other turn),
// each turn preceded by an untimed --flush-bytes read that evicts the previous
// contender's lines. The table reports median and min-max of the repeats, and
// ours/raw as the median over all turns of the paired time ratio, which noise
// from other tenants hits alike.
#include <isa-l.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/ec/codec.h"
#include "holdfast/ec/status.h"
#include "holdfast/ec/stripe_coder.h"

namespace {

using namespace holdfast::bench;  // NOLINT(build/namespaces): the shared bench helpers
using holdfast::Status;
using holdfast::ec::ChunkMask;
using holdfast::ec::ChunkView;
using holdfast::ec::Codec;
using holdfast::ec::StripeCoder;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "ec_bench: %s\n", message.c_str());
  std::exit(1);
}

void CheckOk(const Status& status, const char* what) {
  if (!status.ok()) Die(std::string(what) + ": " + status.ToString());
}

// Keeps the compiler from dropping writes nobody reads back.
void Clobber(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

// ---- flags -----------------------------------------------------------------

struct Code {
  int k = 0;
  int m = 0;
};

struct Flags {
  uint64_t total_bytes = kGiB;
  uint64_t chunk_bytes = kMiB;
  uint64_t chunk_gap = 0;
  uint64_t slice_bytes = 256 * kMiB;
  uint64_t flush_bytes = 64 * kMiB;
  int repeats = 5;
  std::vector<Code> codes = {{2, 1}, {4, 2}, {8, 2}, {10, 4}};
  std::string json_path;
  bool thp = false;
};

constexpr char kUsage[] =
    "usage: ec_bench [--total-bytes N] [--chunk-bytes N] [--chunk-gap N] [--repeats N]\n"
    "                [--slice-bytes N] [--flush-bytes N] [--codes K+M,...] [--thp]\n"
    "                [--json FILE]\n"
    "  --total-bytes N  data bytes per pass (default 1G; suffixes K, M, G)\n"
    "  --chunk-bytes N  bytes per chunk (default 1M)\n"
    "  --chunk-gap N    unused bytes after every chunk (default 0: chunks back to\n"
    "                   back, so they start at multiples of --chunk-bytes)\n"
    "  --repeats N      timed passes per contender (default 5)\n"
    "  --slice-bytes N  contenders take turns every N bytes of data (default 256M)\n"
    "  --flush-bytes N  bytes read, untimed, before every timed slice to evict the\n"
    "                   previous contender's lines (default 64M; 0: no flush)\n"
    "  --codes LIST     codes to run, m <= k (default 2+1,4+2,8+2,10+4)\n"
    "  --thp            madvise(MADV_HUGEPAGE) the buffers (default: 4 KiB pages)\n"
    "  --json FILE      also write the results as JSON\n";

bool ParseCodes(std::string_view text, std::vector<Code>* out) {
  out->clear();
  std::stringstream in{std::string(text)};
  std::string item;
  while (std::getline(in, item, ',')) {
    Code code;
    char plus = 0;
    std::stringstream parse(item);
    if (!(parse >> code.k >> plus >> code.m) || plus != '+' || !parse.eof()) return false;
    if (!holdfast::ec::CheckCodeParameters(code.k, code.m).ok()) return false;
    if (code.m > code.k) return false;  // the decode pattern loses m data chunks
    out->push_back(code);
  }
  return !out->empty();
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (arg != "--thp" && arg != "--help" && arg != "-h") {
      if (i + 1 >= argc) Die(arg + " needs a value\n" + kUsage);
      value = argv[++i];
    }
    bool ok = true;
    if (arg == "--total-bytes") {
      ok = ParseBytes(value, &flags.total_bytes);
    } else if (arg == "--chunk-bytes") {
      ok = ParseBytes(value, &flags.chunk_bytes);
    } else if (arg == "--chunk-gap") {
      ok = ParseBytes(value, &flags.chunk_gap);
    } else if (arg == "--slice-bytes") {
      ok = ParseBytes(value, &flags.slice_bytes) && flags.slice_bytes > 0;
    } else if (arg == "--flush-bytes") {
      ok = ParseBytes(value, &flags.flush_bytes);
    } else if (arg == "--repeats") {
      flags.repeats = std::atoi(value.c_str());
      ok = flags.repeats >= 1;
    } else if (arg == "--codes") {
      ok = ParseCodes(value, &flags.codes);
    } else if (arg == "--json") {
      flags.json_path = value;
      ok = !value.empty();
    } else if (arg == "--thp") {
      flags.thp = true;
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      Die("unknown flag " + arg + "\n" + kUsage);
    }
    if (!ok) Die("bad value for " + arg + ": '" + value + "'\n" + kUsage);
  }
  // ISA-L lengths are int; the AVX kernels want at least 64 bytes.
  if (flags.chunk_bytes < 64 || flags.chunk_bytes > kGiB) {
    Die("--chunk-bytes must be in [64, 1G]");
  }
  if (flags.chunk_gap > kGiB) Die("--chunk-gap must be <= 1G");
  for (const Code& code : flags.codes) {
    if (flags.total_bytes < flags.chunk_bytes * code.k) {
      Die("--total-bytes must hold at least one stripe of " + std::to_string(code.k) + " chunks");
    }
  }
  return flags;
}

// ---- memory ----------------------------------------------------------------

// An anonymous mapping, pre-faulted by writing every byte. Move-only.
class Buffer {
 public:
  Buffer(uint64_t size, bool thp) : size_(size) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) Die("mmap of " + std::to_string(size) + " bytes failed");
    data_ = static_cast<uint8_t*>(p);
    if (thp && madvise(p, size, MADV_HUGEPAGE) != 0) Die("madvise(MADV_HUGEPAGE) failed");
    std::memset(data_, 0x5a, size);
  }
  ~Buffer() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  Buffer(Buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Buffer& operator=(Buffer&&) = delete;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

void FillRandom(uint8_t* p, uint64_t size, uint64_t seed) {
  uint64_t x = seed | 1;
  for (uint64_t i = 0; i + 8 <= size; i += 8) {
    x ^= x << 13;  // xorshift64
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
}

// ---- raw ISA-L baseline ----------------------------------------------------

// The same systematic Cauchy generator as Codec, built by hand.
std::vector<uint8_t> RawGenerator(int k, int m) {
  std::vector<uint8_t> gen(static_cast<size_t>(k + m) * k);
  gf_gen_cauchy1_matrix(gen.data(), k + m, k);
  return gen;
}

// Expanded tables that rebuild the chunks in `lost` (ascending) from the
// first k chunks not in `lost`, as in ISA-L's examples/ec/ec_simple_example.c.
std::vector<uint8_t> RawDecodeTables(const std::vector<uint8_t>& gen, int k, int m,
                                     const std::vector<int>& lost) {
  const size_t kk = static_cast<size_t>(k);
  std::vector<uint8_t> b(kk * kk);
  std::vector<uint8_t> inv(kk * kk);
  size_t row = 0;
  for (int c = 0; c < k + m && row < kk; ++c) {
    if (std::find(lost.begin(), lost.end(), c) != lost.end()) continue;
    std::memcpy(&b[row * kk], &gen[static_cast<size_t>(c) * kk], kk);
    ++row;
  }
  if (gf_invert_matrix(b.data(), inv.data(), k) != 0) Die("raw decode matrix is singular");
  std::vector<uint8_t> rows(lost.size() * kk);
  for (size_t r = 0; r < lost.size(); ++r) {
    const size_t e = static_cast<size_t>(lost[r]);
    for (size_t j = 0; j < kk; ++j) {
      if (e < kk) {
        rows[r * kk + j] = inv[e * kk + j];
        continue;
      }
      uint8_t acc = 0;
      for (size_t t = 0; t < kk; ++t) acc ^= gf_mul(gen[e * kk + t], inv[t * kk + j]);
      rows[r * kk + j] = acc;
    }
  }
  std::vector<uint8_t> tables(32 * kk * lost.size());
  ec_init_tables(k, static_cast<int>(lost.size()), rows.data(), tables.data());
  return tables;
}

// ---- statistics --------------------------------------------------------------

// Throughput of `ours` relative to `raw`, slice by slice: each pair ran the
// same bytes milliseconds apart, so noise that slows both cancels out.
Stats PairedRatio(const std::vector<double>& ours_seconds, const std::vector<double>& raw_seconds) {
  std::vector<double> ratios;
  for (size_t i = 0; i < ours_seconds.size() && i < raw_seconds.size(); ++i) {
    ratios.push_back(raw_seconds[i] / ours_seconds[i]);
  }
  return Summarize(std::move(ratios));
}

// ---- contenders --------------------------------------------------------------

struct CodeBench;

// One way of processing a group's data, unit by unit (a unit is a stripe, or
// a chunk for the checksum group): run(first, end) processes [first, end).
struct Contender {
  Contender(std::string name_in, std::function<void(uint64_t, uint64_t)> run_in)
      : name(std::move(name_in)), run(std::move(run_in)) {}

  std::string name;
  std::function<void(uint64_t, uint64_t)> run;
  std::vector<double> gbps;           // one per repeat
  std::vector<double> slice_seconds;  // every slice of every repeat, in order
};

// One table row: our contender against its baseline, with the memcpy of the
// same group as the limit.
struct Row {
  std::string operation;
  size_t ours = 0;  // indices into Group::contenders
  size_t raw = 0;
};

// Contenders timed together, interleaved, over the same bytes.
struct Group {
  std::string label;  // "4+2", or "any" for the checksum group
  int k = 0;
  int m = 0;
  uint64_t bytes = 0;         // data bytes per pass
  uint64_t units = 0;         // stripes, or chunks for the checksum group
  CodeBench* code = nullptr;  // null for the checksum group
  std::vector<Contender> contenders;
  size_t memcpy_index = 0;
  std::vector<Row> rows;
};

// Everything one code needs, alive for the whole run.
struct CodeBench {
  int k = 0;
  int m = 0;
  uint64_t chunk = 0;
  uint64_t stride = 0;  // chunk + gap: distance between chunk starts
  uint64_t stripes = 0;
  uint8_t* data = nullptr;     // stripes * k chunks
  uint8_t* parity = nullptr;   // stripes * m chunks
  uint8_t* rebuilt = nullptr;  // stripes * m chunks: where lost chunks are rebuilt
  std::unique_ptr<Codec> codec;
  std::unique_ptr<StripeCoder> coder;
  std::vector<uint8_t> raw_encode_tables;
  std::vector<uint8_t> raw_decode_tables;
  std::vector<uint64_t> expected;  // Checksum of every chunk, stripes * n

  int n() const { return k + m; }
  ChunkMask lost() const { return holdfast::ec::AllChunks(m); }  // data chunks 0..m-1
  ChunkMask available() const { return holdfast::ec::AllChunks(n()) & ~lost(); }
  uint64_t ParityArea() const { return stripes * m * stride; }  // also the rebuilt area
  uint8_t* Data(uint64_t s, int c) const { return data + (s * k + c) * stride; }
  uint8_t* Parity(uint64_t s, int p) const { return parity + (s * m + p) * stride; }
  uint8_t* Rebuilt(uint64_t s, int c) const { return rebuilt + (s * m + c) * stride; }
  // Chunk c of stripe s as the decoders see it: lost chunks point at `rebuilt`.
  uint8_t* DecodeChunk(uint64_t s, int c) const {
    if (c < m) return Rebuilt(s, c);
    return c < k ? Data(s, c) : Parity(s, c - k);
  }

  void OursEncode(uint64_t first, uint64_t end) const {
    for (uint64_t s = first; s < end; ++s) {
      const uint8_t* d[holdfast::ec::kMaxChunks];
      uint8_t* p[holdfast::ec::kMaxParityChunks];
      for (int c = 0; c < k; ++c) d[c] = Data(s, c);
      for (int c = 0; c < m; ++c) p[c] = Parity(s, c);
      CheckOk(codec->Encode({d, static_cast<size_t>(k)}, {p, static_cast<size_t>(m)}, chunk),
              "Codec::Encode");
    }
  }

  void RawEncode(uint64_t first, uint64_t end) {
    for (uint64_t s = first; s < end; ++s) {
      uint8_t* d[holdfast::ec::kMaxChunks];
      uint8_t* p[holdfast::ec::kMaxParityChunks];
      for (int c = 0; c < k; ++c) d[c] = Data(s, c);
      for (int c = 0; c < m; ++c) p[c] = Parity(s, c);
      ec_encode_data(static_cast<int>(chunk), k, m, raw_encode_tables.data(), d, p);
    }
  }

  void StripeEncode(uint64_t first, uint64_t end) const {
    for (uint64_t s = first; s < end; ++s) {
      ChunkView d[holdfast::ec::kMaxChunks];
      ChunkView p[holdfast::ec::kMaxParityChunks];
      for (int c = 0; c < k; ++c) d[c] = {Data(s, c), chunk};
      for (int c = 0; c < m; ++c) p[c] = {Parity(s, c), chunk};
      CheckOk(coder->Encode({d, static_cast<size_t>(k)}, {p, static_cast<size_t>(m)}, chunk),
              "StripeCoder::Encode");
    }
  }

  void OursDecode(uint64_t first, uint64_t end) const {
    for (uint64_t s = first; s < end; ++s) {
      uint8_t* chunks[holdfast::ec::kMaxChunks];
      for (int c = 0; c < n(); ++c) chunks[c] = DecodeChunk(s, c);
      CheckOk(codec->Decode({chunks, static_cast<size_t>(n())}, available(), lost(), chunk),
              "Codec::Decode");
    }
  }

  void RawDecode(uint64_t first, uint64_t end) {
    for (uint64_t s = first; s < end; ++s) {
      // Survivors in ascending order: data m..k-1, then every parity chunk.
      uint8_t* src[holdfast::ec::kMaxChunks];
      uint8_t* dst[holdfast::ec::kMaxParityChunks];
      for (int c = m; c < n(); ++c) src[c - m] = DecodeChunk(s, c);
      for (int c = 0; c < m; ++c) dst[c] = Rebuilt(s, c);
      ec_encode_data(static_cast<int>(chunk), k, m, raw_decode_tables.data(), src, dst);
    }
  }

  void VerifiedRebuild(uint64_t first, uint64_t end) const {
    for (uint64_t s = first; s < end; ++s) {
      ChunkView views[holdfast::ec::kMaxChunks];
      for (int c = 0; c < n(); ++c) views[c] = {DecodeChunk(s, c), chunk};
      auto report = coder->VerifiedRebuild({views, static_cast<size_t>(n())},
                                           {&expected[s * n()], static_cast<size_t>(n())},
                                           available(), lost(), chunk);
      CheckOk(report.status(), "StripeCoder::VerifiedRebuild");
      if (report->corrupted != 0) Die("VerifiedRebuild found corruption: " + report->ToString());
    }
  }

  // The work VerifiedRebuild does, with ISA-L calls only: CRC-64 of the k
  // survivors, decode, CRC-64 of the m rebuilt chunks.
  void RawVerifiedRebuild(uint64_t first, uint64_t end) {
    for (uint64_t s = first; s < end; ++s) {
      const uint64_t* want = &expected[s * n()];
      uint8_t* src[holdfast::ec::kMaxChunks];
      uint8_t* dst[holdfast::ec::kMaxParityChunks];
      for (int c = m; c < n(); ++c) {
        src[c - m] = DecodeChunk(s, c);
        if (crc64_ecma_refl(0, src[c - m], chunk) != want[c]) Die("raw verify: bad checksum");
      }
      for (int c = 0; c < m; ++c) dst[c] = Rebuilt(s, c);
      ec_encode_data(static_cast<int>(chunk), k, m, raw_decode_tables.data(), src, dst);
      for (int c = 0; c < m; ++c) {
        if (crc64_ecma_refl(0, dst[c], chunk) != want[c]) Die("raw verify: bad rebuilt chunk");
      }
    }
  }

  // Every parity chunk equals the same chunk in `other`, a copy of the parity
  // area.
  bool ParityMatches(const uint8_t* other) const {
    for (uint64_t s = 0; s < stripes; ++s) {
      for (int c = 0; c < m; ++c) {
        const uint64_t at = (s * m + c) * stride;
        if (std::memcmp(parity + at, other + at, chunk) != 0) return false;
      }
    }
    return true;
  }

  // Every rebuilt chunk equals the original data chunk.
  bool RebuiltMatches() const {
    for (uint64_t s = 0; s < stripes; ++s) {
      for (int c = 0; c < m; ++c) {
        if (std::memcmp(Rebuilt(s, c), Data(s, c), chunk) != 0) return false;
      }
    }
    return true;
  }
};

// Runs each output-producing contender once, compares the outputs, and
// records the chunk checksums VerifiedRebuild needs. Also warms up every
// path (decode tables are built and cached here). `scratch` holds at least
// the parity bytes.
void Validate(CodeBench& b, uint8_t* scratch) {
  const uint64_t parity_bytes = b.ParityArea();
  const uint64_t rebuilt_bytes = parity_bytes;
  const std::string code = std::to_string(b.k) + "+" + std::to_string(b.m);
  b.RawEncode(0, b.stripes);
  std::memcpy(scratch, b.parity, parity_bytes);
  std::memset(b.parity, 0, parity_bytes);
  b.OursEncode(0, b.stripes);
  if (!b.ParityMatches(scratch)) Die(code + ": Codec::Encode != ISA-L");
  std::memset(b.parity, 0, parity_bytes);
  b.StripeEncode(0, b.stripes);
  if (!b.ParityMatches(scratch)) Die(code + ": StripeCoder::Encode != ISA-L");

  b.expected.resize(b.stripes * b.n());
  for (uint64_t s = 0; s < b.stripes; ++s) {
    for (int c = 0; c < b.n(); ++c) {
      const uint8_t* p = c < b.k ? b.Data(s, c) : b.Parity(s, c - b.k);
      b.expected[s * b.n() + c] = holdfast::ec::Checksum({p, b.chunk});
    }
  }

  std::memset(b.rebuilt, 0, rebuilt_bytes);
  b.OursDecode(0, b.stripes);
  if (!b.RebuiltMatches()) Die(code + ": Codec::Decode did not rebuild the data");
  std::memset(b.rebuilt, 0, rebuilt_bytes);
  b.RawDecode(0, b.stripes);
  if (!b.RebuiltMatches()) Die(code + ": raw ISA-L decode did not rebuild the data");
  std::memset(b.rebuilt, 0, rebuilt_bytes);
  b.VerifiedRebuild(0, b.stripes);
  if (!b.RebuiltMatches()) Die(code + ": VerifiedRebuild did not rebuild the data");
  std::memset(b.rebuilt, 0, rebuilt_bytes);
  b.RawVerifiedRebuild(0, b.stripes);
  if (!b.RebuiltMatches()) Die(code + ": raw verified rebuild did not rebuild the data");
}

// ---- machine -----------------------------------------------------------------

struct Machine : holdfast::bench::MachineBasics {
  std::string cpu_flags;  // the ones that pick ISA-L's kernels
  std::string isal;
  std::string load_before;  // /proc/loadavg: other work on this shared machine
  std::string load_after;
};

Machine DescribeMachine(bool thp) {
  Machine mc;
  static_cast<holdfast::bench::MachineBasics&>(mc) = holdfast::bench::DescribeMachineBasics();
  const std::string flags = " " + ProcField("/proc/cpuinfo", "flags") + " ";
  for (const char* f : {"avx2", "avx512f", "avx512bw", "gfni", "vpclmulqdq"}) {
    if (flags.find(std::string(" ") + f + " ") != std::string::npos) {
      mc.cpu_flags += (mc.cpu_flags.empty() ? "" : " ") + std::string(f);
    }
  }
  const std::string pkg = CommandOutput("dpkg-query -W -f='${Version}' libisal2 2>/dev/null");
  mc.isal = "libisal2 " + (pkg.empty() ? std::string("(not from dpkg)") : pkg) + ", header " +
            std::to_string(ISAL_MAJOR_VERSION) + "." + std::to_string(ISAL_MINOR_VERSION) + "." +
            std::to_string(ISAL_PATCH_VERSION);
  mc.thp = (thp ? "buffers madvise(MADV_HUGEPAGE); system " : "4 KiB pages (no madvise); system ") +
           mc.thp;
  mc.load_before = LoadAverage();
  return mc;
}

// ---- output --------------------------------------------------------------------

std::string Cell(const Stats& s) {
  return Fixed(s.median, 2) + " (" + Fixed(s.min, 2) + "-" + Fixed(s.max, 2) + ")";
}

void PrintTable(const std::vector<Group>& groups) {
  std::printf(
      "| code | operation | ours GB/s | raw ISA-L GB/s | ours/raw (paired) | memcpy GB/s |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const Group& g : groups) {
    const Stats mem = Summarize(g.contenders[g.memcpy_index].gbps);
    for (const Row& row : g.rows) {
      const Contender& ours = g.contenders[row.ours];
      const Contender& raw = g.contenders[row.raw];
      const Stats o = Summarize(ours.gbps);
      const Stats r = Summarize(raw.gbps);
      const Stats ratio = PairedRatio(ours.slice_seconds, raw.slice_seconds);
      std::printf("| %s | %s | %s | %s | %.2f | %s |\n", g.label.c_str(), row.operation.c_str(),
                  Cell(o).c_str(), Cell(r).c_str(), ratio.median, Cell(mem).c_str());
    }
  }
  std::printf(
      "\nGB/s = 1e9 bytes of stripe data per second; median (min-max) of the repeats.\n"
      "ours/raw = median over every slice of every repeat of raw time / our time on the\n"
      "same slice (contenders take turns slice by slice).\n");
}

std::string JsonStats(const Stats& s) {
  return "{\"median\": " + Fixed(s.median, 4) + ", \"min\": " + Fixed(s.min, 4) +
         ", \"max\": " + Fixed(s.max, 4) + "}";
}

std::string JsonContender(const Contender& c) {
  const Stats s = Summarize(c.gbps);
  std::string out = "{\"name\": " + JsonString(c.name) + ", \"gbps\": [";
  for (size_t i = 0; i < c.gbps.size(); ++i) {
    out += (i ? ", " : "") + Fixed(c.gbps[i], 4);
  }
  return out + "], \"median\": " + Fixed(s.median, 4) + ", \"min\": " + Fixed(s.min, 4) +
         ", \"max\": " + Fixed(s.max, 4) + "}";
}

void WriteJson(const std::string& path, const Flags& flags, const Machine& mc,
               const std::vector<Group>& groups) {
  std::ofstream out(path);
  if (!out) Die("cannot write " + path);
  out << "{\n  \"bench\": \"ec_bench\",\n  \"date\": " << JsonString(mc.date) << ",\n";
  out << "  \"machine\": {\"cpu\": " << JsonString(mc.cpu)
      << ", \"cpu_flags\": " << JsonString(mc.cpu_flags) << ", \"cores\": " << mc.cores
      << ", \"memory\": " << JsonString(mc.memory) << ", \"kernel\": " << JsonString(mc.kernel)
      << ", \"isal\": " << JsonString(mc.isal) << ", \"compiler\": " << JsonString(mc.compiler)
      << ", \"build\": " << JsonString(mc.build) << ", \"pages\": " << JsonString(mc.thp)
      << ", \"load_before\": " << JsonString(mc.load_before)
      << ", \"load_after\": " << JsonString(mc.load_after) << "},\n";
  out << "  \"config\": {\"total_bytes\": " << flags.total_bytes
      << ", \"chunk_bytes\": " << flags.chunk_bytes << ", \"chunk_gap\": " << flags.chunk_gap
      << ", \"repeats\": " << flags.repeats << ", \"slice_bytes\": " << flags.slice_bytes
      << ", \"flush_bytes\": " << flags.flush_bytes
      << ", \"thp\": " << (flags.thp ? "true" : "false") << "},\n";
  out << "  \"unit\": \"GB/s of stripe data (1e9 bytes/s)\",\n  \"rows\": [";
  bool first = true;
  for (const Group& g : groups) {
    for (const Row& row : g.rows) {
      const Contender& ours = g.contenders[row.ours];
      const Contender& raw = g.contenders[row.raw];
      out << (first ? "\n" : ",\n") << "    {\"code\": " << JsonString(g.label)
          << ", \"k\": " << g.k << ", \"m\": " << g.m
          << ", \"operation\": " << JsonString(row.operation) << ", \"bytes\": " << g.bytes
          << ", \"units\": " << g.units << ",\n     \"ours\": " << JsonContender(ours)
          << ",\n     \"raw\": " << JsonContender(raw) << ",\n     \"ratio_paired\": "
          << JsonStats(PairedRatio(ours.slice_seconds, raw.slice_seconds))
          << ", \"ratio_of_medians\": "
          << Fixed(Summarize(ours.gbps).median / Summarize(raw.gbps).median, 4)
          << ",\n     \"memcpy\": " << JsonContender(g.contenders[g.memcpy_index]) << "}";
      first = false;
    }
  }
  out << "\n  ]\n}\n";
  if (!out) Die("error writing " + path);
}

// ---- driver --------------------------------------------------------------------

volatile uint64_t g_sink;  // checksums land here so they are not optimized away

// Reads `size` bytes: run between timed slices, it evicts what the previous
// contender left in the caches (and writes back its dirty lines), so that
// every contender starts from the same state whatever ran before it.
void ReadAll(const uint8_t* p, uint64_t size) {
  uint64_t acc = 0;
  for (uint64_t i = 0; i + 8 <= size; i += 64) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    acc += v;
  }
  g_sink = acc;
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  Machine mc = DescribeMachine(flags.thp);
  std::printf("ec_bench  %s\n", mc.date.c_str());
  std::printf("cpu       %s (%u logical cores; %s)\n", mc.cpu.c_str(), mc.cores,
              mc.cpu_flags.c_str());
  std::printf("memory    %s; %s\n", mc.memory.c_str(), mc.thp.c_str());
  std::printf("kernel    %s\n", mc.kernel.c_str());
  std::printf("isa-l     %s\n", mc.isal.c_str());
  std::printf("compiler  %s, %s\n", mc.compiler.c_str(), mc.build.c_str());
  std::printf("config    %" PRIu64 " bytes of data, %" PRIu64 "-byte chunks + %" PRIu64
              "-byte gaps, %d repeats, %" PRIu64 "-byte slices, %" PRIu64
              "-byte flushes, 1 thread\n\n",
              flags.total_bytes, flags.chunk_bytes, flags.chunk_gap, flags.repeats,
              flags.slice_bytes, flags.flush_bytes);
  std::fflush(stdout);

  // One set of buffers for every code: the data, the largest parity and
  // rebuilt areas any code needs, and the memcpy destination (also used as
  // scratch by Validate).
  const uint64_t chunk = flags.chunk_bytes;
  const uint64_t stride = chunk + flags.chunk_gap;
  uint64_t max_parity = 0;
  for (const Code& code : flags.codes) {
    max_parity = std::max(max_parity, flags.total_bytes / (chunk * code.k) * code.m * stride);
  }
  Buffer data(std::max(flags.total_bytes, flags.total_bytes / chunk * stride), flags.thp);
  Buffer parity(max_parity, flags.thp);
  Buffer rebuilt(max_parity, flags.thp);
  Buffer copy(std::max(flags.total_bytes, max_parity), flags.thp);
  FillRandom(data.data(), data.size(), 0x9E3779B97F4A7C15ULL);
  Buffer flush(std::max<uint64_t>(flags.flush_bytes, 64), flags.thp);

  std::vector<std::unique_ptr<CodeBench>> benches;
  std::vector<Group> groups;
  for (const Code& code : flags.codes) {
    auto b = std::make_unique<CodeBench>();
    b->k = code.k;
    b->m = code.m;
    b->chunk = chunk;
    b->stride = stride;
    b->stripes = flags.total_bytes / (chunk * code.k);
    b->data = data.data();
    b->parity = parity.data();
    b->rebuilt = rebuilt.data();
    auto codec = Codec::Create({.k = code.k, .m = code.m});
    CheckOk(codec.status(), "Codec::Create");
    b->codec = std::move(codec).value();
    b->coder = std::make_unique<StripeCoder>(*b->codec);
    std::vector<uint8_t> gen = RawGenerator(code.k, code.m);
    b->raw_encode_tables.resize(32 * static_cast<size_t>(code.k) * code.m);
    ec_init_tables(code.k, code.m, &gen[static_cast<size_t>(code.k) * code.k],
                   b->raw_encode_tables.data());
    std::vector<int> lost;
    for (int c = 0; c < code.m; ++c) lost.push_back(c);
    b->raw_decode_tables = RawDecodeTables(gen, code.k, code.m, lost);

    Group g;
    g.label = std::to_string(code.k) + "+" + std::to_string(code.m);
    g.k = code.k;
    g.m = code.m;
    g.units = b->stripes;
    g.code = b.get();
    g.bytes = b->stripes * code.k * chunk;
    CodeBench* p = b.get();
    uint8_t* dst = copy.data();
    const uint64_t stripe_bytes = code.k * chunk;
    g.contenders = {
        {"memcpy",
         [p, dst, stripe_bytes](uint64_t first, uint64_t end) {
           std::memcpy(dst + first * stripe_bytes, p->data + first * stripe_bytes,
                       (end - first) * stripe_bytes);
           Clobber(dst);
         }},
        {"Codec::Encode", [p](uint64_t first, uint64_t end) { p->OursEncode(first, end); }},
        {"ISA-L ec_encode_data", [p](uint64_t first, uint64_t end) { p->RawEncode(first, end); }},
        {"StripeCoder::Encode", [p](uint64_t first, uint64_t end) { p->StripeEncode(first, end); }},
        {"Codec::Decode", [p](uint64_t first, uint64_t end) { p->OursDecode(first, end); }},
        {"ISA-L decode", [p](uint64_t first, uint64_t end) { p->RawDecode(first, end); }},
        {"StripeCoder::VerifiedRebuild",
         [p](uint64_t first, uint64_t end) { p->VerifiedRebuild(first, end); }},
        {"ISA-L crc64 + decode + crc64",
         [p](uint64_t first, uint64_t end) { p->RawVerifiedRebuild(first, end); }},
    };
    g.memcpy_index = 0;
    const std::string lost_text = "decode, lost data " + holdfast::ec::MaskToString(b->lost());
    g.rows = {{"encode (Codec::Encode)", 1, 2},
              {"encode (StripeCoder::Encode)", 3, 2},
              {lost_text + " (Codec::Decode)", 4, 5},
              {lost_text + " + CRC-64 verify (VerifiedRebuild)", 6, 7}};
    groups.push_back(std::move(g));
    benches.push_back(std::move(b));
  }
  {
    Group g;
    g.label = "any";
    g.units = flags.total_bytes / chunk;
    g.bytes = g.units * chunk;
    uint8_t* src = data.data();
    uint8_t* dst = copy.data();
    g.contenders = {
        {"memcpy",
         [src, dst, chunk](uint64_t first, uint64_t end) {
           std::memcpy(dst + first * chunk, src + first * chunk, (end - first) * chunk);
           Clobber(dst);
         }},
        {"Checksum",
         [src, chunk](uint64_t first, uint64_t end) {
           uint64_t acc = 0;
           for (uint64_t i = first; i < end; ++i) {
             acc ^= holdfast::ec::Checksum({src + i * chunk, chunk});
           }
           g_sink = acc;
         }},
        {"ISA-L crc64_ecma_refl",
         [src, chunk](uint64_t first, uint64_t end) {
           uint64_t acc = 0;
           for (uint64_t i = first; i < end; ++i) acc ^= crc64_ecma_refl(0, src + i * chunk, chunk);
           g_sink = acc;
         }},
    };
    g.rows = {{"checksum, CRC-64 per chunk (Checksum)", 1, 2}};
    groups.push_back(std::move(g));
  }

  // Codes run one after another (they share the parity and rebuilt buffers).
  // Within a code, a repeat is one pass of every contender over all units,
  // made of slices of about --slice-bytes: every contender does slice 1, then
  // every contender does slice 2, and so on, so that ours and raw run tens of
  // milliseconds apart and a burst of noise on this shared machine hits them
  // alike. An untimed flush precedes every timed slice, so no contender
  // inherits another's cached bytes or pays for its dirty lines.
  for (Group& g : groups) {
    const auto group_start = Clock::now();
    if (g.code != nullptr) Validate(*g.code, copy.data());
    // Warm-up, untimed, in forward order (Validate left this code's parity in
    // place for the decoders).
    for (Contender& c : g.contenders) c.run(0, g.units);
    const uint64_t unit_bytes = g.bytes / g.units;
    const uint64_t slice_units = std::max<uint64_t>(1, flags.slice_bytes / unit_bytes);
    const size_t n = g.contenders.size();
    for (int r = 0; r < flags.repeats; ++r) {
      std::vector<double> seconds(n, 0.0);
      for (uint64_t first = 0, round = 0; first < g.units; first += slice_units, ++round) {
        const uint64_t end = std::min(g.units, first + slice_units);
        // Alternate the order so that no contender always runs first.
        const bool reverse = (r + round) % 2 == 1;
        for (size_t i = 0; i < n; ++i) {
          const size_t ci = reverse ? n - 1 - i : i;
          Contender& c = g.contenders[ci];
          ReadAll(flush.data(), flags.flush_bytes);
          const auto start = Clock::now();
          c.run(first, end);
          const double t = std::chrono::duration<double>(Clock::now() - start).count();
          c.slice_seconds.push_back(t);
          seconds[ci] += t;
        }
      }
      for (size_t i = 0; i < n; ++i) {
        g.contenders[i].gbps.push_back(static_cast<double>(g.bytes) / seconds[i] / 1e9);
      }
    }
    // The timed passes rewrote the outputs; they must still be right.
    if (g.code != nullptr && !g.code->RebuiltMatches()) {
      Die(g.label + ": rebuilt chunks differ from the data after timing");
    }
    std::fprintf(stderr, "%s: validated, %d repeats in %.1f s\n", g.label.c_str(), flags.repeats,
                 std::chrono::duration<double>(Clock::now() - group_start).count());
  }

  mc.load_after = LoadAverage();
  std::printf("\nload average (1, 5, 15 min): %s before, %s after\n\n", mc.load_before.c_str(),
              mc.load_after.c_str());
  PrintTable(groups);
  if (!flags.json_path.empty()) {
    WriteJson(flags.json_path, flags, mc, groups);
    std::printf("wrote %s\n", flags.json_path.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
