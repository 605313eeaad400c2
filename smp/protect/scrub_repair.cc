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
      for (int s = 0; s < n; ++s) {
        const int c = layout->ChunkOf(s, r.position());
        bytes += layout->ChunkExtent(s, c).length;
        // The parity check reads the stripe's k data chunks from the group.
        if (c == r.k() && !r.replicate() && layout->ChunkExtent(s, c).length > 0) {
          bytes += static_cast<uint64_t>(r.k()) * layout->chunk_length(s);
        }
      }
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
  uint64_t checked_bad = 0;  // stripes whose chunk here was bad
  // Checks stripe r's chunk here against the manifest and repairs it from
  // the group when it differs. False when the scrub is being cancelled.
  auto check_chunk = [&](int r) {
    const int c = layout.ChunkOf(r, me);
    const ec::Extent e = layout.ChunkExtent(r, c);
    const bool is_parity = c >= k;
    if (e.length == 0 || (is_parity ? !parity : !pinned)) return true;
    const uint8_t* parity_base = parity ? parity->data() : nullptr;
    const uint64_t crc = ChunkCrc(data, parity_base, e, &hooks);
    if (*hooks.cancel) return false;
    tally.bytes += e.length;
    const uint64_t want = record.chunk_crcs(r * n + c);
    if (crc == want) return true;
    checked_bad |= uint64_t{1} << r;
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
      return false;
    } else {
      ++tally.unrepairable;
      tally.losses.push_back(fmt::format("DATA_LOSS: {}: cannot be repaired: {}", what, s.message()));
      data_lost = data_lost || !is_parity;
    }
    return true;
  };
  for (int r = 0; r < n && !*hooks.cancel; ++r) {
    if (!check_chunk(r)) break;
  }
  // Parity consistency: each stripe's first parity holder re-encodes it from
  // its k data chunks (read from the group, paced like local reads) and
  // compares with its parity chunk. Only stripes whose every chunk here
  // matched the manifest, and never in replication mode (copies are checked
  // by their CRCs).
  for (int r = 0; r < n && !*hooks.cancel && parity && !record.replicate(); ++r) {
    if (layout.ChunkOf(r, me) != k) continue;
    const uint64_t len = layout.chunk_length(r);
    if (layout.ChunkExtent(r, k).length == 0 || (checked_bad & (uint64_t{1} << r))) continue;
    hooks.pace(static_cast<uint64_t>(k) * len);
    HOLDFAST_FAILPOINT("scrub.before_parity_check");  // sleep: widens the race with damage
    std::string unused;
    Status s = RepairChunk(record, layout, r, data, parity->data(), *hooks.cancel, &unused,
                           /*check_only=*/true);
    if (s.ok()) {
      ++tally.parity_checks;
    } else if (s.code() == StatusCode::kAborted) {
      // The data encode to the recorded parity but the stored chunk differs:
      // it was damaged after its CRC was checked above. Checked again, it is
      // a corrupted chunk like any other, and repaired.
      spdlog::warn("scrub: job {} step {}: {}; checking it again", job_id, step, s.message());
      if (!check_chunk(r)) break;
    } else if (s.code() == StatusCode::kFailedPrecondition) {
      ++tally.parity_mismatches;
      ++tally.errors;
      ++tally.unrepairable;
      tally.losses.push_back(fmt::format("job {} step {} on {}: {}", job_id, step, me_.id,
                                         s.message()));
    } else if (s.code() != StatusCode::kCancelled) {
      // Peers down or their chunks bad: not a finding about this stripe's
      // parity; their own scrub reports their chunks.
      spdlog::info("scrub: parity check of job {} step {} stripe {} skipped: {}", job_id, step, r,
                   s.ToString());
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
                                const std::atomic<bool>& cancel, std::string* how,
                                bool check_only) {
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
    // The k lowest chunks (data first), as the rebuild reads; for a parity
    // check the k data chunks, which is re-encoding the stripe.
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
    // Windows of the k chunks stream in (at most `depth` windows ahead per
    // chunk, as the rebuild reads) and are decoded one window at a time:
    // memory is k x depth windows, plus the repaired chunk itself (written in
    // place only once it matched the manifest as a whole).
    const uint64_t windows = Windows(length, window);
    const uint64_t depth = static_cast<uint64_t>(std::max(2, options_.windows_in_flight / 2));
    std::vector<int> slot_of(n, -1);
    int slots = 0;
    for (int c = 0; c < n; ++c) {
      if (read & (ec::ChunkMask{1} << c)) slot_of[c] = slots++;
    }
    std::vector<uint8_t> staging(depth * static_cast<uint64_t>(k) * window);
    auto slot = [&](uint64_t w, int c) {
      return staging.data() + ((w % depth) * k + slot_of[c]) * window;
    };
    auto expected = [&](uint64_t w) {
      int count = 0;
      for (int c = 0; c < n; ++c) {
        if (slot_of[c] >= 0 && w * window < real[c]) ++count;
      }
      return count;
    };
    const uint32_t transfer = std::random_device{}() | 1u;
    std::map<int, v1::ReadChunksRequest> requests;  // by holder
    for (int c = 0; c < n; ++c) {
      if (slot_of[c] < 0 || real[c] == 0) continue;  // virtual zeros: nothing stored or sent
      auto* ref = requests[layout.NodeOf(stripe, c)].add_chunks();
      ref->set_stripe(stripe);
      ref->set_chunk(c);
    }
    OpTracker ops(transport_);
    std::vector<int> arrived(windows, 0);
    uint64_t next_post = 0, next_decode = 0;
    auto post = [&] {
      while (next_post < windows && next_post < next_decode + depth) {
        const uint64_t w = next_post++;
        for (int c = 0; c < n; ++c) {
          if (slot_of[c] < 0 || w * window >= real[c]) continue;
          ops.Recv(WindowTag(transfer, stripe, c, w), slot(w, c),
                   std::min(window, real[c] - w * window), w);
        }
      }
    };
    const ec::Extent e = layout.ChunkExtent(stripe, target);
    std::vector<uint8_t> out(check_only ? window : length);
    std::vector<uint8_t> bounce;
    std::vector<uint64_t> in_crc(n, 0);
    uint64_t out_crc = 0;
    bool differs = false;  // check_only: the stored chunk differs from the decoded one
    Status failure;
    auto decode_ready = [&] {
      while (failure.ok() && next_decode < windows && arrived[next_decode] == expected(next_decode)) {
        const uint64_t w = next_decode++;
        const uint64_t wlen = std::min(window, length - w * window);
        std::vector<uint8_t*> chunks(n, nullptr);
        for (int c = 0; c < n; ++c) {
          if (slot_of[c] < 0) continue;
          uint8_t* p = slot(w, c);
          const uint64_t have = real[c] > w * window ? std::min(wlen, real[c] - w * window) : 0;
          in_crc[c] = ec::Checksum({p, have}, in_crc[c]);
          std::memset(p + have, 0, wlen - have);
          chunks[c] = p;
        }
        uint8_t* dst = check_only ? out.data() : out.data() + w * window;
        if (record.replicate()) {
          std::memcpy(dst, chunks[std::countr_zero(read)], wlen);
        } else {
          chunks[target] = dst;
          if (Status st = codec->Decode(chunks, read, ec::ChunkMask{1} << target, wlen); !st.ok()) {
            failure = st;
            return;
          }
        }
        const uint64_t have =
            real[target] > w * window ? std::min(wlen, real[target] - w * window) : 0;
        out_crc = ec::Checksum({dst, have}, out_crc);
        if (check_only && have > 0) {
          const uint8_t* stored = e.buffer == ec::Extent::Buffer::kParity
                                      ? parity + e.offset + w * window
                                      : data.Gather(e.offset + w * window, have, &bounce);
          differs = differs || std::memcmp(stored, dst, have) != 0;
        }
      }
      post();
    };
    post();
    decode_ready();
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
    std::set<int> failed;
    const auto deadline = Clock::now() + options_.round_timeout;
    while (failure.ok() && next_decode < windows) {
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
      ++arrived[ev->cookie];
      decode_ready();
    }
    {
      // Windows not received: drained so that members still sending finish
      // cleanly (data_path.h).
      std::vector<uint64_t> missing;
      if (!failure.ok()) {
        for (int c = 0; c < n; ++c) {
          if (slot_of[c] < 0) continue;
          for (uint64_t w = next_decode; w < windows; ++w) {
            if (w * window < real[c]) missing.push_back(WindowTag(transfer, stripe, c, w));
          }
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
      if (slot_of[c] < 0 || in_crc[c] == record.chunk_crcs(stripe * n + c)) continue;
      const std::string name =
          fmt::format("{} on {}", ChunkName(stripe, c, k), PeerAt(layout.NodeOf(stripe, c)).id);
      spdlog::error("scrub repair of job {} step {}: {} is CORRUPTED too", record.job_id(),
                    record.step(), name);
      bad_list += (bad_list.empty() ? "" : ", ") + name;
      bad |= ec::ChunkMask{1} << c;
      inputs_ok = false;
    }
    if (!inputs_ok) continue;
    const uint64_t want = record.chunk_crcs(stripe * n + target);
    if (check_only) {
      // The inputs match the manifest; so must what they encode to, and the
      // stored chunk must equal it byte for byte.
      if (out_crc != want) {
        return Status::FailedPrecondition(fmt::format(
            "stripe {}: its data chunks encode to other parity than stored and recorded "
            "(parity and data are inconsistent)",
            stripe));
      }
      if (differs) {
        return Status::Aborted(fmt::format(
            "stripe {}: its data chunks encode to the recorded parity, but the stored chunk "
            "differs from it",
            stripe));
      }
      return Status::Ok();
    }
    if (out_crc != want) {
      return Status::DataLoss(fmt::format("stripe {}: the decoded chunk does not match the manifest",
                                          stripe));
    }
    // In place, in two halves: a crash between them (failpoint) leaves a
    // chunk that is still bad and found again after the restart.
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
