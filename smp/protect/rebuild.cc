// Rebuilding this node's chunks of protected versions from its group's
// survivors. See cluster_node.h and docs/cluster.md ("Rebuild after a node
// loss").
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

namespace holdfast::smp {

using proto::FromGrpc;
using protect_internal::BufferPart;
using protect_internal::DataBuffer;
using protect_internal::OpTracker;
using protect_internal::ScopedEndpoints;
using protect_internal::Windows;
using Clock = std::chrono::steady_clock;

namespace {

// Cookie: stripe (8 bits) | chunk (8) | window (48).
uint64_t RecvCookie(int stripe, int chunk, uint64_t w) {
  return (uint64_t(stripe) << 56) | (uint64_t(chunk) << 48) | w;
}

// The k lowest-numbered chunks of `available` (data chunks first), the
// chunks Codec::Decode reads; 0 when fewer than k.
ec::ChunkMask FirstK(ec::ChunkMask available, int k) {
  ec::ChunkMask out = 0;
  for (int c = 0; c < 64 && std::popcount(out) < k; ++c) {
    if (available & (ec::ChunkMask{1} << c)) out |= ec::ChunkMask{1} << c;
  }
  return std::popcount(out) == k ? out : 0;
}

// Checks every item of a rebuilt rank part against its recorded checksum.
int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status VerifyRankPart(const uint8_t* data, uint64_t bytes, const v1::RankManifestRecord& m) {
  for (const v1::Item& item : m.items()) {
    const uint64_t len = item.spec().nbytes();
    if (item.offset() > bytes || len > bytes - item.offset()) {
      return Status::DataLoss("item " + item.spec().name() + " lies outside its segment");
    }
    if (ec::Checksum({data + item.offset(), len}) != item.checksum()) {
      return Status::DataLoss("rank " + std::to_string(m.rank()) + " item " + item.spec().name() +
                              " does not match the checksum recorded at commit");
    }
  }
  return Status::Ok();
}

}  // namespace

// One pass over the stripes still to rebuild: every needed chunk streamed
// from its survivor window by window, decoded into this node's chunk.
class RebuildExecutor {
 public:
  struct Stripe {
    int stripe = 0;
    int target = 0;            // this node's chunk of the stripe
    ec::ChunkMask read = 0;    // the k chunks read
    ec::ChunkMask bad = 0;     // chunks found corrupted
    bool done = false;
    uint64_t length = 0;       // chunk length
    uint64_t windows = 0;
    uint64_t next_post = 0, next_decode = 0;
    std::vector<int> arrived;  // per window
    std::vector<uint64_t> real;          // per chunk: real bytes
    std::vector<uint64_t> in_crc;        // per chunk
    uint64_t out_crc = 0;
    std::vector<uint8_t> staging;        // depth x k windows
    std::vector<int> slot_of;            // chunk -> index among read
  };
};

Status ClusterNode::Rebuild(const v1::ProtectionRecord& manifest, ec::NodeMask holders) {
  const int k = manifest.k();
  const int m = manifest.m();
  const int n = k + m;
  const int me = position();
  const std::string& job_id = manifest.job_id();
  const int64_t step = manifest.step();
  if (manifest.members_size() != n || manifest.chunk_crcs_size() != n * n) {
    return Status::DataLoss("the group manifest of job " + job_id + " step " +
                            std::to_string(step) + " is malformed");
  }
  std::vector<uint64_t> sizes;
  for (const auto& mem : manifest.members()) sizes.push_back(mem.data_bytes());
  HOLDFAST_ASSIGN_OR_RETURN(
      ec::GroupLayout layout,
      ec::GroupLayout::Create({.k = k, .m = m, .alignment = manifest.alignment()}, sizes));
  std::unique_ptr<ec::Codec> codec;
  if (!manifest.replicate()) {
    HOLDFAST_ASSIGN_OR_RETURN(codec, ec::Codec::Create({.k = k, .m = m}));
  }
  const auto t0 = Clock::now();
  const uint64_t window = std::max<uint64_t>(options_.config.window_bytes, 4096);
  const int depth = std::max(2, options_.windows_in_flight / 2);

  // This node's data: kept when it is here and intact (a lost Conclude),
  // rebuilt into new segments otherwise.
  const v1::GroupMemberRecord& mine = manifest.members(me);
  bool have_local = false;
  DataBuffer data;
  std::vector<Segment> new_segments;
  if (sizes[me] > 0) {
    auto pin = OnLoop([&] { return manager_->PinVersion(job_id, step); });
    if (pin.ok() && pin->bytes == sizes[me]) {
      std::vector<BufferPart> parts;
      for (const auto& p : pin->parts) parts.push_back({const_cast<uint8_t*>(p.data), p.bytes});
      data = DataBuffer(std::move(parts));
      have_local = true;
      // Its pieces must match the manifest, or it is not the version.
      for (int r = 0; r < n && have_local; ++r) {
        const int c = layout.ChunkOf(r, me);
        if (c >= k) continue;
        const ec::Extent e = layout.ChunkExtent(r, c);
        std::vector<uint8_t> bounce;
        uint64_t crc = 0;
        for (uint64_t off = 0; off < e.length; off += window) {
          const uint64_t len = std::min(window, e.length - off);
          crc = ec::Checksum({data.Gather(e.offset + off, len, &bounce), len}, crc);
        }
        if (crc != manifest.chunk_crcs(r * n + c)) have_local = false;
      }
      if (!have_local) {
        spdlog::error("job {} step {}: the local copy does not match the group's manifest", job_id,
                      step);
        OnLoop([&] { manager_->UnpinVersion(job_id, step); return 0; });
      }
    } else if (pin.ok()) {
      OnLoop([&] { manager_->UnpinVersion(job_id, step); return 0; });
    }
  }
  Segment parity;
  auto release = [&](Status why) {
    for (Segment& s : new_segments) OnLoop([&] { manager_->FreeSegment(s); return 0; });
    new_segments.clear();
    if (parity.valid()) OnLoop([&] { manager_->FreeSegment(parity); return 0; });
    if (have_local) OnLoop([&] { manager_->UnpinVersion(job_id, step); return 0; });
    return why;
  };
  if (sizes[me] > 0 && !have_local) {
    std::vector<BufferPart> parts;
    for (const auto& rk : mine.ranks()) {
      auto seg = OnLoop([&] { return manager_->AllocateSegment(rk.segment_bytes()); });
      if (!seg.ok()) return release(seg.status());
      parts.push_back({seg->data(), seg->bytes()});
      new_segments.push_back(std::move(seg).value());
    }
    data = DataBuffer(std::move(parts));
    if (data.bytes() != sizes[me]) {
      return release(Status::DataLoss("the manifest's rank segments do not add up to its size"));
    }
  }
  if (layout.parity_bytes(me) > 0) {
    auto seg = OnLoop([&] { return manager_->AllocateSegment(layout.parity_bytes(me)); });
    if (!seg.ok()) return release(seg.status());
    parity = std::move(seg).value();
  }

  // The stripes to rebuild: every parity chunk here, and the data pieces
  // unless the local copy is kept.
  std::vector<RebuildExecutor::Stripe> stripes;
  for (int r = 0; r < n; ++r) {
    const int c = layout.ChunkOf(r, me);
    if (c < k && have_local) continue;
    RebuildExecutor::Stripe s;
    s.stripe = r;
    s.target = c;
    s.length = layout.chunk_length(r);
    for (int cc = 0; cc < n; ++cc) s.real.push_back(layout.ChunkExtent(r, cc).length);
    if (s.real[c] == 0) continue;  // an empty piece: nothing to rebuild
    stripes.push_back(std::move(s));
  }
  uint64_t bytes_moved = 0;
  {
    // Progress for GetStatus (holdfast recover): this node's chunk bytes.
    uint64_t total = 0;
    for (const auto& s : stripes) total += s.real[s.target];
    std::lock_guard lock(mu_);
    RebuildProgress& rp = rebuild_progress_;
    rp.job_id = job_id;
    rp.step = step;
    rp.bytes_total = total;
    rp.bytes_done = 0;
    rp.started_us = NowMicros();
    if (rp.first_started_us == 0) rp.first_started_us = rp.started_us;
  }
  ec::NodeMask alive = holders & ~(ec::NodeMask{1} << me);
  bool transient_losses = false;  // survivors dropped for failing, not for missing data
  for (int pass = 0; pass <= m + 1; ++pass) {
    std::vector<RebuildExecutor::Stripe*> todo;
    for (auto& s : stripes) {
      if (!s.done) todo.push_back(&s);
    }
    if (todo.empty()) break;
    {
      // A new pass redoes the stripes not done yet.
      uint64_t done_bytes = 0;
      for (const auto& s : stripes) done_bytes += s.done ? s.real[s.target] : 0;
      std::lock_guard lock(mu_);
      rebuild_progress_.bytes_done = done_bytes;
    }
    if (pass == m + 1) {
      return release(Status::DataLoss("job " + job_id + " step " + std::to_string(step) +
                                      ": stripes still unreadable after every retry"));
    }
    // Read sets.
    std::map<int, v1::ReadChunksRequest> requests;  // by position
    const uint32_t transfer = std::random_device{}() | 1u;
    for (auto* s : todo) {
      ec::ChunkMask available = 0;
      for (int c = 0; c < n; ++c) {
        if (c == s->target) continue;
        if (alive & (ec::NodeMask{1} << layout.NodeOf(s->stripe, c))) available |= ec::ChunkMask{1} << c;
      }
      available &= ~s->bad;
      s->read = FirstK(available, k);
      if (s->read == 0 && transient_losses) {
        return release(Status::Unavailable("job " + job_id + " step " + std::to_string(step) +
                                           ": survivors failed while sending; retrying later"));
      }
      if (s->read == 0) {
        std::string lost;
        for (int p = 0; p < n; ++p) {
          if (!(alive & (ec::NodeMask{1} << p))) lost += (lost.empty() ? "" : ", ") + PeerAt(p).id;
        }
        return release(Status::DataLoss(
            "job " + job_id + " step " + std::to_string(step) + " group " +
            std::to_string(manifest.group()) + " cannot be rebuilt: stripe " +
            std::to_string(s->stripe) + " has fewer than k = " + std::to_string(k) +
            " intact chunks (lost or unreachable: " + lost + ")"));
      }
      s->next_post = s->next_decode = 0;
      s->windows = Windows(s->length, window);
      s->arrived.assign(s->windows, 0);
      s->in_crc.assign(n, 0);
      s->out_crc = 0;
      s->slot_of.assign(n, -1);
      int slot = 0;
      for (int c = 0; c < n; ++c) {
        if (!(s->read & (ec::ChunkMask{1} << c))) continue;
        s->slot_of[c] = slot++;
        const int holder = layout.NodeOf(s->stripe, c);
        auto& rq = requests[holder];
        auto* ref = rq.add_chunks();
        ref->set_stripe(s->stripe);
        ref->set_chunk(c);
      }
      s->staging.assign(static_cast<size_t>(depth) * (k + 1) * window, 0);
    }
    OpTracker ops(transport_);
    auto slot_ptr = [&](RebuildExecutor::Stripe* s, uint64_t w, int slot) {
      return s->staging.data() + ((w % depth) * (k + 1) + slot) * window;
    };
    auto expected = [&](RebuildExecutor::Stripe* s, uint64_t w) {
      int count = 0;
      for (int c = 0; c < n; ++c) {
        if ((s->read & (ec::ChunkMask{1} << c)) && w * window < s->real[c]) ++count;
      }
      return count;
    };
    auto post = [&](RebuildExecutor::Stripe* s) {
      while (s->next_post < s->windows && s->next_post < s->next_decode + depth) {
        const uint64_t w = s->next_post++;
        for (int c = 0; c < n; ++c) {
          if (s->slot_of[c] < 0 || w * window >= s->real[c]) continue;
          const uint64_t len = std::min(window, s->real[c] - w * window);
          ops.Recv(WindowTag(transfer, s->stripe, c, w), slot_ptr(s, w, s->slot_of[c]), len,
                   RecvCookie(s->stripe, c, w));
        }
      }
    };
    Status failure;
    auto decode_ready = [&](RebuildExecutor::Stripe* s) {
      while (failure.ok() && s->next_decode < s->windows &&
             s->arrived[s->next_decode] == expected(s, s->next_decode)) {
        const uint64_t w = s->next_decode++;
        const uint64_t wlen = std::min(window, s->length - w * window);
        std::vector<uint8_t*> chunks(n, nullptr);
        for (int c = 0; c < n; ++c) {
          if (s->slot_of[c] < 0) continue;
          uint8_t* p = slot_ptr(s, w, s->slot_of[c]);
          const uint64_t have = s->real[c] > w * window ? std::min(wlen, s->real[c] - w * window) : 0;
          s->in_crc[c] = ec::Checksum({p, have}, s->in_crc[c]);
          std::memset(p + have, 0, wlen - have);
          chunks[c] = p;
          bytes_moved += have;
        }
        const ec::Extent out = layout.ChunkExtent(s->stripe, s->target);
        const bool to_parity = out.buffer == ec::Extent::Buffer::kParity;
        uint8_t* dst = to_parity ? parity.data() + out.offset + w * window : slot_ptr(s, w, k);
        if (manifest.replicate()) {
          std::memcpy(dst, chunks[std::countr_zero(s->read)], wlen);
        } else {
          chunks[s->target] = dst;
          if (Status st = codec->Decode(chunks, s->read, ec::ChunkMask{1} << s->target, wlen);
              !st.ok()) {
            failure = st;
            return;
          }
        }
        const uint64_t have =
            s->real[s->target] > w * window ? std::min(wlen, s->real[s->target] - w * window) : 0;
        s->out_crc = ec::Checksum({dst, have}, s->out_crc);
        if (!to_parity) data.Scatter(out.offset + w * window, dst, have);
        {
          std::lock_guard lock(mu_);
          rebuild_progress_.bytes_done += have;
        }
      }
      post(s);
    };
    for (auto* s : todo) {
      post(s);
      decode_ready(s);
    }
    // Ask the survivors to send (each answers once every window is sent).
    std::vector<std::future<Status>> senders;
    for (auto& [holder, rq] : requests) {
      rq.set_from_node(me_.id);
      rq.set_job_id(job_id);
      rq.set_step(step);
      rq.set_transfer_id(transfer);
      rq.set_window_bytes(window);
      rq.set_deadline_ms(static_cast<uint32_t>(options_.round_timeout.count()));
      senders.push_back(std::async(std::launch::async, [this, holder = holder, &rq]() -> Status {
        v1::ReadChunksResponse resp;
        auto ctx = Context(options_.round_timeout + options_.rpc_timeout);
        TrackCall(ctx.get(), true);
        Status st = FromGrpc(StubOf(PeerAt(holder))->ReadChunks(ctx.get(), rq, &resp))
                        .WithContext("reading from " + PeerAt(holder).id);
        TrackCall(ctx.get(), false);
        return st;
      }));
    }
    HOLDFAST_FAILPOINT("rebuild.reading");
    const auto deadline = Clock::now() + options_.round_timeout;
    std::map<int, RebuildExecutor::Stripe*> by_stripe;
    for (auto* s : todo) by_stripe[s->stripe] = s;
    auto remaining = [&] {
      for (auto* s : todo) {
        if (s->next_decode < s->windows) return true;
      }
      return false;
    };
    std::vector<int> sender_pos;
    for (auto& [holder, rq] : requests) sender_pos.push_back(holder);
    std::set<int> failed_senders;
    while (failure.ok() && remaining()) {
      // A survivor whose ReadChunks failed will send nothing more.
      for (size_t i = 0; i < senders.size(); ++i) {
        if (senders[i].valid() &&
            senders[i].wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
          Status st = senders[i].get();
          if (!st.ok()) {
            failure = st;
            failed_senders.insert(sender_pos[i]);
          }
        }
      }
      if (!failure.ok()) break;
      if (stop_) {
        failure = Status::Cancelled("the daemon is stopping");
        break;
      }
      auto ev = ops.Next(std::min(deadline, Clock::now() + std::chrono::milliseconds(200)));
      if (!ev) {
        if (Clock::now() >= deadline) failure = Status::DeadlineExceeded("rebuild read timed out");
        continue;
      }
      if (!ev->status.ok()) {
        failure = ev->status;
        break;
      }
      const int stripe = static_cast<int>(ev->cookie >> 56);
      const uint64_t w = ev->cookie & ((uint64_t{1} << 48) - 1);
      auto* s = by_stripe.at(stripe);
      ++s->arrived[w];
      decode_ready(s);
    }
    {
      // Windows not received yet: drain them so that survivors still sending
      // finish cleanly (data_path.h).
      std::vector<uint64_t> missing;
      for (auto* s : todo) {
        for (int c = 0; c < n; ++c) {
          if (s->slot_of[c] < 0) continue;
          for (uint64_t w = s->next_decode; w < s->windows; ++w) {
            if (w * window < s->real[c]) missing.push_back(WindowTag(transfer, s->stripe, c, w));
          }
        }
      }
      if (failure.ok()) missing.clear();
      ScopedEndpoints none(transport_, endpoint_pool_.get());
      protect_internal::DrainFailedTransfer(transport_, ops, none, missing, window,
                                            std::chrono::milliseconds(2000));
    }
    for (size_t i = 0; i < senders.size(); ++i) {
      if (!senders[i].valid()) continue;
      if (Status st = senders[i].get(); !st.ok() && !failure.ok()) failed_senders.insert(sender_pos[i]);
    }
    if (!failure.ok()) {
      // A survivor whose ReadChunks failed is one more lost position for the
      // next pass; a failure nobody owns (a timeout) ends this attempt, to be
      // retried at the next poll.
      if (failed_senders.empty()) return release(Status::Unavailable(failure.ToString()));
      spdlog::warn("rebuild of job {} step {}: {}; retrying without the failed survivors", job_id,
                   step, failure.ToString());
      for (int holder : failed_senders) {
        alive &= ~(ec::NodeMask{1} << holder);
        transient_losses = true;
      }
      continue;
    }
    // Checksums: inputs against the manifest (a corrupted survivor chunk is
    // excluded and the stripe redone), then the rebuilt chunk.
    for (auto* s : todo) {
      for (int c = 0; c < n; ++c) {
        if (s->slot_of[c] < 0) continue;
        if (s->in_crc[c] != manifest.chunk_crcs(s->stripe * n + c)) {
          spdlog::error("rebuild of job {} step {}: chunk {} of stripe {} on {} is CORRUPTED "
                        "(checksum mismatch); reading another survivor",
                        job_id, step, c, s->stripe, PeerAt(layout.NodeOf(s->stripe, c)).id);
          s->bad |= ec::ChunkMask{1} << c;
        }
      }
      if (s->bad & s->read) continue;
      if (s->out_crc != manifest.chunk_crcs(s->stripe * n + s->target)) {
        return release(Status::DataLoss("job " + job_id + " step " + std::to_string(step) +
                                        ": rebuilt chunk of stripe " + std::to_string(s->stripe) +
                                        " does not match its recorded checksum"));
      }
      s->done = true;
    }
  }

  // Every rebuilt rank part is checked against its commit-time checksums
  // before anything is recorded or served.
  std::vector<std::pair<v1::RankManifestRecord, Segment>> parts;
  if (sizes[me] > 0 && !have_local) {
    for (int i = 0; i < mine.ranks_size(); ++i) {
      v1::RankManifestRecord rec = mine.ranks(i);
      if (Status s = VerifyRankPart(new_segments[i].data(), new_segments[i].bytes(), rec); !s.ok()) {
        return release(s.WithContext("job " + job_id + " step " + std::to_string(step)));
      }
      rec.set_segment_name(new_segments[i].name());
      rec.set_segment_bytes(new_segments[i].bytes());
    }
    for (int i = 0; i < mine.ranks_size(); ++i) {
      v1::RankManifestRecord rec = mine.ranks(i);
      rec.set_segment_name(new_segments[i].name());
      rec.set_segment_bytes(new_segments[i].bytes());
      parts.emplace_back(std::move(rec), std::move(new_segments[i]));
    }
    new_segments.clear();
    v1::JobRecord job;
    job.set_job_id(job_id);
    job.set_world_size(manifest.world_size());
    for (const auto& rk : mine.ranks()) job.add_local_ranks(rk.rank());
    Status adopted = OnLoop([&] { return manager_->AdoptVersion(job, step, std::move(parts)); });
    if (!adopted.ok()) {
      // AdoptVersion freed the data segments it was given.
      return release(adopted.WithContext("recording the rebuilt version"));
    }
    have_local = true;  // pinned once by AdoptVersion, for the protection
  }
  Protection p;
  p.record = manifest;
  p.record.set_position(me);
  p.record.set_parity_segment(parity.valid() ? parity.name() : "");
  p.record.set_parity_bytes(parity.valid() ? parity.bytes() : 0);
  // A round's Conclude may have recorded this step meanwhile (its round ran
  // while this rebuild read): that record stands, this copy goes.
  std::unique_lock recording(record_mu_);
  bool recorded = false;
  {
    std::lock_guard lock(mu_);
    recorded = protections_.count({job_id, step}) > 0;
  }
  if (recorded) {
    recording.unlock();
    spdlog::info("job {} step {} was protected here while it was being rebuilt; the rebuilt "
                 "copy is discarded",
                 job_id, step);
    return release(Status::Ok());
  }
  CatalogBatch batch;
  batch.put_protections.push_back(p.record);
  if (Status s = catalog_->Apply(batch); !s.ok()) return release(s.WithContext("catalog"));
  if (parity.valid()) p.parity = std::make_shared<Segment>(std::move(parity));
  p.pinned = sizes[me] > 0;
  std::vector<PendingRound> superseded;  // this step's rounds whose Conclude never came
  {
    std::lock_guard lock(mu_);
    protections_[{job_id, step}] = std::move(p);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.job_id == job_id && it->second.step == step) {
        superseded.push_back(std::move(it->second));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    ++versions_rebuilt_;
    RebuildProgress& rp = rebuild_progress_;
    rp.bytes_done = rp.bytes_total;
    rp.bytes_rebuilt += rp.bytes_total;
    rp.last_finished_us = NowMicros();
    rp.micros += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
  }
  recording.unlock();
  for (const PendingRound& pr : superseded) ReleasePendingRound(pr);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  spdlog::info("rebuilt job {} step {}: {} chunks, {:.1f} MiB read from survivors in {:.3f} s "
               "({:.2f} GB/s); {}",
               job_id, step, stripes.size(), bytes_moved / double(1 << 20), secs,
               bytes_moved / secs / 1e9, have_local && sizes[me] > 0 ? "data verified" : "parity only");
  return Status::Ok();
}

std::pair<int64_t, bool> ClusterNode::ProtectedHereLocked(
    const std::string& job, const std::map<int64_t, ec::NodeMask>& held) {
  const int k = options_.config.code.mode == CodeSpec::Mode::kErasure ? options_.config.code.k : 1;
  const auto now = Clock::now();
  int64_t mine = -1;
  bool busy = false;
  for (const auto& [key, p] : protections_) {
    if (key.first == job) mine = std::max(mine, key.second);
  }
  for (auto& [id, pr] : pending_) {
    if (pr.job_id != job) continue;
    auto it = held.find(pr.step);
    if (it != held.end() && std::popcount(it->second) >= k) {
      if (!pr.others_hold_since) pr.others_hold_since = now;
      // Its Conclude is overdue: the coordinator died or its call failed.
      if (now - *pr.others_hold_since > options_.rpc_timeout) continue;
    }
    busy = true;
  }
  for (const auto& key : protecting_) busy = busy || key.first == job;
  for (const auto& key : recording_) busy = busy || key.first == job;
  return {mine, busy};
}

std::optional<v1::ProtectionRecord> ClusterNode::FetchManifest(
    const std::string& job_id, int64_t step, ec::NodeMask holders,
    std::optional<uint32_t> round_id) {
  for (int p = 0; p < static_cast<int>(members_.size()); ++p) {
    if (!(holders & (ec::NodeMask{1} << p))) continue;
    v1::GetManifestRequest req;
    req.set_from_node(me_.id);
    req.set_job_id(job_id);
    req.set_step(step);
    v1::GetManifestResponse resp;
    auto ctx = Context(options_.rpc_timeout);
    if (StubOf(PeerAt(p))->GetManifest(ctx.get(), req, &resp).ok() &&
        (!round_id || resp.manifest().round_id() == *round_id)) {
      return resp.manifest();
    }
  }
  return std::nullopt;
}

void ClusterNode::ConcludeOverdueRounds(
    const std::map<std::string, std::map<int64_t, ec::NodeMask>>& holders) {
  struct Overdue {
    uint32_t round_id;
    std::string job_id;
    int64_t step;
    ec::NodeMask holders;
  };
  std::vector<Overdue> overdue;
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    for (auto& [id, pr] : pending_) {
      const auto job = holders.find(pr.job_id);
      if (job == holders.end()) continue;
      const auto held = job->second.find(pr.step);
      if (held == job->second.end() || held->second == 0) continue;
      if (!pr.held_elsewhere_since) pr.held_elsewhere_since = now;
      if (now - *pr.held_elsewhere_since > options_.rpc_timeout) {
        overdue.push_back({id, pr.job_id, pr.step, held->second});
      }
    }
  }
  for (const Overdue& o : overdue) {
    // The manifest a holder recorded; only this round's will do (another
    // round of the same step is for the rebuild path to judge).
    const std::optional<v1::ProtectionRecord> manifest =
        FetchManifest(o.job_id, o.step, o.holders, o.round_id);
    if (!manifest) continue;
    // The coordinator sends Conclude(protected) with one manifest to every
    // member, and only after each finished its part of the round: a member
    // holding this round's record proves this member's parity is complete.
    v1::ConcludeRequest req;
    req.set_from_node(me_.id);
    req.set_round_id(o.round_id);
    req.set_job_id(o.job_id);
    req.set_step(o.step);
    *req.mutable_manifest() = *manifest;
    req.set_protected_(true);
    req.add_keep_steps(o.step);
    {
      // Nothing older is freed here: the next round's Conclude decides.
      std::lock_guard lock(mu_);
      for (const auto& [key, p] : protections_) {
        if (key.first == o.job_id) req.add_keep_steps(key.second);
      }
    }
    const Status s = RecordProtected(req);
    if (s.ok()) {
      spdlog::warn("job {} step {}: its Conclude never came, but another member recorded round "
                   "{:08x}; recorded it here from that member's manifest",
                   o.job_id, o.step, o.round_id);
    } else if (s.code() != StatusCode::kNotFound) {  // NotFound: the Conclude came meanwhile
      spdlog::warn("job {} step {}: concluding overdue round {:08x} here failed: {}", o.job_id,
                   o.step, o.round_id, s.ToString());
    }
  }
}

