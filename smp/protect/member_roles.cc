// A member's roles in a protection round, sending chunks to a rebuilding
// peer, and recording concluded rounds. See cluster_node.h and
// docs/cluster.md ("Protection of one version").
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "core/failpoint.h"
#include "holdfast/ec/checksum.h"
#include "protect/cluster_node.h"
#include "protect/data_path.h"
#include "protect/peer_requests.h"

namespace holdfast::smp {

using protect_internal::BufferPart;
using protect_internal::Cookie;
using protect_internal::DataBuffer;
using protect_internal::OpTracker;
using protect_internal::ScopedEndpoints;
using protect_internal::Windows;
using Clock = std::chrono::steady_clock;

namespace {

// Cookies: kind (8 bits) | stripe (8) | chunk (8) | window (40).
enum Kind : uint64_t { kSendData = 1, kRecvData, kSendParity, kRecvParity, kSendChunk };

Cookie MakeCookie(Kind kind, int stripe, int chunk, uint64_t window) {
  return (uint64_t{kind} << 56) | (uint64_t(stripe & 0xff) << 48) | (uint64_t(chunk & 0xff) << 40) |
         (window & ((uint64_t{1} << 40) - 1));
}
Kind KindOf(Cookie c) { return static_cast<Kind>(c >> 56); }
int StripeOf(Cookie c) { return static_cast<int>((c >> 48) & 0xff); }
int ChunkOf(Cookie c) { return static_cast<int>((c >> 40) & 0xff); }

// How long a failed transfer waits for its peers to drain its sends before
// it closes its endpoints (docs/cluster.md, "Failure cases").
constexpr std::chrono::milliseconds kDrainGrace{2000};
uint64_t WindowOf(Cookie c) { return c & ((uint64_t{1} << 40) - 1); }

// Lowers this thread's priority for protection work and restores it.
class NiceScope {
 public:
  explicit NiceScope(int delta) {
    tid_ = static_cast<pid_t>(syscall(SYS_gettid));
    errno = 0;
    old_ = getpriority(PRIO_PROCESS, static_cast<id_t>(tid_));
    if (errno == 0 && delta != 0) {
      set_ = setpriority(PRIO_PROCESS, static_cast<id_t>(tid_), std::min(19, old_ + delta)) == 0;
    }
  }
  ~NiceScope() {
    if (set_) setpriority(PRIO_PROCESS, static_cast<id_t>(tid_), old_);
  }
  NiceScope(const NiceScope&) = delete;
  NiceScope& operator=(const NiceScope&) = delete;

