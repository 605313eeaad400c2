#include "cli/cli_logic.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace holdfast::cli {

std::string Health::Verdict() const {
  switch (level) {
    case HealthLevel::kOk:
      return "HEALTH_OK";
    case HealthLevel::kWarn:
      return "HEALTH_WARN";
    case HealthLevel::kErr:
      return "HEALTH_ERR";
  }
  return "HEALTH_ERR";
}

std::string Health::Line() const {
  std::string out = Verdict();
  for (size_t i = 0; i < reasons.size(); ++i) out += (i == 0 ? ": " : "; ") + reasons[i];
  return out;
}

std::string MemberState(const v1::PeerStatus& member) {
  if (!member.up()) return "down";
  return member.rebuilding() ? "rebuilding" : "up";
}

Health AssessHealth(const v1::GetStatusResponse& status, const v1::ListVersionsResponse& versions) {
  std::vector<std::string> errs;
  std::vector<std::string> warns;
  if (status.damaged_versions() > 0) {
    errs.push_back(fmt::format("{} damaged version(s) found and discarded since the daemon started",
                               status.damaged_versions()));
  }
  if (status.has_scrub() && status.scrub().unrepairable() > 0) {
    // Repairs are not reasons: the data is whole again (ScrubLine shows them).
    errs.push_back(fmt::format("scrub found {} damaged chunk(s) or item(s) it could not repair; last: "
                               "{}",
                               status.scrub().unrepairable(), status.scrub().last_error()));
  }
  if (status.has_cluster()) {
    const v1::ClusterStatus& c = status.cluster();
    std::vector<std::string> down;
    std::vector<std::string> rebuilding;
    for (const auto& mem : c.members()) {
      if (!mem.up()) down.push_back(mem.node_id());
      else if (mem.rebuilding()) rebuilding.push_back(mem.node_id());
    }
    const int n = c.members_size();
    if (!down.empty()) {
      const std::string who = fmt::format("{}", fmt::join(down, ", "));
      if (static_cast<int>(down.size()) > c.m()) {
        errs.push_back(fmt::format("{} of {} members down ({}), more than m = {}: the group's "
                                   "versions cannot be rebuilt until members return",
                                   down.size(), n, who, c.m()));
      } else {
        warns.push_back(fmt::format("{} of {} members down ({}); data still protected (up to m = "
                                    "{} may be lost)",
                                    down.size(), n, who, c.m()));
      }
    }
    const v1::RebuildStatus& rb = c.rebuild();
    for (const auto& why : rb.unrecoverable()) errs.push_back("cannot rebuild " + why);
    if (rb.state() == v1::RebuildStatus::REBUILD_STATE_DATA_LOSS && rb.unrecoverable_size() == 0) {
      errs.push_back("a protected version cannot be rebuilt here");
    }
    if (c.last_error().rfind("DATA_LOSS", 0) == 0 && rb.unrecoverable_size() == 0) {
      errs.push_back("last error: " + c.last_error());
    }
    if (rb.state() == v1::RebuildStatus::REBUILD_STATE_RUNNING && rebuilding.empty()) {
      rebuilding.push_back(status.node_id());
    }
    if (!rebuilding.empty()) {
      warns.push_back(fmt::format("rebuild in progress on {}", fmt::join(rebuilding, ", ")));
    }
    if (rb.state() == v1::RebuildStatus::REBUILD_STATE_RETRYING) {
      warns.push_back("rebuild retrying after: " + rb.last_failure());
    }
    // Protection behind: complete versions newer than the newest protected
    // one, more than one of them (one is normal: it is being protected).
    std::map<std::string, int64_t> protected_step;
    for (const auto& jp : c.jobs()) protected_step[jp.job_id()] = jp.newest_protected_step();
    std::map<std::string, std::pair<int, int64_t>> newer;  // job -> (count, newest)
    for (const auto& v : versions.versions()) {
      if (v.state() == v1::VERSION_STATE_PARTIAL) continue;
      auto it = protected_step.find(v.job_id());
      const int64_t p = it == protected_step.end() ? -1 : it->second;
      auto& [count, newest] = newer[v.job_id()];
      if (v.step() > p) {
        ++count;
        newest = std::max(newest, v.step());
      }
    }
    for (const auto& [job, cn] : newer) {
      const int64_t p = protected_step.count(job) ? protected_step[job] : -1;
      if (p < 0 && cn.first > 1) {
        warns.push_back(fmt::format("job {}: no protected version yet (newest committed step {})",
                                    job, cn.second));
      } else if (p >= 0 && cn.first > 1) {
        warns.push_back(fmt::format("job {}: protection behind (newest protected step {}, {} newer "
                                    "committed versions up to step {})",
                                    job, p, cn.first, cn.second));
      }
    }
  }
  if (status.memory_budget_bytes() > 0 &&
      status.memory_used_bytes() * 10 > status.memory_budget_bytes() * 9) {
    warns.push_back(fmt::format("memory {} of {} used (above 90%)",
                                FormatBytes(status.memory_used_bytes()),
                                FormatBytes(status.memory_budget_bytes())));
  }
  Health h;
  if (!errs.empty()) {
    h.level = HealthLevel::kErr;
  } else if (!warns.empty()) {
    h.level = HealthLevel::kWarn;
  }
  h.reasons = std::move(errs);
  h.reasons.insert(h.reasons.end(), warns.begin(), warns.end());
  return h;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", v, kUnits[unit]);
}

