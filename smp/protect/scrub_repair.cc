// The cluster side of the background scrub (scrub.h): this node's chunks of
// a protected version checked against the group manifest, and a bad chunk
// rebuilt from k good chunks of its stripe and rewritten in place. The read
// path is the rebuild's (ReadChunks: the holders send their chunks over UCX
// to announced tags); the decode is Codec::Decode, as in rebuild.cc, for one
// stripe at a time.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>
#include <set>

#include "core/failpoint.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/proto/status_map.h"
#include "protect/cluster_node.h"
#include "protect/data_path.h"
#include "server/verify.h"

namespace holdfast::smp {

using proto::FromGrpc;
using protect_internal::BufferPart;
using protect_internal::DataBuffer;
using protect_internal::OpTracker;
using protect_internal::ScopedEndpoints;
using protect_internal::Windows;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kScrubWindow = 1 << 20;

uint64_t ChunkCrc(const DataBuffer& data, const uint8_t* parity, const ec::Extent& e,
                  const ScrubHooks* hooks) {
  std::vector<uint8_t> bounce;
  uint64_t crc = 0;
  for (uint64_t off = 0; off < e.length; off += kScrubWindow) {
    const uint64_t len = std::min(kScrubWindow, e.length - off);
    if (hooks != nullptr) {
      if (*hooks->cancel) return 0;
      hooks->pace(len);
    }
    const uint8_t* p = e.buffer == ec::Extent::Buffer::kParity
                           ? parity + e.offset + off
                           : data.Gather(e.offset + off, len, &bounce);
    crc = ec::Checksum({p, len}, crc);
  }
  return crc;
}

std::string ChunkName(int stripe, int chunk, int k) {
  return chunk < k ? fmt::format("stripe {} data chunk {}", stripe, chunk)
                   : fmt::format("stripe {} parity chunk {}", stripe, chunk - k);
}

}  // namespace

std::vector<std::pair<std::pair<std::string, int64_t>, uint64_t>> ClusterNode::ScrubTargets()
    const {
  std::vector<std::pair<std::pair<std::string, int64_t>, uint64_t>> out;
  std::lock_guard lock(mu_);
  for (const auto& [key, p] : protections_) {
    const v1::ProtectionRecord& r = p.record;
    const int n = r.k() + r.m();
    std::vector<uint64_t> sizes;
    for (const auto& mem : r.members()) sizes.push_back(mem.data_bytes());
    auto layout = ec::GroupLayout::Create({.k = r.k(), .m = r.m(), .alignment = r.alignment()},
                                          sizes);
    uint64_t bytes = 0;
    if (layout.ok() && r.position() >= 0 && r.position() < n) {
      for (int s = 0; s < n; ++s) bytes += layout->ChunkExtent(s, layout->ChunkOf(s, r.position())).length;
    }
    out.emplace_back(key, bytes);
  }
  return out;
}