 private:
  pid_t tid_ = 0;
  int old_ = 0;
  bool set_ = false;
};

}  // namespace

// ---- Protect: this member's roles -----------------------------------------------------------

Result<v1::ProtectResponse> ClusterNode::RunRoles(const v1::ProtectRequest& req,
                                                  const std::function<bool()>& cancelled) {
  NiceScope nice(options_.config.protect_nice);
  const int me = position();
  std::vector<std::string> group_ids;
  for (const auto& peer : members_) group_ids.push_back(peer->id);
  HOLDFAST_ASSIGN_OR_RETURN(ec::GroupLayout layout, CheckProtectRequest(req, group_ids, me));
  const int n = layout.n();
  const int k = layout.k();
  const int m = layout.m();
  const uint64_t window = std::max<uint64_t>(req.window_bytes(), 4096);
  std::vector<uint64_t> sizes(req.data_bytes().begin(), req.data_bytes().end());
  std::unique_ptr<ec::Codec> codec;
  if (!req.replicate()) {
    HOLDFAST_ASSIGN_OR_RETURN(codec, ec::Codec::Create({.k = k, .m = m}));
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(req.deadline_ms());

  // Local data, pinned for the round (and beyond, if it is protected).
  v1::ProtectResponse resp;
  resp.set_position(me);
  DataBuffer data;
  bool pinned = false;
  if (sizes[me] > 0) {
    auto pin = OnLoop([&] {
      return manager_->PinVersion(req.job_id(), req.step(), /*to_protect=*/true);
    });
    if (!pin.ok()) return pin.status();
    pinned = true;
    std::vector<BufferPart> parts;
    for (const auto& p : pin->parts) parts.push_back({const_cast<uint8_t*>(p.data), p.bytes});
    data = DataBuffer(std::move(parts));
    for (auto& mf : pin->manifests) *resp.add_ranks() = std::move(mf);
    if (data.bytes() != sizes[me]) {
      OnLoop([&] { manager_->UnpinVersion(req.job_id(), req.step()); return 0; });
      return Status::FailedPrecondition("job " + req.job_id() + " step " +
                                        std::to_string(req.step()) + " has " +
                                        std::to_string(data.bytes()) + " bytes here, the round says " +
                                        std::to_string(sizes[me]));
    }
  }
  Segment parity;
  auto release = [&](Status why) -> Status {
    if (parity.valid()) OnLoop([&] { manager_->FreeSegment(parity); return 0; });
    if (pinned) OnLoop([&] { manager_->UnpinVersion(req.job_id(), req.step()); return 0; });
    return why;
  };
  if (layout.parity_bytes(me) > 0) {
    auto seg = OnLoop([&] { return manager_->AllocateSegment(layout.parity_bytes(me)); });
    if (!seg.ok()) return release(seg.status());
    parity = std::move(seg).value();
  }

  // Endpoints of the peers this member sends to, for this round only.
  OpTracker ops(transport_);
  ScopedEndpoints round_endpoints(transport_, endpoint_pool_.get());
  std::vector<Transport::EndpointId> endpoints(n, 0);
  for (int p = 0; p < n; ++p) {
    if (p == me) continue;
    auto address = PeerAddress(PeerAt(p));
    Result<Transport::EndpointId> ep =
        address.ok() ? round_endpoints.Connect(*address) : Result<Transport::EndpointId>(address.status());
    if (!ep.ok()) return release(ep.status().WithContext("peer " + PeerAt(p).id));
    endpoints[p] = *ep;
  }

  const uint32_t round = req.round_id();
  const int depth = std::max(1, options_.windows_in_flight);

  // Role 1, data holder: piece c of stripe r goes to the stripe's encoder.
  struct SendStream {
    int stripe, chunk, to;
    uint64_t offset, length, windows, next = 0;
    uint64_t crc = 0;
  };
  std::vector<SendStream> sends;
  std::vector<uint64_t> chunk_crcs(n, 0);
  for (int r = 0; r < n; ++r) {
    const int c = layout.ChunkOf(r, me);
    if (c >= k) continue;
    const ec::Extent e = layout.ChunkExtent(r, c);
    sends.push_back({r, c, layout.NodeOf(r, k), e.offset, e.length, Windows(e.length, window)});
  }
  std::map<Cookie, std::vector<uint8_t>> bounces;
  size_t send_cursor = 0;
  int sends_in_flight = 0;
  auto post_sends = [&] {
    while (sends_in_flight < depth && send_cursor < sends.size()) {
      SendStream& s = sends[send_cursor];
      if (s.next == s.windows) {
        chunk_crcs[s.stripe] = s.crc;
        ++send_cursor;
        continue;
      }
      const uint64_t w = s.next++;
      const uint64_t len = std::min(window, s.length - w * window);
      const Cookie cookie = MakeCookie(kSendData, s.stripe, s.chunk, w);
      const uint8_t* ptr = data.Gather(s.offset + w * window, len, &bounces[cookie]);
      s.crc = ec::Checksum({ptr, len}, s.crc);
      Pace(len);
      ops.Send(endpoints[s.to], WindowTag(round, s.stripe, s.chunk, w), ptr, len, cookie);
      ++sends_in_flight;
      if (s.next == s.windows) {
        chunk_crcs[s.stripe] = s.crc;
        ++send_cursor;
      }
    }
  };
  for (SendStream& s : sends) {
    if (s.windows == 0) chunk_crcs[s.stripe] = 0;
  }

  // Role 2, encoder of stripe `er` (this member holds its parity chunk 0):
  // receives the k data chunks window by window, encodes, keeps parity 0 and
  // forwards parity 1..m-1.
  const int er = (me - k + n) % n;
  const uint64_t elen = layout.chunk_length(er);
  const uint64_t ewindows = Windows(elen, window);
  const ec::Extent p0 = layout.ChunkExtent(er, k);
  std::vector<uint64_t> real(k);
  for (int c = 0; c < k; ++c) real[c] = layout.ChunkExtent(er, c).length;
  auto expected_in = [&](uint64_t w) {
    int count = 0;
    for (int c = 0; c < k; ++c) count += w * window < real[c] ? 1 : 0;
    return count;
  };
  // Slots: k data windows (EC only) and m-1 parity windows each.
  std::vector<uint8_t> staging;
  if (!req.replicate()) staging.resize(static_cast<size_t>(depth) * (k + m - 1) * window);
  auto data_slot = [&](uint64_t w, int c) {
    return staging.data() + ((w % depth) * (k + m - 1) + c) * window;
  };
  auto parity_slot = [&](uint64_t w, int j) {  // j = 1..m-1
    return staging.data() + ((w % depth) * (k + m - 1) + k + j - 1) * window;
  };
  uint8_t* const p0_base = parity.valid() ? parity.data() + p0.offset : nullptr;
  std::vector<int> arrived(ewindows, 0);
  // Every window this member expects and has not received yet (for draining
  // after a failure).
  std::set<uint64_t> expected_tags;
  for (uint64_t w = 0; w < ewindows; ++w) {
    for (int c = 0; c < k; ++c) {
      if (w * window < real[c]) expected_tags.insert(WindowTag(round, er, c, w));
    }
  }
  std::vector<int> forwards_pending(ewindows, 0);
  uint64_t next_encode = 0, next_post = 0, windows_done = 0;
  uint64_t p0_crc = 0;
  std::vector<uint64_t> fwd_crc(m, 0);
  auto post_encoder_recvs = [&] {
    while (next_post < ewindows && next_post < windows_done + depth) {
      const uint64_t w = next_post++;
      for (int c = 0; c < k; ++c) {
        if (w * window >= real[c]) continue;
        const uint64_t len = std::min(window, real[c] - w * window);
        uint8_t* dst = req.replicate() ? p0_base + w * window : data_slot(w, c);
        ops.Recv(WindowTag(round, er, c, w), dst, len, MakeCookie(kRecvData, er, c, w));
      }
    }
  };
  Status failure;
  auto encode_ready = [&] {
    while (next_encode < ewindows && arrived[next_encode] == expected_in(next_encode)) {
      const uint64_t w = next_encode++;
      const uint64_t wlen = std::min(window, elen - w * window);
      if (req.replicate()) {
        // k = 1: the data window is parity 0 already; forward it as is.
        const uint64_t have = real[0] > w * window ? std::min(wlen, real[0] - w * window) : 0;
        std::memset(p0_base + w * window + have, 0, wlen - have);
        p0_crc = ec::Checksum({p0_base + w * window, wlen}, p0_crc);
        for (int j = 1; j < m; ++j) {
          Pace(wlen);
          ops.Send(endpoints[layout.NodeOf(er, k + j)], WindowTag(round, er, k + j, w),
                   p0_base + w * window, wlen, MakeCookie(kSendParity, er, k + j, w));
          ++forwards_pending[w];
        }
      } else {
        std::vector<const uint8_t*> in(k);
        for (int c = 0; c < k; ++c) {
          uint8_t* slot = data_slot(w, c);
          const uint64_t have = real[c] > w * window ? std::min(wlen, real[c] - w * window) : 0;
          std::memset(slot + have, 0, wlen - have);  // virtual zeros of a short piece
          in[c] = slot;
        }
        std::vector<uint8_t*> out(m);
        out[0] = p0_base + w * window;
        for (int j = 1; j < m; ++j) out[j] = parity_slot(w, j);
        if (Status s = codec->Encode(in, out, wlen); !s.ok()) {
          failure = s;
          return;
        }
        p0_crc = ec::Checksum({out[0], wlen}, p0_crc);
        for (int j = 1; j < m; ++j) {
          Pace(wlen);
          ops.Send(endpoints[layout.NodeOf(er, k + j)], WindowTag(round, er, k + j, w), out[j],
                   wlen, MakeCookie(kSendParity, er, k + j, w));
          ++forwards_pending[w];
        }
      }
      if (forwards_pending[w] == 0) ++windows_done;
    }
  };

  // Role 3, parity holder of parity j > 0 of other stripes: receives the
  // encoder's windows straight into the parity segment.
  uint64_t parity_recvs = 0;
  for (int r = 0; r < n; ++r) {
    const int c = layout.ChunkOf(r, me);
    if (c <= k) continue;
    const ec::Extent e = layout.ChunkExtent(r, c);
    for (uint64_t w = 0; w < Windows(e.length, window); ++w) {
      const uint64_t len = std::min(window, e.length - w * window);
      ops.Recv(WindowTag(round, r, c, w), parity.data() + e.offset + w * window, len,
               MakeCookie(kRecvParity, r, c, w));
      expected_tags.insert(WindowTag(round, r, c, w));
      ++parity_recvs;
    }
  }

  post_sends();
  post_encoder_recvs();
  encode_ready();  // stripes whose data pieces are all empty
  post_encoder_recvs();
  HOLDFAST_FAILPOINT("protect.roles_started");
  while (failure.ok() &&
         (send_cursor < sends.size() || sends_in_flight > 0 || windows_done < ewindows ||
          parity_recvs > 0)) {
    auto ev = ops.Next(std::min(deadline, Clock::now() + std::chrono::milliseconds(100)));
    if (!ev) {
      if (cancelled()) {
        // The coordinator gave up on the round (another member failed) or
        // died: nothing more will arrive.
        failure = Status::Cancelled("protection round " + std::to_string(round) +
                                    " was cancelled by its coordinator");
        break;
      }
      if (Clock::now() < deadline) continue;
      failure = Status::DeadlineExceeded("protection round " + std::to_string(round) +
                                         " timed out in this member's roles");
      break;
    }
    if (!ev->status.ok()) {
      failure = ev->status.WithContext("protection transfer");
      break;
    }
    const uint64_t w = WindowOf(ev->cookie);
    switch (KindOf(ev->cookie)) {
      case kSendData:
        --sends_in_flight;
        bounces.erase(ev->cookie);
        post_sends();
        break;
      case kRecvData:
        expected_tags.erase(WindowTag(round, StripeOf(ev->cookie), ChunkOf(ev->cookie), w));
        ++arrived[w];
        encode_ready();
        post_encoder_recvs();
        break;
      case kSendParity:
        if (--forwards_pending[w] == 0) ++windows_done;
        post_encoder_recvs();
        break;
      case kRecvParity:
        expected_tags.erase(WindowTag(round, StripeOf(ev->cookie), ChunkOf(ev->cookie), w));
        --parity_recvs;
        break;
      default:
        break;
    }
  }
  if (!failure.ok()) {
    protect_internal::DrainFailedTransfer(
        transport_, ops, round_endpoints,
        std::vector<uint64_t>(expected_tags.begin(), expected_tags.end()), window, kDrainGrace);
    spdlog::warn("protection of job {} step {} (round {:08x}) failed here: {}", req.job_id(),
                 req.step(), round, failure.ToString());
    return release(failure);
  }
  // Parity chunks this member holds: parity 0 of `er` (encoded here), the
  // others as received.
  chunk_crcs[er] = p0_crc;
  for (int r = 0; r < n; ++r) {
    const int c = layout.ChunkOf(r, me);
    if (c <= k) continue;
    const ec::Extent e = layout.ChunkExtent(r, c);
    chunk_crcs[r] = ec::Checksum({parity.data() + e.offset, e.length});
  }
  for (uint64_t crc : chunk_crcs) resp.add_chunk_crcs(crc);
  resp.set_bytes_sent(sizes[me] + (m - 1) * elen);
  HOLDFAST_FAILPOINT("protect.roles_done");

  std::lock_guard lock(mu_);
  PendingRound& pr = pending_[round];
  pr.job_id = req.job_id();
  pr.step = req.step();
  pr.parity = std::make_shared<Segment>(std::move(parity));
  pr.pinned = pinned;
  pr.finished = Clock::now();
  return resp;
}

// ---- ReadChunks: feeding a rebuild --------------------------------------------------------

Status ClusterNode::SendChunks(const v1::ReadChunksRequest& req, const std::string& address,
                               uint64_t* bytes_sent) {
  // Normal priority: a rebuild is on the recovery path.
  const Key key{req.job_id(), req.step()};
  v1::ProtectionRecord manifest;
  std::shared_ptr<Segment> parity_hold;  // keeps the mapping if a Conclude frees it meanwhile
  const uint8_t* parity = nullptr;
  {
    std::lock_guard lock(mu_);
    auto it = protections_.find(key);
    if (it == protections_.end()) {
      return Status::NotFound("job " + req.job_id() + " step " + std::to_string(req.step()) +
                              " is not protected here");
    }
    manifest = it->second.record;
    parity_hold = it->second.parity;
    parity = parity_hold ? parity_hold->data() : nullptr;
  }
  // A Conclude may free the protection while this runs: the parity mapping
  // stays (parity_hold), the local data is pinned below.
  HOLDFAST_ASSIGN_OR_RETURN(ec::GroupLayout layout,
                            CheckProtectionRecord(manifest, position(), "protection record"));
  HOLDFAST_RETURN_IF_ERROR(CheckChunkRefs(req, layout, position()));
  std::vector<uint64_t> sizes;
  for (const auto& mem : manifest.members()) sizes.push_back(mem.data_bytes());
  DataBuffer data;
  bool pinned = false;
  if (sizes[position()] > 0) {
    auto pin = OnLoop([&] { return manager_->PinVersion(req.job_id(), req.step()); });
    if (!pin.ok()) return pin.status().WithContext("local data");
    pinned = true;
    std::vector<BufferPart> parts;
    for (const auto& p : pin->parts) parts.push_back({const_cast<uint8_t*>(p.data), p.bytes});
    data = DataBuffer(std::move(parts));
  }
  auto unpin = [&] {
    if (pinned) OnLoop([&] { manager_->UnpinVersion(req.job_id(), req.step()); return 0; });
  };
  const uint64_t window = std::max<uint64_t>(req.window_bytes(), 4096);
  const int depth = std::max(1, options_.windows_in_flight);
  const auto deadline = Clock::now() + std::chrono::milliseconds(req.deadline_ms());
  OpTracker ops(transport_);
  ScopedEndpoints endpoints(transport_, endpoint_pool_.get());
  auto connected = endpoints.Connect(address);
  if (!connected.ok()) {
    unpin();
    return connected.status();
  }
  const Transport::EndpointId endpoint = *connected;
  std::map<Cookie, std::vector<uint8_t>> bounces;
  int in_flight = 0;
  Status failure;
  for (const v1::ChunkRef& ref : req.chunks()) {
    const ec::Extent e = layout.ChunkExtent(ref.stripe(), ref.chunk());
    const bool is_parity = e.buffer == ec::Extent::Buffer::kParity;
    for (uint64_t w = 0; w < Windows(e.length, window) && failure.ok(); ++w) {
      while (in_flight >= depth && failure.ok()) {
        auto ev = ops.Next(deadline);
        if (!ev) failure = Status::DeadlineExceeded("sending chunks timed out");
        else if (!ev->status.ok()) failure = ev->status;
        else {
          --in_flight;
          bounces.erase(ev->cookie);
        }
      }
      if (!failure.ok()) break;
      const uint64_t len = std::min(window, e.length - w * window);
      const Cookie cookie = MakeCookie(kSendChunk, ref.stripe(), ref.chunk(), w);
      const uint8_t* ptr = is_parity ? parity + e.offset + w * window
                                     : data.Gather(e.offset + w * window, len, &bounces[cookie]);
      Pace(len);
      ops.Send(endpoint, WindowTag(req.transfer_id(), ref.stripe(), ref.chunk(), w), ptr, len,
               cookie);
      ++in_flight;
      *bytes_sent += len;
    }
    if (!failure.ok()) break;
  }
  while (failure.ok() && in_flight > 0) {
    auto ev = ops.Next(deadline);
    if (!ev) failure = Status::DeadlineExceeded("sending chunks timed out");
    else if (!ev->status.ok()) failure = ev->status;
    else --in_flight;
  }
  if (!failure.ok()) {
    protect_internal::DrainFailedTransfer(transport_, ops, endpoints, {}, window, kDrainGrace);
  }
  unpin();
  return failure;
}

// ---- Conclude ---------------------------------------------------------------------------

Status ClusterNode::RecordProtected(const v1::ConcludeRequest& req) {
  HOLDFAST_RETURN_IF_ERROR(CheckConcludeRequest(req, position()));
  const Key key{req.job_id(), req.step()};
  // Until it is in protections_, the step counts as a round under way here
  // (recording_): a rebuild must not take it for a loss meanwhile.
  std::unique_lock recording(record_mu_);
  PendingRound pr;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(req.round_id());
    if (it == pending_.end()) {
      return Status::NotFound("round " + std::to_string(req.round_id()) +
                              " is not pending here (expired or already concluded)");
    }
    pr = std::move(it->second);
    pending_.erase(it);
    recording_.insert(key);
  }
  auto recorded = [&] {
    std::lock_guard lock(mu_);
    recording_.erase(recording_.find(key));
  };
  if (!req.protected_()) {
    recorded();
    recording.unlock();
    ReleasePendingRound(pr);
    return Status::Ok();
  }
  Protection p;
  p.record = req.manifest();
  p.record.set_position(position());
  p.record.set_parity_segment(pr.parity ? pr.parity->name() : "");
  p.record.set_parity_bytes(pr.parity ? pr.parity->bytes() : 0);
  p.parity = std::move(pr.parity);
  p.pinned = pr.pinned;
  // What this record supersedes: protections of older steps not kept.
  const std::set<int64_t> keep(req.keep_steps().begin(), req.keep_steps().end());
  std::vector<std::pair<Key, Protection>> freed;
  CatalogBatch batch;
  batch.put_protections.push_back(p.record);
  {
    std::lock_guard lock(mu_);
    for (const auto& [k2, old] : protections_) {
      if (k2.first != key.first) continue;
      if (k2.second == key.second || (k2.second < key.second && !keep.count(k2.second))) {
        if (k2.second != key.second) batch.delete_protections.push_back({k2.first, k2.second});
      }
    }
  }
  if (Status s = catalog_->Apply(batch); !s.ok()) {
    recorded();
    recording.unlock();
    if (p.parity) OnLoop([&] { manager_->FreeSegment(*p.parity); return 0; });
    if (p.pinned) OnLoop([&] { manager_->UnpinVersion(key.first, key.second); return 0; });
    return s.WithContext("catalog");
  }
  HOLDFAST_FAILPOINT("protect.after_record");
  {
    std::lock_guard lock(mu_);
    for (auto it = protections_.begin(); it != protections_.end();) {
      const bool superseded =
          it->first.first == key.first &&
          (it->first.second == key.second ||
           (it->first.second < key.second && !keep.count(it->first.second)));
      if (superseded) {
        freed.emplace_back(it->first, std::move(it->second));
        it = protections_.erase(it);
      } else {
        ++it;
      }
    }
    protections_[key] = std::move(p);
    recording_.erase(recording_.find(key));
  }
  recording.unlock();
  for (auto& [k2, old] : freed) FreeProtection(std::move(old), k2);
  spdlog::info("job {} step {} protected (round {:08x}); {} older protection(s) freed", key.first,
               key.second, req.round_id(), freed.size());
  return Status::Ok();
}

void ClusterNode::FreeProtection(Protection p, const Key& key) {
  if (p.parity) {
    if (p.parity.use_count() == 1) {
      // Nobody reads it: recycled for the next round's parity.
      OnLoop([&] {
        manager_->RecycleSegment(std::move(*p.parity));
        return 0;
      });
    } else {
      OnLoop([&] { manager_->FreeSegment(*p.parity); return 0; });
    }
  }
  if (p.pinned) OnLoop([&] { manager_->UnpinVersion(key.first, key.second); return 0; });
}

void ClusterNode::ExpirePendingRounds() {
  std::vector<PendingRound> expired;
  {
    std::lock_guard lock(mu_);
    const auto cutoff = Clock::now() - 2 * options_.round_timeout;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.finished < cutoff) {
        expired.push_back(std::move(it->second));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (PendingRound& pr : expired) {
    spdlog::warn("round for job {} step {} was never concluded; freeing its parity", pr.job_id,
                 pr.step);
    ReleasePendingRound(pr);
  }
}

void ClusterNode::ReleasePendingRound(const PendingRound& pr) {
  if (pr.parity) OnLoop([&] { manager_->FreeSegment(*pr.parity); return 0; });
  if (pr.pinned) OnLoop([&] { manager_->UnpinVersion(pr.job_id, pr.step); return 0; });
}

}  // namespace holdfast::smp