void ClusterNode::MaybeRebuild(const std::vector<std::optional<v1::GroupStateResponse>>& states) {
  const int n = static_cast<int>(states.size());
  const int me = position();
  const int k = options_.config.code.mode == CodeSpec::Mode::kErasure ? options_.config.code.k : 1;
  // What the other members agree is protected.
  std::map<std::string, std::map<int64_t, ec::NodeMask>> holders;  // job -> step -> members
  int answered = 0;
  for (int p = 0; p < n; ++p) {
    if (p == me || !states[p]) continue;
    ++answered;
    for (const auto& js : states[p]->jobs()) {
      for (const auto& pr : js.protected_()) holders[js.job_id()][pr.step()] |= ec::NodeMask{1} << p;
    }
  }
  ConcludeOverdueRounds(holders);
  if (answered < k) return;
  {
    // What is missing here, before rebuilding: holdfast recover waits for it.
    std::lock_guard lock(mu_);
    RebuildProgress& rp = rebuild_progress_;
    rp.compared = true;
    for (const auto& [job, steps] : holders) {
      const auto [mine, busy] = ProtectedHereLocked(job, steps);
      if (busy) continue;  // a round of it in progress: not a loss
      rp.missing.erase(job);
      rp.lost.erase(job);
      std::string lost;
      for (auto it = steps.rbegin(); it != steps.rend() && it->first > mine; ++it) {
        if (std::popcount(it->second) >= k) {
          rp.missing[job] = it->first;
          break;
        }
        if (lost.empty()) {
          lost = "job " + job + " step " + std::to_string(it->first) + ": only " +
                 std::to_string(std::popcount(it->second)) + " members hold it, fewer than k = " +
                 std::to_string(k);
        }
      }
      if (rp.missing.count(job) == 0 && !lost.empty()) rp.lost[job] = lost;
    }
    for (auto it = rp.missing.begin(); it != rp.missing.end();) {
      it = holders.count(it->first) ? std::next(it) : rp.missing.erase(it);
    }
  }
  for (const auto& [job, steps] : holders) {
    int64_t mine = -1;
    bool busy = false;
    {
      std::lock_guard lock(mu_);
      std::tie(mine, busy) = ProtectedHereLocked(job, steps);
    }
    if (busy) continue;
    for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
      const auto& [step, mask] = *it;
      if (step <= mine) break;
      if (std::popcount(mask) < k) {
        // Fewer members than k hold it: unrecoverable here, say so once.
        std::lock_guard lock(mu_);
        if (reported_losses_.insert({job, step}).second) {
          std::string holders_list;
          for (int p = 0; p < n; ++p) {
            if (mask & (ec::NodeMask{1} << p)) {
              holders_list += (holders_list.empty() ? "" : ", ") + PeerAt(p).id;
            }
          }
          last_error_ = "DATA_LOSS: job " + job + " step " + std::to_string(step) + " group " +
                        std::to_string(placement_.group) + " cannot be rebuilt: only " +
                        std::to_string(std::popcount(mask)) + " members hold it (" + holders_list +
                        "), fewer than k = " + std::to_string(k) +
                        "; more members were lost than the code tolerates";
          spdlog::error("{}", last_error_);
        }
        continue;  // an older version may still be held by enough members
      }
      const std::optional<v1::ProtectionRecord> manifest = FetchManifest(job, step, mask);
      if (!manifest) break;
      {
        std::lock_guard lock(mu_);
        rebuilding_ = true;
      }
      spdlog::warn("job {} step {} is protected by the group but not here: rebuilding it", job,
                   step);
      Status s = Rebuild(*manifest, mask);
      {
        std::lock_guard lock(mu_);
        rebuilding_ = false;
        if (!s.ok()) last_error_ = s.ToString();
        rebuild_progress_.last_failed = !s.ok();
        if (!s.ok()) rebuild_progress_.last_failure = s.ToString();
        if (s.ok()) rebuild_progress_.missing.erase(job);
        if (s.code() == StatusCode::kDataLoss && rebuild_progress_.missing.count(job) &&
            rebuild_progress_.missing[job] == step) {
          // Its rebuilt bytes failed their checks: an older version is tried
          // next; until one succeeds the job counts as lost.
          rebuild_progress_.lost[job] = "job " + job + " step " + std::to_string(step) + ": " +
                                        s.message();
        }
        if (s.ok()) rebuild_progress_.lost.erase(job);
      }
      if (s.ok()) break;  // the newest rebuildable version is what matters
      spdlog::error("REBUILD FAILED for job {} step {}: {}{}", job, step, s.ToString(),
                    s.code() == StatusCode::kDataLoss ? "; falling back to an older protected version"
                                                      : "; retrying later");
      if (s.code() != StatusCode::kDataLoss) break;
    }
  }
}

}  // namespace holdfast::smp
