// The scrub thread: pass scheduling, pacing, local-only versions and the
// counters GetStatus reports. The chunk checks and repairs of protected
// versions are ClusterNode's (scrub_repair.cc). See scrub.h.
#include "protect/scrub.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "holdfast/ec/checksum.h"
#include "protect/cluster_node.h"
#include "server/verify.h"

namespace holdfast::smp {

using Clock = std::chrono::steady_clock;

namespace {

// Bytes read between two Pace() calls: small enough for a smooth rate and
// a prompt Stop, large enough that CRC-64 runs at memory speed.
constexpr uint64_t kScrubWindow = 1 << 20;

// The scrub never competes with training or protection for a core.
constexpr int kScrubNice = 10;

int64_t UnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Scrubber::Scrubber(ScrubOptions options, SnapshotManager* manager, EventLoop* loop,
                   ClusterNode* cluster)
    : options_(std::move(options)), manager_(manager), loop_(loop), cluster_(cluster) {
  status_.set_enabled(options_.enabled);
  status_.set_rate_bytes_per_second(options_.rate_bytes_per_second);
  status_.set_interval_seconds(static_cast<uint64_t>(options_.interval.count()));
}

Scrubber::~Scrubber() { Stop(); }

void Scrubber::Start() {
  if (!options_.enabled || thread_.joinable()) return;
  thread_ = std::thread([this] { Run(); });
}

void Scrubber::Stop() {
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scrubber::FillStatus(v1::ScrubStatus* out) const {
  std::lock_guard lock(mu_);
  *out = status_;
}

void Scrubber::Run() {
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  errno = 0;
  const int old = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (errno == 0) setpriority(PRIO_PROCESS, static_cast<id_t>(tid), std::min(19, old + kScrubNice));
  auto next = Clock::now() + options_.interval;
  while (true) {
    {
      std::unique_lock lock(stop_mu_);
      if (stop_cv_.wait_until(lock, next, [&] { return stop_.load(); })) return;
    }
    const auto started = Clock::now();
    RunPass();
    if (stop_) return;
    // A pass longer than the interval starts the next one at once.
    next = std::max(started + options_.interval, Clock::now());
  }
}

void Scrubber::Pace(uint64_t bytes) {
  {
    std::lock_guard lock(mu_);
    status_.set_bytes_done(status_.bytes_done() + bytes);
    status_.set_bytes_scrubbed(status_.bytes_scrubbed() + bytes);
  }
  const auto now = Clock::now();
  // No credit for idle time, and each read is paid for before the next
  // one: B bytes take at least B / rate, also within one pass.
  if (pace_next_ < now) pace_next_ = now;
  pace_next_ += std::chrono::nanoseconds(bytes * 1'000'000'000ull /
                                         std::max<uint64_t>(1, options_.rate_bytes_per_second));
  const auto when = pace_next_;
  std::unique_lock lock(stop_mu_);
  stop_cv_.wait_until(lock, when, [&] { return stop_.load(); });
}

void Scrubber::RunPass() {
  // What this node holds now; versions that go meanwhile are skipped.
  auto summaries = RunOnLoop(loop_, [&] { return manager_->Summaries(""); });
  std::map<std::pair<std::string, int64_t>, uint64_t> local;  // -> bytes
  for (const auto& s : summaries) {
    for (const auto& c : s.complete) local[{s.job_id, c.step}] = c.bytes;
  }
  std::map<std::pair<std::string, int64_t>, uint64_t> protected_here;
  if (cluster_ != nullptr) {
    for (auto& [key, bytes] : cluster_->ScrubTargets()) protected_here[key] = bytes;
  }
  std::set<std::pair<std::string, int64_t>> keys;
  uint64_t total = 0;
  for (const auto& [key, bytes] : local) {
    keys.insert(key);
    if (!protected_here.count(key)) total += bytes;
  }
  for (const auto& [key, bytes] : protected_here) {
    keys.insert(key);
    total += bytes;
  }
  const auto t0 = Clock::now();
  uint64_t pass = 0;
  {
    std::lock_guard lock(mu_);
    pass = status_.pass() + 1;
    status_.set_pass(pass);
    status_.set_running(true);
    status_.set_bytes_done(0);
    status_.set_bytes_total(total);
    status_.set_pass_started_unix_micros(UnixMicros());
  }
  spdlog::info("scrub pass {}: {} versions, {:.1f} MiB at {:.1f} MiB/s", pass, keys.size(),
               total / double(1 << 20), options_.rate_bytes_per_second / double(1 << 20));
  ScrubHooks hooks{.pace = [this](uint64_t b) { Pace(b); }, .cancel = &stop_};
  for (const auto& key : keys) {
    if (stop_) break;
    ScrubTally tally;
    bool done = false;
    if (protected_here.count(key)) {
      auto r = cluster_->ScrubProtected(key.first, key.second, hooks);
      if (r.ok()) {
        tally = std::move(r).value();
        done = true;
      } else if (r.status().code() != StatusCode::kNotFound) {
        spdlog::warn("scrub of job {} step {}: {}", key.first, key.second, r.status().ToString());
        continue;
      }
      // NOT_FOUND: its protection was freed meanwhile; the local copy is
      // checked below if it is still here.
    }
    if (!done) {
      if (!local.count(key)) continue;
      tally = ScrubLocal(key.first, key.second);
    }
    Record(tally);
  }
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
  std::lock_guard lock(mu_);
  status_.set_running(false);
  if (stop_) return;  // an interrupted pass is not a finished one
  status_.set_bytes_total(status_.bytes_done());  // what the pass did read
  status_.set_last_pass_finished_unix_micros(UnixMicros());
  status_.set_last_pass_bytes(status_.bytes_done());
  status_.set_last_pass_micros(static_cast<uint64_t>(micros));
  spdlog::info("scrub pass {} done: {:.1f} MiB in {:.2f} s ({:.1f} MiB/s); {} errors found, {} "
               "repaired, {} unrepairable so far",
               pass, status_.bytes_done() / double(1 << 20), micros / 1e6,
               micros > 0 ? status_.bytes_done() / double(1 << 20) / (micros / 1e6) : 0.0,
               status_.errors_found(), status_.repaired(), status_.unrepairable());
}

ScrubTally Scrubber::ScrubLocal(const std::string& job_id, int64_t step) {
  ScrubTally tally;
  auto pinned = RunOnLoop(loop_, [&] { return manager_->PinVersion(job_id, step); });
  if (!pinned.ok()) return tally;  // dropped or retired meanwhile
  std::vector<std::string> bad;
  for (size_t i = 0; i < pinned->parts.size() && i < pinned->manifests.size() && !stop_; ++i) {
    const PinnedVersion::Part& part = pinned->parts[i];
    const v1::RankManifestRecord& manifest = pinned->manifests[i];
    for (const v1::Item& item : manifest.items()) {
      if (stop_) break;
      const uint64_t len = item.spec().nbytes();
      if (item.offset() > part.bytes || len > part.bytes - item.offset()) {
        bad.push_back(fmt::format("rank {} item {} lies outside its segment", manifest.rank(),
                                  item.spec().name()));
        continue;
      }
      uint64_t crc = 0;
      for (uint64_t off = 0; off < len && !stop_; off += kScrubWindow) {
        const uint64_t n = std::min(kScrubWindow, len - off);
        Pace(n);
        crc = ec::Checksum({part.data + item.offset() + off, n}, crc);
        tally.bytes += n;
      }
      if (stop_) break;
      if (crc != item.checksum()) {
        bad.push_back(fmt::format("rank {} item {}: CRC-64 {:016x}, committed {:016x}",
                                  manifest.rank(), item.spec().name(), crc, item.checksum()));
      }
    }
  }
  RunOnLoop(loop_, [&] {
    manager_->UnpinVersion(job_id, step);
    return 0;
  });
  if (bad.empty()) return tally;
  // Not protected here: nothing to repair it from.
  tally.errors += bad.size();
  tally.unrepairable += bad.size();
  std::string why = fmt::format("{} item(s) damaged and no group protects the version: {}",
                                bad.size(), bad.front());
  tally.losses.push_back(fmt::format("DATA_LOSS: job {} step {}: {}", job_id, step, why));
  Status s = RunOnLoop(loop_, [&] { return manager_->MarkDamaged(job_id, step, "scrub: " + why); });
  tally.version_damaged = s.ok();
  return tally;
}

void Scrubber::Record(const ScrubTally& tally) {
  for (const auto& line : tally.repairs) spdlog::warn("scrub repaired {}", line);
  for (const auto& line : tally.losses) spdlog::error("scrub: {}", line);
  std::lock_guard lock(mu_);
  status_.set_versions_checked(status_.versions_checked() + 1);
  status_.set_errors_found(status_.errors_found() + tally.errors);
  status_.set_repaired(status_.repaired() + tally.repaired);
  status_.set_parity_checks(status_.parity_checks() + tally.parity_checks);
  status_.set_parity_mismatches(status_.parity_mismatches() + tally.parity_mismatches);
  status_.set_unrepairable(status_.unrepairable() + tally.unrepairable);
  if (tally.version_damaged) status_.set_versions_damaged(status_.versions_damaged() + 1);
  if (!tally.repairs.empty()) status_.set_last_repair(tally.repairs.back());
  if (!tally.losses.empty()) status_.set_last_error(tally.losses.back());
}

}  // namespace holdfast::smp
