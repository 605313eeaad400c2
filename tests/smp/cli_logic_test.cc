// The holdfast CLI's pure logic: health verdicts from status and version
// lists built here, formats, tables, progress and ETA.
#include "cli/cli_logic.h"

#include <gtest/gtest.h>

namespace holdfast::cli {
namespace {

// A 2+1 group seen from n0, every member up, job "train" protected at `protected_step`.
v1::GetStatusResponse ClusterStatus(int64_t protected_step) {
  v1::GetStatusResponse st;
  st.set_node_id("n0");
  st.set_memory_budget_bytes(1000);
  st.set_memory_used_bytes(100);
  auto* c = st.mutable_cluster();
  c->set_cluster_id("c");
  c->set_k(2);
  c->set_m(1);
  for (const char* id : {"n0", "n1", "n2"}) {
    auto* mem = c->add_members();
    mem->set_node_id(id);
    mem->set_up(true);
  }
  c->mutable_rebuild()->set_state(v1::RebuildStatus::REBUILD_STATE_IDLE);
  auto* jp = c->add_jobs();
  jp->set_job_id("train");
  jp->set_newest_protected_step(protected_step);
  jp->set_restore_point(protected_step);
  return st;
}

v1::ListVersionsResponse Versions(std::initializer_list<int64_t> steps, int64_t protected_step) {
  v1::ListVersionsResponse list;
  for (int64_t s : steps) {
    auto* v = list.add_versions();
    v->set_job_id("train");
    v->set_step(s);
    v->set_state(s <= protected_step ? v1::VERSION_STATE_PROTECTED : v1::VERSION_STATE_COMPLETE);
  }
  return list;
}

TEST(CliHealth, AllUpAndProtectedIsOk) {
  const Health h = AssessHealth(ClusterStatus(5), Versions({5, 6}, 5));
  EXPECT_EQ(h.level, HealthLevel::kOk) << h.Line();
  EXPECT_EQ(h.Line(), "HEALTH_OK");
}

TEST(CliHealth, OneMemberDownWithinMIsWarn) {
  auto st = ClusterStatus(5);
  st.mutable_cluster()->mutable_members(1)->set_up(false);
  const Health h = AssessHealth(st, Versions({5}, 5));
  EXPECT_EQ(h.level, HealthLevel::kWarn);
  ASSERT_EQ(h.reasons.size(), 1u);
  EXPECT_NE(h.reasons[0].find("1 of 3 members down (n1)"), std::string::npos) << h.reasons[0];
  EXPECT_NE(h.reasons[0].find("still protected"), std::string::npos) << h.reasons[0];
}

TEST(CliHealth, MoreThanMDownIsErr) {
  auto st = ClusterStatus(5);
  st.mutable_cluster()->mutable_members(1)->set_up(false);
  st.mutable_cluster()->mutable_members(2)->set_up(false);
  const Health h = AssessHealth(st, Versions({5}, 5));
  EXPECT_EQ(h.level, HealthLevel::kErr);
  EXPECT_NE(h.Line().find("2 of 3 members down (n1, n2), more than m = 1"), std::string::npos)
      << h.Line();
}

TEST(CliHealth, RebuildInProgressIsWarn) {
  auto st = ClusterStatus(5);
  st.mutable_cluster()->mutable_members(2)->set_rebuilding(true);
  const Health h = AssessHealth(st, Versions({5}, 5));
  EXPECT_EQ(h.level, HealthLevel::kWarn);
  EXPECT_EQ(h.reasons, std::vector<std::string>{"rebuild in progress on n2"});
  // This node rebuilding (its own state) counts the same.
  auto self = ClusterStatus(5);
  self.mutable_cluster()->mutable_rebuild()->set_state(v1::RebuildStatus::REBUILD_STATE_RUNNING);
  EXPECT_EQ(AssessHealth(self, Versions({5}, 5)).reasons,
            std::vector<std::string>{"rebuild in progress on n0"});
}

TEST(CliHealth, ProtectionBehindIsWarnButOneUnprotectedVersionIsNormal) {
  EXPECT_EQ(AssessHealth(ClusterStatus(5), Versions({5, 6}, 5)).level, HealthLevel::kOk);
  const Health h = AssessHealth(ClusterStatus(5), Versions({5, 6, 7}, 5));
  EXPECT_EQ(h.level, HealthLevel::kWarn);
  EXPECT_NE(h.Line().find("job train: protection behind (newest protected step 5, 2 newer"),
            std::string::npos)
      << h.Line();
  const Health none = AssessHealth(ClusterStatus(-1), Versions({1, 2}, -1));
  EXPECT_NE(none.Line().find("job train: no protected version yet (newest committed step 2)"),
            std::string::npos)
      << none.Line();
}

TEST(CliHealth, DataLossAndDamageAreErr) {
  auto st = ClusterStatus(5);
  st.mutable_cluster()->set_last_error("DATA_LOSS: job train step 5 group 0 cannot be rebuilt");
  EXPECT_EQ(AssessHealth(st, Versions({5}, 5)).level, HealthLevel::kErr);

  auto lost = ClusterStatus(5);
  lost.mutable_cluster()->mutable_rebuild()->set_state(v1::RebuildStatus::REBUILD_STATE_DATA_LOSS);
  lost.mutable_cluster()->mutable_rebuild()->add_unrecoverable("job train step 5: only 1 member");
  const Health h = AssessHealth(lost, Versions({}, 5));
  EXPECT_EQ(h.level, HealthLevel::kErr);
  EXPECT_EQ(h.reasons[0], "cannot rebuild job train step 5: only 1 member");

  auto damaged = ClusterStatus(5);
  damaged.set_damaged_versions(2);
  EXPECT_EQ(AssessHealth(damaged, Versions({5}, 5)).level, HealthLevel::kErr);
}

TEST(CliHealth, ScrubRepairsAreOkButUnrepairableDamageIsErr) {
  auto st = ClusterStatus(5);
  v1::ScrubStatus* scrub = st.mutable_scrub();
  scrub->set_enabled(true);
  scrub->set_errors_found(2);
  scrub->set_repaired(2);
  EXPECT_EQ(AssessHealth(st, Versions({5}, 5)).level, HealthLevel::kOk);
  scrub->set_errors_found(3);
  scrub->set_unrepairable(1);
  scrub->set_last_error("DATA_LOSS: job train step 5 stripe 0 data chunk 0");
  const Health h = AssessHealth(st, Versions({5}, 5));
  EXPECT_EQ(h.level, HealthLevel::kErr);
  ASSERT_FALSE(h.reasons.empty());
  EXPECT_NE(h.reasons[0].find("could not repair"), std::string::npos) << h.reasons[0];
  EXPECT_NE(h.reasons[0].find("stripe 0"), std::string::npos) << h.reasons[0];
}

TEST(CliScrub, Line) {
  v1::ScrubStatus s;
  EXPECT_EQ(ScrubLine(s, 0), "off");
  s.set_enabled(true);
  s.set_interval_seconds(3600);
  s.set_rate_bytes_per_second(64 << 20);
  EXPECT_EQ(ScrubLine(s, 0),
            "first pass due 1h00m after start-up; 0 errors found, 0 repaired, 0 unrepairable; "
            "rate 64.0 MiB/s");
  s.set_pass(3);
  s.set_running(true);
  s.set_bytes_done(1 << 20);
  s.set_bytes_total(4 << 20);
  s.set_last_pass_finished_unix_micros(1'000'000);
  s.set_last_pass_bytes(4 << 20);
  s.set_last_pass_micros(2'000'000);
  s.set_repaired(1);
  s.set_errors_found(1);
  EXPECT_EQ(ScrubLine(s, 11'000'000),
            "pass 3 running, 1.0 MiB of 4.0 MiB; last pass 4.0 MiB in 2.0s (10s ago); 1 errors "
            "found, 1 repaired, 0 unrepairable; rate 64.0 MiB/s");
}

TEST(CliHealth, ErrorsComeBeforeWarnings) {
  auto st = ClusterStatus(5);
  st.mutable_cluster()->mutable_members(1)->set_up(false);  // warn
  st.set_damaged_versions(1);                               // err
  const Health h = AssessHealth(st, Versions({5}, 5));
  ASSERT_EQ(h.reasons.size(), 2u);
  EXPECT_NE(h.reasons[0].find("damaged"), std::string::npos);
  EXPECT_NE(h.reasons[1].find("down"), std::string::npos);
}

TEST(CliHealth, MemoryAboveNinetyPercentIsWarnAlsoWithoutCluster) {
  v1::GetStatusResponse st;
  st.set_memory_budget_bytes(1000);
  st.set_memory_used_bytes(901);
  const Health h = AssessHealth(st, {});
  EXPECT_EQ(h.level, HealthLevel::kWarn);
  st.set_memory_used_bytes(900);
  EXPECT_EQ(AssessHealth(st, {}).level, HealthLevel::kOk);
}

TEST(CliHealth, MemberStates) {
  v1::PeerStatus p;
  EXPECT_EQ(MemberState(p), "down");
  p.set_up(true);
  EXPECT_EQ(MemberState(p), "up");
  p.set_rebuilding(true);
  EXPECT_EQ(MemberState(p), "rebuilding");
}

TEST(CliFormat, Bytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.0 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(uint64_t{3} << 30), "3.0 GiB");
  EXPECT_EQ(FormatRate(0), "- B/s");
  EXPECT_EQ(FormatRate(2.5 * (1 << 20)), "2.5 MiB/s");
}

TEST(CliFormat, Durations) {
  EXPECT_EQ(FormatDuration(0.42), "0.4s");
  EXPECT_EQ(FormatDuration(12.4), "12s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(7260), "2h01m");
  EXPECT_EQ(FormatDuration(-3), "0.0s");
}

TEST(CliFormat, TableAlignsColumnsWithoutTrailingBlanks) {
  Table t({"JOB", "STEP", "STATE"});
  t.Add({"train", "12", "protected"});
  t.Add({"x", "7"});  // short row: empty last cell
  EXPECT_EQ(t.Render(),
            "JOB    STEP  STATE\n"
            "train  12    protected\n"
            "x      7\n");
}

TEST(CliProgress, FractionRateAndEta) {
  ProgressFigures f = ComputeProgress(25, 100, 5.0);
  EXPECT_DOUBLE_EQ(f.fraction, 0.25);
  EXPECT_DOUBLE_EQ(f.bytes_per_second, 5.0);
  ASSERT_TRUE(f.eta_seconds.has_value());
  EXPECT_DOUBLE_EQ(*f.eta_seconds, 15.0);
  // Nothing moved yet: no rate, no ETA.
  f = ComputeProgress(0, 100, 3.0);
  EXPECT_FALSE(f.eta_seconds.has_value());
  EXPECT_EQ(f.bytes_per_second, 0);
  // Done (or more than the total reported): ETA 0, fraction capped.
  f = ComputeProgress(120, 100, 2.0);
  EXPECT_DOUBLE_EQ(f.fraction, 1.0);
  EXPECT_DOUBLE_EQ(*f.eta_seconds, 0.0);
  // Nothing to do at all.
  f = ComputeProgress(0, 0, 0.0);
  EXPECT_DOUBLE_EQ(f.fraction, 1.0);
}

TEST(CliProgress, BarAndLine) {
  EXPECT_EQ(ProgressBar(0, 4), "[....]");
  EXPECT_EQ(ProgressBar(0.5, 4), "[##..]");
  EXPECT_EQ(ProgressBar(1.0, 4), "[####]");
  EXPECT_EQ(ProgressBar(2.0, 4), "[####]");
  EXPECT_EQ(ProgressLine(uint64_t{1} << 20, uint64_t{4} << 20, 2.0, 4),
            "[#...]  25%  1.0 MiB / 4.0 MiB  512.0 KiB/s  ETA 6.0s");
}

}  // namespace
}  // namespace holdfast::cli
