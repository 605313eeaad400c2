#include "server/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "holdfast/ec/checksum.h"

namespace holdfast::smp {

Result<std::vector<VerifyKey>> SelectVersions(const v1::VerifyRequest& req,
                                               const std::vector<std::string>& known_jobs,
                                               const std::vector<VerifyKey>& available) {
  if (!req.job_id().empty() &&
      std::find(known_jobs.begin(), known_jobs.end(), req.job_id()) == known_jobs.end()) {
    return Status::NotFound("job " + req.job_id() + " is not known on this node");
  }
  std::set<VerifyKey> out;
  for (const VerifyKey& key : available) {
    if (!req.job_id().empty() && key.first != req.job_id()) continue;
    if (req.has_step() && key.second != req.step()) continue;
    out.insert(key);
  }
  if (req.has_step() && out.empty()) {
    return Status::NotFound(fmt::format("{} has no version at step {} on this node",
                                        req.job_id().empty() ? "no job" : "job " + req.job_id(),
                                        req.step()));
  }
  return std::vector<VerifyKey>(out.begin(), out.end());
}

bool CheckItems(const std::string& node_id, const std::string& job_id, int64_t step,
                const PinnedVersion& version, v1::NodeVerifyReport* report,
                const std::atomic<bool>& cancel) {
  for (size_t i = 0; i < version.parts.size() && i < version.manifests.size(); ++i) {
    const PinnedVersion::Part& part = version.parts[i];
    const v1::RankManifestRecord& manifest = version.manifests[i];
    report->add_data_segments(manifest.segment_name());
    for (const v1::Item& item : manifest.items()) {
      if (cancel) return false;
      const uint64_t len = item.spec().nbytes();
      report->set_items_checked(report->items_checked() + 1);
      v1::VerifyProblem problem;
      problem.set_node_id(node_id);
      problem.set_job_id(job_id);
      problem.set_step(step);
      problem.set_kind(v1::VerifyProblem::KIND_ITEM);
      problem.set_rank(manifest.rank());
      problem.set_item(item.spec().name());
      problem.set_expected_crc(item.checksum());
      if (item.offset() > part.bytes || len > part.bytes - item.offset()) {
        problem.set_detail(fmt::format("rank {} item {} lies outside its segment", manifest.rank(),
                                       item.spec().name()));
        *report->add_problems() = std::move(problem);
        continue;
      }
      const uint64_t crc = ec::Checksum({part.data + item.offset(), len});
      report->set_bytes_checked(report->bytes_checked() + len);
      if (crc == item.checksum()) continue;
      problem.set_actual_crc(crc);
      problem.set_detail(fmt::format("rank {} item {} ({} bytes in segment {}): CRC-64 {:016x}, "
                                     "recorded at commit {:016x}",
                                     manifest.rank(), item.spec().name(), len,
                                     manifest.segment_name(), crc, item.checksum()));
      *report->add_problems() = std::move(problem);
    }
  }
  return true;
}

Status VerifyLocalItems(SnapshotManager* manager, EventLoop* loop, const std::string& node_id,
                        const std::string& job_id, int64_t step, v1::NodeVerifyReport* report,
                        const std::atomic<bool>& cancel) {
  auto pinned = RunOnLoop(loop, [&] { return manager->PinVersion(job_id, step); });
  if (!pinned.ok()) return pinned.status();
  const bool finished = CheckItems(node_id, job_id, step, *pinned, report, cancel);
  RunOnLoop(loop, [&] {
    manager->UnpinVersion(job_id, step);
    return 0;
  });
  if (!finished) return Status::Cancelled("verification cancelled");
  return Status::Ok();
}

Result<v1::VerifyResponse> VerifyStandalone(SnapshotManager* manager, EventLoop* loop,
                                            const std::string& node_id,
                                            const v1::VerifyRequest& req,
                                            const std::atomic<bool>& cancel) {
  const auto t0 = std::chrono::steady_clock::now();
  auto summaries = RunOnLoop(loop, [&] { return manager->Summaries(""); });
  std::vector<std::string> jobs;
  std::vector<VerifyKey> available;
  for (const auto& s : summaries) {
    jobs.push_back(s.job_id);
    for (const auto& c : s.complete) available.emplace_back(s.job_id, c.step);
  }
  HOLDFAST_ASSIGN_OR_RETURN(std::vector<VerifyKey> keys, SelectVersions(req, jobs, available));
  v1::VerifyResponse resp;
  for (const auto& [job, step] : keys) {
    auto* version = resp.add_versions();
    version->set_job_id(job);
    version->set_step(step);
    auto* node = version->add_nodes();
    node->set_node_id(node_id);
    node->set_reached(true);
    Status s = VerifyLocalItems(manager, loop, node_id, job, step, node, cancel);
    if (s.code() == StatusCode::kCancelled) return s;
    if (!s.ok()) {
      // Dropped or retired since it was listed: not a damage.
      node->set_reached(false);
      node->set_error(s.ToString());
    }
  }
  resp.set_micros(std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count());
  return resp;
}

VerifyRunner::~VerifyRunner() { Stop(); }

Status VerifyRunner::Start(v1::VerifyRequest req, Done done) {
  std::thread old;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return Status::Unavailable("the daemon is stopping");
    if (running_) return Status::Aborted("a verification is already running on this node");
    running_ = true;
    old = std::move(thread_);
  }
  if (old.joinable()) old.join();  // finished: running_ was false
  cancel_ = false;
  std::lock_guard lock(mu_);
  thread_ = std::thread([this, req = std::move(req), done = std::move(done)] {
    Result<v1::VerifyResponse> result = fn_(req, cancel_);
    if (result.ok() && cancel_) result = Status::Cancelled("verification cancelled");
    {
      std::lock_guard inner(mu_);
      running_ = false;
    }
    done(std::move(result));
  });
  return Status::Ok();
}

void VerifyRunner::Stop() {
  std::thread t;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    cancel_ = true;
    t = std::move(thread_);
  }
  if (t.joinable()) t.join();
}

}  // namespace holdfast::smp