Result<ScrubTally> ClusterNode::ScrubProtected(const std::string& job_id, int64_t step,
                                               const ScrubHooks& hooks) {
  v1::ProtectionRecord record;
  std::shared_ptr<Segment> parity;  // keeps the mapping if a Conclude frees it meanwhile
  {
    std::lock_guard lock(mu_);
    auto it = protections_.find({job_id, step});
    if (it == protections_.end()) {
      return Status::NotFound(fmt::format("job {} step {} is not protected here", job_id, step));
    }
    record = it->second.record;
    parity = it->second.parity;
  }
  const int k = record.k();
  const int n = k + record.m();
  const int me = record.position();
  std::vector<uint64_t> sizes;
  for (const auto& mem : record.members()) sizes.push_back(mem.data_bytes());
  HOLDFAST_ASSIGN_OR_RETURN(
      ec::GroupLayout layout,
      ec::GroupLayout::Create({.k = k, .m = record.m(), .alignment = record.alignment()}, sizes));
  if (record.chunk_crcs_size() != n * n || me < 0 || me >= n || me != position()) {
    return Status::DataLoss("the group manifest is malformed");
  }
  ScrubTally tally;
  DataBuffer data;
  bool pinned = false;
  if (sizes[me] > 0) {
    auto pin = OnLoop([&] { return manager_->PinVersion(job_id, step); });
    if (!pin.ok() || pin->bytes != sizes[me]) {
      if (pin.ok()) OnLoop([&] { manager_->UnpinVersion(job_id, step); return 0; });
      // Its data is gone here (retired as damaged, or never recovered):
      // nothing of it is served from this node; only its parity is checked.
    } else {
      pinned = true;
      std::vector<BufferPart> parts;
      for (const auto& p : pin->parts) parts.push_back({const_cast<uint8_t*>(p.data), p.bytes});
      data = DataBuffer(std::move(parts));
    }
  }
  auto unpin = [&] {
    if (pinned) OnLoop([&] { manager_->UnpinVersion(job_id, step); return 0; });
    pinned = false;
  };
  if (parity && parity->bytes() < layout.parity_bytes(me)) parity.reset();
  bool data_repaired = false;
  bool data_lost = false;
  for (int r = 0; r < n && !*hooks.cancel; ++r) {
    const int c = layout.ChunkOf(r, me);
    const ec::Extent e = layout.ChunkExtent(r, c);
    const bool is_parity = c >= k;
    if (e.length == 0 || (is_parity ? !parity : !pinned)) continue;
    const uint8_t* parity_base = parity ? parity->data() : nullptr;
    const uint64_t crc = ChunkCrc(data, parity_base, e, &hooks);
    if (*hooks.cancel) break;
    tally.bytes += e.length;
    const uint64_t want = record.chunk_crcs(r * n + c);
    if (crc == want) continue;
    ++tally.errors;
    const std::string what = fmt::format("job {} step {} {} on {} ({} bytes)", job_id, step,
                                         ChunkName(r, c, k), me_.id, e.length);
    spdlog::error("scrub: {} is CORRUPTED: CRC-64 {:016x}, manifest {:016x}; repairing it from the "
                  "group",
                  what, crc, want);
    std::string how;
    Status s = RepairChunk(record, layout, r, data, parity ? parity->data() : nullptr,
                           *hooks.cancel, &how);
    if (s.ok()) {
      ++tally.repaired;
      tally.repairs.push_back(what + " " + how);
      data_repaired = data_repaired || !is_parity;
    } else if (s.code() == StatusCode::kCancelled) {
      break;
    } else {
      ++tally.unrepairable;
      tally.losses.push_back(fmt::format("DATA_LOSS: {}: cannot be repaired: {}", what, s.message()));
      data_lost = data_lost || !is_parity;
    }
  }
  if (pinned && data_repaired && !data_lost) {
    // The repaired bytes match the manifest; the items must match their
    // commit checksums too, or the version is not served.
    v1::NodeVerifyReport report;
    auto again = OnLoop([&] { return manager_->PinVersion(job_id, step); });
    if (again.ok()) {
      const bool finished = CheckItems(me_.id, job_id, step, *again, &report, *hooks.cancel);
      OnLoop([&] { manager_->UnpinVersion(job_id, step); return 0; });
      if (finished && report.problems_size() > 0) {
        data_lost = true;
        ++tally.unrepairable;
        tally.losses.push_back(fmt::format("DATA_LOSS: job {} step {} on {}: repaired chunks match "
                                           "the manifest but {}",
                                           job_id, step, me_.id, report.problems(0).detail()));
      }
    }
  }
  unpin();
  if (data_lost) {
    Status s = OnLoop([&] {
      return manager_->MarkDamaged(job_id, step, "scrub: a data chunk could not be repaired");
    });
    tally.version_damaged = s.ok();
  }
  return tally;
}

