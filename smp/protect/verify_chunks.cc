// `holdfast verify` on a cluster member: re-reading the chunks this node
// holds of a protected version and comparing them with the group manifest
// (the n x n chunk CRC-64s recorded at protection, member_roles.cc), and
// gathering every member's report for the admin service. See docs/cli.md.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "holdfast/ec/checksum.h"
#include "holdfast/proto/status_map.h"
#include "protect/cluster_node.h"
#include "protect/data_path.h"
#include "server/verify.h"

namespace holdfast::smp {

using proto::FromGrpc;
using proto::ToGrpc;
using protect_internal::BufferPart;
using protect_internal::DataBuffer;

namespace {

// A peer's check of a large version reads its whole share; bounded so that a
// hung peer (SIGSTOP, network cut) is reported, not waited for.
constexpr std::chrono::seconds kPeerVerifyTimeout{60};

// Read in windows so that a chunk spanning two rank segments is checked
// without gathering it whole.
constexpr uint64_t kVerifyWindow = 1 << 20;

}  // namespace

Result<v1::NodeVerifyReport> ClusterNode::VerifyMine(const std::string& job_id, int64_t step,
                                                     const std::atomic<bool>& cancel) {
  v1::NodeVerifyReport report;
  report.set_node_id(me_.id);
  report.set_reached(true);
  std::optional<v1::ProtectionRecord> record;
  std::shared_ptr<Segment> parity;  // keeps the mapping if a Conclude frees it meanwhile
  {
    std::lock_guard lock(mu_);
    auto it = protections_.find({job_id, step});
    if (it != protections_.end()) {
      record = it->second.record;
      parity = it->second.parity;
    }
  }
  // Copies only: no lock is held while bytes are read below.
  auto pinned = OnLoop([&] { return manager_->PinVersion(job_id, step); });
  if (!pinned.ok() && !record) {
    return Status::NotFound(fmt::format("job {} step {} is not held by {}", job_id, step, me_.id));
  }
  auto unpin = [&] {
    if (pinned.ok()) OnLoop([&] { manager_->UnpinVersion(job_id, step); return 0; });
  };
  if (pinned.ok() && !CheckItems(me_.id, job_id, step, *pinned, &report, cancel)) {
    unpin();
    return Status::Cancelled("verification cancelled");
  }
  if (!record) {
    unpin();
    return report;
  }
  auto problem = [&](v1::VerifyProblem::Kind kind, std::string detail) {
    v1::VerifyProblem* p = report.add_problems();
    p->set_node_id(me_.id);
    p->set_job_id(job_id);
    p->set_step(step);
    p->set_kind(kind);
    p->set_detail(std::move(detail));
    return p;
  };
  const int k = record->k();
  const int n = k + record->m();
  const int me = record->position();
  std::vector<uint64_t> sizes;
  for (const auto& mem : record->members()) sizes.push_back(mem.data_bytes());
  auto layout = ec::GroupLayout::Create({.k = k, .m = record->m(), .alignment = record->alignment()},
                                        sizes);
  if (!layout.ok() || record->chunk_crcs_size() != n * n || me < 0 || me >= n) {
    unpin();
    problem(v1::VerifyProblem::KIND_MISSING, "the group manifest is malformed");
    return report;
  }
  DataBuffer data;
  bool have_data = false;
  if (sizes[me] > 0) {
    if (pinned.ok() && pinned->bytes == sizes[me]) {
      std::vector<BufferPart> parts;
      for (const auto& p : pinned->parts) parts.push_back({const_cast<uint8_t*>(p.data), p.bytes});
      data = DataBuffer(std::move(parts));
      have_data = true;
    } else {
      problem(v1::VerifyProblem::KIND_MISSING,
              pinned.ok() ? fmt::format("its data is {} bytes here, the manifest says {}",
                                        pinned->bytes, sizes[me])
                          : "its data pieces are not here: " + pinned.status().ToString());
    }
  }
  if (layout->parity_bytes(me) > 0 && (!parity || parity->bytes() < layout->parity_bytes(me))) {
    problem(v1::VerifyProblem::KIND_MISSING, "its parity segment is missing or short");
    parity.reset();
  }
  if (parity) report.set_parity_segment(parity->name());
  std::vector<uint8_t> bounce;
  for (int r = 0; r < n; ++r) {
    const int c = layout->ChunkOf(r, me);
    const ec::Extent e = layout->ChunkExtent(r, c);
    const bool is_parity = c >= k;
    if (e.length == 0 || (is_parity ? !parity : !have_data)) continue;
    uint64_t crc = 0;
    for (uint64_t off = 0; off < e.length; off += kVerifyWindow) {
      if (cancel) {
        unpin();
        return Status::Cancelled("verification cancelled");
      }
      const uint64_t len = std::min(kVerifyWindow, e.length - off);
      const uint8_t* p = is_parity ? parity->data() + e.offset + off
                                   : data.Gather(e.offset + off, len, &bounce);
      crc = ec::Checksum({p, len}, crc);
    }
    report.set_chunks_checked(report.chunks_checked() + 1);
    report.set_bytes_checked(report.bytes_checked() + e.length);
    const uint64_t want = record->chunk_crcs(r * n + c);
    if (crc == want) continue;
    v1::VerifyProblem* p = problem(
        is_parity ? v1::VerifyProblem::KIND_PARITY_CHUNK : v1::VerifyProblem::KIND_DATA_CHUNK,
        is_parity
            ? fmt::format("stripe {} parity chunk {} ({} bytes at offset {} of parity segment {}): "
                          "CRC-64 {:016x}, manifest {:016x}",
                          r, c - k, e.length, e.offset, parity->name(), crc, want)
            : fmt::format("stripe {} data chunk {} ({} bytes at offset {} of the node's data): "
                          "CRC-64 {:016x}, manifest {:016x}",
                          r, c, e.length, e.offset, crc, want));
    p->set_stripe(r);
    p->set_chunk(c);
    p->set_expected_crc(want);
    p->set_actual_crc(crc);
  }
  unpin();
  return report;
}

grpc::Status ClusterNode::VerifyChunks(grpc::ServerContext* ctx,
                                       const v1::VerifyChunksRequest* req,
                                       v1::NodeVerifyReport* resp) {
  if (Status s = CheckCaller(ctx, req->from_node()); !s.ok()) return Refuse(s);
  // This handler's thread does the reading (gRPC's, not the loop); a caller
  // that gives up cancels it.
  std::atomic<bool> cancel{false};
  std::atomic<bool> done{false};
  std::thread watch([&] {
    while (!done) {
      if (ctx->IsCancelled() || stop_) cancel = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  auto result = VerifyMine(req->job_id(), req->step(), cancel);
  done = true;
  watch.join();
  if (!result.ok()) return ToGrpc(result.status());
  *resp = std::move(result).value();
  return grpc::Status::OK;
}

Result<v1::VerifyResponse> ClusterNode::Verify(const v1::VerifyRequest& req,
                                               const std::atomic<bool>& cancel) {
  const auto t0 = std::chrono::steady_clock::now();
  auto summaries = OnLoop([&] { return manager_->Summaries(""); });
  std::vector<std::string> jobs;
  std::vector<VerifyKey> available;
  for (const auto& s : summaries) {
    jobs.push_back(s.job_id);
    for (const auto& c : s.complete) available.emplace_back(s.job_id, c.step);
  }
  std::set<Key> protected_keys;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, p] : protections_) {
      protected_keys.insert(key);
      available.push_back(key);
      jobs.push_back(key.first);
    }
  }
  HOLDFAST_ASSIGN_OR_RETURN(std::vector<VerifyKey> keys, SelectVersions(req, jobs, available));
  v1::VerifyResponse resp;
  for (const VerifyKey& key : keys) {
    const std::string& job = key.first;  // captured below: no structured binding
    const int64_t step = key.second;
    v1::VersionVerifyReport* version = resp.add_versions();
    version->set_job_id(job);
    version->set_step(step);
    const bool is_protected = protected_keys.count({job, step}) > 0;
    version->set_protected_(is_protected);
    // The other members first, in parallel, while this node reads its own.
    std::vector<std::pair<int, std::future<v1::NodeVerifyReport>>> remote;
    std::vector<std::unique_ptr<grpc::ClientContext>> contexts;  // cancelled with `cancel`
    if (is_protected) {
      for (int p = 0; p < static_cast<int>(members_.size()); ++p) {
        if (p == position()) continue;
        contexts.push_back(Context(kPeerVerifyTimeout));
        grpc::ClientContext* ctx = contexts.back().get();
        remote.emplace_back(p, std::async(std::launch::async, [this, p, ctx, &job, step] {
          Peer& peer = PeerAt(p);
          v1::VerifyChunksRequest rq;
          rq.set_from_node(me_.id);
          rq.set_job_id(job);
          rq.set_step(step);
          v1::NodeVerifyReport report;
          TrackCall(ctx, true);
          Status s = FromGrpc(StubOf(peer)->VerifyChunks(ctx, rq, &report));
          TrackCall(ctx, false);
          if (s.code() == StatusCode::kNotFound) {
            report.Clear();
            report.set_node_id(peer.id);
            report.set_reached(true);
            v1::VerifyProblem* pr = report.add_problems();
            pr->set_node_id(peer.id);
            pr->set_job_id(job);
            pr->set_step(step);
            pr->set_kind(v1::VerifyProblem::KIND_MISSING);
            pr->set_detail("the member holds nothing of the version: " + s.message());
          } else if (!s.ok()) {
            report.Clear();
            report.set_node_id(peer.id);
            report.set_reached(false);
            report.set_error(s.ToString());
          }
          return report;
        }));
      }
    }
    auto mine = VerifyMine(job, step, cancel);
    for (auto& [p, f] : remote) {
      while (f.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
        if (!cancel) continue;
        for (auto& ctx : contexts) ctx->TryCancel();
      }
    }
    std::map<int, v1::NodeVerifyReport> by_position;
    if (mine.ok()) {
      by_position[position()] = std::move(mine).value();
    } else if (mine.status().code() == StatusCode::kCancelled) {
      for (auto& [p, f] : remote) f.wait();
      return mine.status();
    } else {
      // Dropped or retired since it was listed.
      v1::NodeVerifyReport& r = by_position[position()];
      r.set_node_id(me_.id);
      r.set_reached(false);
      r.set_error(mine.status().ToString());
    }
    for (auto& [p, f] : remote) by_position[p] = f.get();
    for (auto& [p, r] : by_position) *version->add_nodes() = std::move(r);
    if (cancel) return Status::Cancelled("verification cancelled");
  }
  resp.set_micros(std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count());
  return resp;
}

}  // namespace holdfast::smp
