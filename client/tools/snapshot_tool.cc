// holdfast_snapshot_tool: drives a holdfastd like a trainer rank would, with
// deterministic contents, for tests and benchmarks.
//
//   save     --steps A:B   save steps A..B (each item's bytes derive from
//                          seed, step, rank and item index), print a line
//                          per committed step: "committed <step> ..." with
//                          save_s, the trainer-visible time of Save();
//                          --pause-ms sleeps between steps, --period-ms
//                          starts one step every period (a fixed cadence)
//   verify   [--step S]    restore the newest (or given) step and check every
//                          byte against what `save` wrote; prints
//                          "verified <step>" or fails with exit code 3
//   latest                 print the newest complete step, or "none"
//
// Exit codes: 0 ok, 1 daemon error, 2 usage, 3 verification failed.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "holdfast/client/client.h"

namespace {

using holdfast::client::Client;

uint64_t SplitMix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

void Fill(uint8_t* p, uint64_t n, uint64_t seed, int64_t step, int rank, int item) {
  uint64_t x = seed * 1000003 + static_cast<uint64_t>(step) * 7919 +
               static_cast<uint64_t>(rank) * 104729 + static_cast<uint64_t>(item);
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = SplitMix(x);
    std::memcpy(p + i, &v, 8);
  }
  if (i < n) {
    const uint64_t v = SplitMix(x);
    std::memcpy(p + i, &v, n - i);
  }
}

std::string ItemName(int i) { return fmt::format("layer{:04d}.weight", i); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Save and verify deterministic holdfast snapshots."};
  app.require_subcommand(1);
  holdfast::client::Options options;
  options.job_id = "job";
  std::string socket = "/run/holdfast/holdfastd.sock";
  int items = 4;
  uint64_t item_bytes = 1 << 20;
  uint64_t seed = 1;
  app.add_option("--socket", socket, "holdfastd socket path")->capture_default_str();
  app.add_option("--job", options.job_id, "job id")->capture_default_str();
  app.add_option("--rank", options.rank, "rank")->capture_default_str();
  app.add_option("--world-size", options.world_size, "world size")->capture_default_str();
  app.add_option("--local-ranks", options.local_ranks, "local ranks (default: --rank)");
  app.add_option("--items", items, "items per snapshot")->capture_default_str();
  app.add_option("--item-bytes", item_bytes, "bytes per item")->capture_default_str();
  app.add_option("--seed", seed, "content seed")->capture_default_str();

  auto* save = app.add_subcommand("save", "save steps");
  std::string steps = "0:0";
  int pause_ms = 0;
  int period_ms = 0;
  save->add_option("--steps", steps, "first:last step")->capture_default_str();
  save->add_option("--pause-ms", pause_ms, "sleep between steps")->capture_default_str();
  save->add_option("--period-ms", period_ms, "start a step every period (0: back to back)")
      ->capture_default_str();
  auto* verify = app.add_subcommand("verify", "restore and check");
  int64_t step = -1;
  verify->add_option("--step", step, "step (default: newest)");
  auto* latest = app.add_subcommand("latest", "print the newest complete step");
  CLI11_PARSE(app, argc, argv);

  options.endpoint = "unix:" + socket;
  auto client_or = Client::Connect(options);
  if (!client_or.ok()) {
    fmt::print(stderr, "connect: {}\n", client_or.status().ToString());
    return 1;
  }
  Client& client = **client_or;

  if (*save) {
    const auto colon = steps.find(':');
    const int64_t first = std::stoll(steps.substr(0, colon));
    const int64_t last = colon == std::string::npos ? first : std::stoll(steps.substr(colon + 1));
    std::vector<std::vector<uint8_t>> buffers(items, std::vector<uint8_t>(item_bytes));
    std::vector<holdfast::client::ItemView> views(items);
    auto next_start = std::chrono::steady_clock::now();
    for (int64_t s = first; s <= last; ++s) {
      if (period_ms > 0) {
        std::this_thread::sleep_until(next_start);
        next_start += std::chrono::milliseconds(period_ms);
      }
      for (int i = 0; i < items; ++i) {
        Fill(buffers[i].data(), item_bytes, seed, s, options.rank, i);
        views[i] = {ItemName(i), holdfast::client::DType::kUInt8,
                    {static_cast<int64_t>(item_bytes)}, buffers[i].data(), item_bytes};
      }
      const auto save_start = std::chrono::steady_clock::now();
      auto stats = client.Save(s, views);
      const std::chrono::duration<double> save_s = std::chrono::steady_clock::now() - save_start;
      if (!stats.ok()) {
        fmt::print(stderr, "save step {}: {}\n", s, stats.status().ToString());
        return 1;
      }
      fmt::print("committed {} copy_s={:.4f} commit_s={:.4f} save_s={:.6f} complete={}\n", s,
                 stats->copy_seconds, stats->commit_seconds, save_s.count(),
                 stats->version_complete);
      std::fflush(stdout);
      if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    }
    return 0;
  }
  if (*latest) {
    auto l = client.LatestStep();
    if (!l.ok()) {
      fmt::print(stderr, "latest: {}\n", l.status().ToString());
      return 1;
    }
    if (l->has_value()) {
      fmt::print("{}\n", **l);
    } else {
      fmt::print("none\n");
    }
    return 0;
  }
  if (*verify) {
    std::optional<int64_t> want;
    if (step >= 0) want = step;
    auto snap = client.RestoreAll(want);
    if (!snap.ok()) {
      fmt::print(stderr, "restore: {}\n", snap.status().ToString());
      return snap.status().code() == holdfast::StatusCode::kDataLoss ? 3 : 1;
    }
    std::vector<uint8_t> expect;
    for (size_t i = 0; i < snap->items.size(); ++i) {
      const auto& item = snap->items[i];
      if (item.info.name != ItemName(static_cast<int>(i))) {
        fmt::print(stderr, "item {} is named {}\n", i, item.info.name);
        return 3;
      }
      expect.resize(item.info.nbytes);
      Fill(expect.data(), item.info.nbytes, seed, snap->step, options.rank, static_cast<int>(i));
      if (std::memcmp(expect.data(), item.data.get(), item.info.nbytes) != 0) {
        fmt::print(stderr, "step {} item {} differs from what was saved\n", snap->step,
                   item.info.name);
        return 3;
      }
    }
    fmt::print("verified {} items={} bytes={}\n", snap->step, snap->items.size(),
               snap->stats.bytes);
    return 0;
  }
  return 2;
}