Status ClusterNode::RepairChunk(const v1::ProtectionRecord& record, const ec::GroupLayout& layout,
                                int stripe, const DataBuffer& data, uint8_t* parity,
                                const std::atomic<bool>& cancel, std::string* how) {
  const int k = record.k();
  const int n = k + record.m();
  const int me = position();
  const int target = layout.ChunkOf(stripe, me);
  const uint64_t length = layout.chunk_length(stripe);
  const uint64_t window = std::max<uint64_t>(options_.config.window_bytes, 4096);
  std::vector<uint64_t> real(n);
  for (int c = 0; c < n; ++c) real[c] = layout.ChunkExtent(stripe, c).length;
  std::unique_ptr<ec::Codec> codec;
  if (!record.replicate()) {
    HOLDFAST_ASSIGN_OR_RETURN(codec, ec::Codec::Create({.k = k, .m = record.m()}));
  }
  ec::ChunkMask bad = 0;
  ec::NodeMask unreachable = 0;
  std::string bad_list;
  for (int attempt = 0; attempt <= n; ++attempt) {
    if (cancel) return Status::Cancelled("the scrub is stopping");
    ec::ChunkMask available = 0;
    for (int c = 0; c < n; ++c) {
      const int holder = layout.NodeOf(stripe, c);
      if (c == target || holder == me || (bad & (ec::ChunkMask{1} << c)) ||
          (unreachable & (ec::NodeMask{1} << holder))) {
        continue;
      }
      available |= ec::ChunkMask{1} << c;
    }
    // The k lowest chunks (data first), as the rebuild reads.
    ec::ChunkMask read = 0;
    for (int c = 0; c < n && std::popcount(read) < k; ++c) {
      if (available & (ec::ChunkMask{1} << c)) read |= ec::ChunkMask{1} << c;
    }
    if (std::popcount(read) < k) {
      std::string gone;
      for (int p = 0; p < n; ++p) {
        if (unreachable & (ec::NodeMask{1} << p)) gone += (gone.empty() ? "" : ", ") + PeerAt(p).id;
      }
      return Status::DataLoss(fmt::format(
          "stripe {} has fewer than k = {} good chunks besides this one (corrupted: {}; "
          "unreachable: {})",
          stripe, k, bad_list.empty() ? "none" : bad_list, gone.empty() ? "none" : gone));
    }
    // Receive whole chunks (zero-padded to the stripe's length): one stripe
    // at a time, k x chunk bytes of memory.
    std::vector<std::vector<uint8_t>> in(n);
    const uint32_t transfer = std::random_device{}() | 1u;
    std::map<int, v1::ReadChunksRequest> requests;  // by holder
    OpTracker ops(transport_);
    std::vector<uint64_t> tags;
    for (int c = 0; c < n; ++c) {
      if (!(read & (ec::ChunkMask{1} << c))) continue;
      in[c].assign(length, 0);
      if (real[c] == 0) continue;  // virtual zeros: nothing stored, nothing sent
      auto* ref = requests[layout.NodeOf(stripe, c)].add_chunks();
      ref->set_stripe(stripe);
      ref->set_chunk(c);
      for (uint64_t w = 0; w < Windows(real[c], window); ++w) {
        const uint64_t len = std::min(window, real[c] - w * window);
        tags.push_back(WindowTag(transfer, stripe, c, w));
        ops.Recv(tags.back(), in[c].data() + w * window, len, tags.size() - 1);
      }
    }
    std::vector<std::pair<int, std::future<Status>>> senders;
    for (auto& [holder, rq] : requests) {
      rq.set_from_node(me_.id);
      rq.set_job_id(record.job_id());
      rq.set_step(record.step());
      rq.set_transfer_id(transfer);
      rq.set_window_bytes(window);
      rq.set_deadline_ms(static_cast<uint32_t>(options_.round_timeout.count()));
      senders.emplace_back(holder, std::async(std::launch::async, [this, h = holder, &rq] {
        v1::ReadChunksResponse resp;
        auto ctx = Context(options_.round_timeout + options_.rpc_timeout);
        TrackCall(ctx.get(), true);
        Status st = FromGrpc(StubOf(PeerAt(h))->ReadChunks(ctx.get(), rq, &resp))
                        .WithContext("reading from " + PeerAt(h).id);
        TrackCall(ctx.get(), false);
        return st;
      }));
    }
    std::vector<bool> arrived(tags.size(), false);
    size_t remaining = tags.size();
    Status failure;
    std::set<int> failed;
    const auto deadline = Clock::now() + options_.round_timeout;
    while (failure.ok() && remaining > 0) {
      for (auto& [holder, f] : senders) {
        if (f.valid() && f.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
          if (Status st = f.get(); !st.ok()) {
            failure = st;
            failed.insert(holder);
          }
        }
      }
      if (!failure.ok()) break;
      if (cancel || stop_) {
        failure = Status::Cancelled("the scrub is stopping");
        break;
      }
      auto ev = ops.Next(std::min(deadline, Clock::now() + std::chrono::milliseconds(200)));
      if (!ev) {
        if (Clock::now() >= deadline) failure = Status::DeadlineExceeded("repair read timed out");
        continue;
      }
      if (!ev->status.ok()) {
        failure = ev->status;
        break;
      }
      if (!arrived[ev->cookie]) {
        arrived[ev->cookie] = true;
        --remaining;
      }
    }
    {
      std::vector<uint64_t> missing;
      if (!failure.ok()) {
        for (size_t i = 0; i < tags.size(); ++i) {
          if (!arrived[i]) missing.push_back(tags[i]);
        }
      }
      ScopedEndpoints none(transport_, endpoint_pool_.get());
      protect_internal::DrainFailedTransfer(transport_, ops, none, missing, window,
                                            std::chrono::milliseconds(2000));
    }
    for (auto& [holder, f] : senders) {
      if (!f.valid()) continue;
      if (Status st = f.get(); !st.ok()) failed.insert(holder);
    }
    if (failure.code() == StatusCode::kCancelled) return failure;
    if (!failure.ok()) {
      if (failed.empty()) return Status::Unavailable(failure.ToString());
      for (int h : failed) unreachable |= ec::NodeMask{1} << h;
      spdlog::warn("scrub repair of job {} step {} stripe {}: {}; trying other members",
                   record.job_id(), record.step(), stripe, failure.ToString());
      continue;
    }
    // Inputs against the manifest: a bad one is excluded and the stripe
    // read again without it.
    bool inputs_ok = true;
    for (int c = 0; c < n; ++c) {
      if (!(read & (ec::ChunkMask{1} << c))) continue;
      if (ec::Checksum({in[c].data(), real[c]}) == record.chunk_crcs(stripe * n + c)) continue;
      const std::string name =
          fmt::format("{} on {}", ChunkName(stripe, c, k), PeerAt(layout.NodeOf(stripe, c)).id);
      spdlog::error("scrub repair of job {} step {}: {} is CORRUPTED too", record.job_id(),
                    record.step(), name);
      bad_list += (bad_list.empty() ? "" : ", ") + name;
      bad |= ec::ChunkMask{1} << c;
      inputs_ok = false;
    }
    if (!inputs_ok) continue;
    std::vector<uint8_t> out(length, 0);
    if (record.replicate()) {
      std::memcpy(out.data(), in[std::countr_zero(read)].data(), length);
    } else {
      std::vector<uint8_t*> chunks(n, nullptr);
      for (int c = 0; c < n; ++c) {
        if (read & (ec::ChunkMask{1} << c)) chunks[c] = in[c].data();
      }
      chunks[target] = out.data();
      HOLDFAST_RETURN_IF_ERROR(codec->Decode(chunks, read, ec::ChunkMask{1} << target, length));
    }
    const uint64_t want = record.chunk_crcs(stripe * n + target);
    if (ec::Checksum({out.data(), real[target]}) != want) {
      return Status::DataLoss(fmt::format("stripe {}: the decoded chunk does not match the manifest",
                                          stripe));
    }
    // In place, in two halves: a crash between them (failpoint) leaves a
    // chunk that is still bad and found again after the restart.
    const ec::Extent e = layout.ChunkExtent(stripe, target);
    const uint64_t half = real[target] / 2;
    auto write = [&](uint64_t off, uint64_t len) {
      if (e.buffer == ec::Extent::Buffer::kParity) {
        std::memcpy(parity + e.offset + off, out.data() + off, len);
      } else {
        data.Scatter(e.offset + off, out.data() + off, len);
      }
    };
    write(0, half);
    HOLDFAST_FAILPOINT("scrub.repair.mid_write");
    write(half, real[target] - half);
    if (ChunkCrc(data, parity, e, nullptr) != want) {
      return Status::Internal(fmt::format("stripe {}: the rewritten chunk reads back differently",
                                          stripe));
    }
    std::string sources;
    for (int c = 0; c < n; ++c) {
      if (!(read & (ec::ChunkMask{1} << c))) continue;
      sources += fmt::format("{}{} ({})", sources.empty() ? "" : ", ",
                             ChunkName(stripe, c, k).substr(fmt::format("stripe {} ", stripe).size()),
                             PeerAt(layout.NodeOf(stripe, c)).id);
    }
    *how = "from " + sources;
    return Status::Ok();
  }
  return Status::DataLoss(fmt::format("stripe {}: no good set of chunks after every retry", stripe));
}

}  // namespace holdfast::smp