std::string FormatRate(double bytes_per_second) {
  if (!(bytes_per_second > 0)) return "- B/s";
  return FormatBytes(static_cast<uint64_t>(std::llround(bytes_per_second))) + "/s";
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 10) return fmt::format("{:.1f}s", seconds);
  const uint64_t s = static_cast<uint64_t>(std::llround(seconds));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
}

std::string Table::Render() const {
  std::vector<size_t> widths(header_.size(), 0);
  for (size_t c = 0; c < header_.size(); ++c) widths[c] = header_[c].size();
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t c = 0; c < widths.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      out += cell;
      if (c + 1 < widths.size()) out += std::string(widths[c] - cell.size() + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header_);
  for (const auto& row : rows_) out += line(row);
  return out;
}

ProgressFigures ComputeProgress(uint64_t done, uint64_t total, double elapsed_seconds) {
  ProgressFigures f;
  if (total == 0) {
    f.fraction = 1;
    f.eta_seconds = 0;
    return f;
  }
  done = std::min(done, total);
  f.fraction = static_cast<double>(done) / static_cast<double>(total);
  if (done > 0 && elapsed_seconds > 0) {
    f.bytes_per_second = static_cast<double>(done) / elapsed_seconds;
    f.eta_seconds = static_cast<double>(total - done) / f.bytes_per_second;
  }
  if (done == total) f.eta_seconds = 0;
  return f;
}

std::string ProgressBar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(std::floor(fraction * width + 1e-9));
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

std::string ProgressLine(uint64_t done, uint64_t total, double elapsed_seconds, int bar_width) {
  const ProgressFigures f = ComputeProgress(done, total, elapsed_seconds);
  return fmt::format("{} {:3.0f}%  {} / {}  {}  ETA {}", ProgressBar(f.fraction, bar_width),
                     f.fraction * 100, FormatBytes(std::min(done, total)), FormatBytes(total),
                     FormatRate(f.bytes_per_second),
                     f.eta_seconds ? FormatDuration(*f.eta_seconds) : std::string("?"));
}

std::string ScrubLine(const v1::ScrubStatus& scrub, int64_t now_unix_micros) {
  if (!scrub.enabled()) return "off";
  std::string out;
  if (scrub.running()) {
    out = fmt::format("pass {} running, {} of {}", scrub.pass(), FormatBytes(scrub.bytes_done()),
                      FormatBytes(scrub.bytes_total()));
  } else if (scrub.pass() == 0) {
    out = fmt::format("first pass due {} after start-up", FormatDuration(scrub.interval_seconds()));
  } else {
    out = fmt::format("pass {} done", scrub.pass());
  }
  if (scrub.last_pass_finished_unix_micros() > 0) {
    out += fmt::format(
        "; last pass {} in {} ({} ago)", FormatBytes(scrub.last_pass_bytes()),
        FormatDuration(scrub.last_pass_micros() / 1e6),
        FormatDuration(std::max<int64_t>(0, now_unix_micros - scrub.last_pass_finished_unix_micros()) /
                       1e6));
  }
  out += fmt::format("; {} errors found, {} repaired, {} unrepairable; rate {}", scrub.errors_found(),
                     scrub.repaired(), scrub.unrepairable(),
                     FormatRate(static_cast<double>(scrub.rate_bytes_per_second())));
  return out;
}

}  // namespace holdfast::cli
