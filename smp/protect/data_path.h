// Pieces shared by the member roles and the rebuild (smp/protect): a
// tracker of Transport operations whose completions are handled on the
// calling thread, and views of a member's data buffer (its rank segments
// one after another).
//
// Thread-safety: an OpTracker is used by one thread (its owner); only the
// Transport's callbacks touch its queue from the progress thread.
#ifndef HOLDFAST_SMP_PROTECT_DATA_PATH_H_
#define HOLDFAST_SMP_PROTECT_DATA_PATH_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "holdfast/ec/status.h"
#include "transport/transport.h"

namespace holdfast::smp::protect_internal {

// What a completion belongs to; the owner packs it as it likes.
using Cookie = uint64_t;

class OpTracker {
 public:
  struct Event {
    Cookie cookie = 0;
    Status status;
    uint64_t bytes = 0;
  };

  explicit OpTracker(Transport* transport) : transport_(transport) {}
  // Cancels what is still in flight and waits for every callback.
  ~OpTracker() { CancelAll(); }
  OpTracker(const OpTracker&) = delete;
  OpTracker& operator=(const OpTracker&) = delete;

  void Send(Transport::EndpointId endpoint, uint64_t tag, const void* data, uint64_t length,
            Cookie cookie) {
    const uint64_t serial = Begin();
    Track(serial, transport_->Send(endpoint, tag, data, length, Callback(serial, cookie)), endpoint);
  }
  void Recv(uint64_t tag, void* buffer, uint64_t capacity, Cookie cookie) {
    const uint64_t serial = Begin();
    Track(serial, transport_->Recv(tag, buffer, capacity, Callback(serial, cookie)), 0);
  }

  // The next completion, or nullopt at `deadline`.
  std::optional<Event> Next(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(state_->mu);
    if (!state_->cv.wait_until(lock, deadline, [&] { return !state_->events.empty(); })) {
      return std::nullopt;
    }
    Event e = std::move(state_->events.front());
    state_->events.pop_front();
    return e;
  }

  int outstanding() const {
    std::lock_guard lock(state_->mu);
    return state_->outstanding;
  }

  // The endpoints of sends still in flight.
  std::set<Transport::EndpointId> SendEndpoints() const {
    std::lock_guard lock(state_->mu);
    std::set<Transport::EndpointId> eps;
    for (const auto& [serial, live] : state_->live) {
      if (live.endpoint != 0) eps.insert(live.endpoint);
    }
    return eps;
  }

  // Cancels what can be cancelled (unmatched receives) and waits until
  // every callback ran or `deadline`; false at the deadline (sends UCX
  // cannot cancel are still in flight).
  bool CancelAndWait(std::chrono::steady_clock::time_point deadline) {
    std::vector<Transport::OpId> ops;
    {
      std::lock_guard lock(state_->mu);
      for (const auto& [serial, live] : state_->live) ops.push_back(live.op);
    }
    for (Transport::OpId op : ops) transport_->Cancel(op);
    std::unique_lock lock(state_->mu);
    const bool done =
        state_->cv.wait_until(lock, deadline, [&] { return state_->outstanding == 0; });
    if (done) state_->events.clear();
    return done;
  }

  // Cancels every operation in flight and waits until each callback ran.
  void CancelAll() {
    std::vector<Transport::OpId> ops;
    {
      std::lock_guard lock(state_->mu);
      for (const auto& [serial, live] : state_->live) ops.push_back(live.op);
    }
    for (Transport::OpId op : ops) transport_->Cancel(op);
    std::unique_lock lock(state_->mu);
    state_->cv.wait(lock, [&] { return state_->outstanding == 0; });
    state_->events.clear();
  }

 private:
  struct Live {
    Transport::OpId op = 0;
    Transport::EndpointId endpoint = 0;  // sends; 0 for receives
  };
  struct State {
    mutable std::mutex mu;
    std::condition_variable cv;
    std::deque<Event> events;
    std::map<uint64_t, Live> live;  // serial -> op, until it completes
    std::map<uint64_t, bool> finished_early;   // completed before Track saw its op id
    uint64_t next_serial = 1;
    int outstanding = 0;
  };

  uint64_t Begin() {
    std::lock_guard lock(state_->mu);
    ++state_->outstanding;
    return state_->next_serial++;
  }
  Transport::Done Callback(uint64_t serial, Cookie cookie) {
    return [state = state_, serial, cookie](Status status, uint64_t bytes) {
      std::lock_guard lock(state->mu);
      if (state->live.erase(serial) == 0) state->finished_early[serial] = true;
      state->events.push_back({cookie, std::move(status), bytes});
      --state->outstanding;
      state->cv.notify_all();
    };
  }
  void Track(uint64_t serial, Transport::OpId op, Transport::EndpointId endpoint) {
    std::lock_guard lock(state_->mu);
    if (state_->finished_early.erase(serial) == 0) state_->live[serial] = {op, endpoint};
  }

  Transport* const transport_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Endpoints of one round or transfer, taken from a shared idle pool and
// given back when the transfer succeeded. Closing an endpoint right after a
// send completed can cancel the peer's receive of it (UCX reports a send
// done once the buffer is free, not once it was received), so endpoints
// are not closed after success. After a failure, those with a send stuck in
// flight are closed: that is the only way to end a send UCX cannot cancel (a
// rendezvous whose receiver gave up); Disconnect() before the OpTracker
// waits for its operations. The others are healthy and go back: closing one
// fails the peer's endpoint paired with it (transport.h), and with it
// whatever the peer was doing on it.
// An endpoint whose peer failed (Transport::Failed: a restarted or vanished
// peer resets it) is never pooled nor handed out again: every send on it
// would fail at once, and every later round with it.
// Declare this after the OpTracker (so it is destroyed first).
class EndpointPool {
 public:
  explicit EndpointPool(Transport* transport) : transport_(transport) {}
  ~EndpointPool() {
    for (auto& [address, eps] : idle_) {
      for (Transport::EndpointId ep : eps) transport_->Disconnect(ep);
    }
  }
  Result<Transport::EndpointId> Take(const std::string& address) {
    while (true) {
      Transport::EndpointId ep = 0;
      {
        std::lock_guard lock(mu_);
        auto it = idle_.find(address);
        if (it == idle_.end() || it->second.empty()) break;
        ep = it->second.back();
        it->second.pop_back();
      }
      if (!transport_->Failed(ep)) return ep;
      transport_->Disconnect(ep);  // failed while idle
    }
    return transport_->Connect(address);
  }
  void Give(const std::string& address, Transport::EndpointId ep) {
    if (transport_->Failed(ep)) {
      transport_->Disconnect(ep);
      return;
    }
    std::lock_guard lock(mu_);
    idle_[address].push_back(ep);
  }
  // Closes the idle endpoints to `address` (its worker is gone).
  void Forget(const std::string& address) {
    std::vector<Transport::EndpointId> eps;
    {
      std::lock_guard lock(mu_);
      auto it = idle_.find(address);
      if (it == idle_.end()) return;
      eps = std::move(it->second);
      idle_.erase(it);
    }
    for (Transport::EndpointId ep : eps) transport_->Disconnect(ep);
  }

 private:
  Transport* const transport_;
  std::mutex mu_;
  std::map<std::string, std::vector<Transport::EndpointId>> idle_;  // guarded by mu_
};

class ScopedEndpoints {
 public:
  ScopedEndpoints(Transport* transport, EndpointPool* pool) : transport_(transport), pool_(pool) {}
  // Gives back the endpoints Disconnect() did not close.
  ~ScopedEndpoints() {
    for (auto& [address, ep] : endpoints_) pool_->Give(address, ep);
  }
  ScopedEndpoints(const ScopedEndpoints&) = delete;
  ScopedEndpoints& operator=(const ScopedEndpoints&) = delete;

  Result<Transport::EndpointId> Connect(const std::string& address) {
    HOLDFAST_ASSIGN_OR_RETURN(Transport::EndpointId ep, pool_->Take(address));
    endpoints_.emplace_back(address, ep);
    return ep;
  }
  // Closes these of this transfer's endpoints; the others go back to the
  // pool as usual.
  void Disconnect(const std::set<Transport::EndpointId>& which) {
    std::erase_if(endpoints_, [&](const std::pair<std::string, Transport::EndpointId>& e) {
      if (!which.count(e.second)) return false;
      transport_->Disconnect(e.second);
      return true;
    });
  }

 private:
  Transport* const transport_;
  EndpointPool* const pool_;
  std::vector<std::pair<std::string, Transport::EndpointId>> endpoints_;
};

// A member's data buffer: its rank segments in rank order, as one range.
struct BufferPart {
  uint8_t* data = nullptr;
  uint64_t bytes = 0;
};

class DataBuffer {
 public:
  DataBuffer() = default;
  explicit DataBuffer(std::vector<BufferPart> parts) : parts_(std::move(parts)) {
    for (const BufferPart& p : parts_) {
      starts_.push_back(total_);
      total_ += p.bytes;
    }
  }
  uint64_t bytes() const { return total_; }

  // [offset, offset + length) as one pointer: into a part when it lies in
  // one, else gathered into `bounce`.
  const uint8_t* Gather(uint64_t offset, uint64_t length, std::vector<uint8_t>* bounce) const {
    const size_t i = PartOf(offset);
    if (i < parts_.size() && offset - starts_[i] + length <= parts_[i].bytes) {
      return parts_[i].data + (offset - starts_[i]);
    }
    bounce->resize(length);
    Copy(offset, length, bounce->data(), /*to_buffer=*/false);
    return bounce->data();
  }
  // Writes [src, src + length) at `offset`.
  void Scatter(uint64_t offset, const uint8_t* src, uint64_t length) const {
    Copy(offset, length, const_cast<uint8_t*>(src), /*to_buffer=*/true);
  }

 private:
  size_t PartOf(uint64_t offset) const {
    size_t i = 0;
    while (i + 1 < starts_.size() && starts_[i + 1] <= offset) ++i;
    return i;
  }
  void Copy(uint64_t offset, uint64_t length, uint8_t* other, bool to_buffer) const {
    size_t i = PartOf(offset);
    uint64_t done = 0;
    while (done < length && i < parts_.size()) {
      const uint64_t in_part = offset + done - starts_[i];
      const uint64_t n = std::min(length - done, parts_[i].bytes - in_part);
      if (to_buffer) {
        std::memcpy(parts_[i].data + in_part, other + done, n);
      } else {
        std::memcpy(other + done, parts_[i].data + in_part, n);
      }
      done += n;
      ++i;
    }
  }

  std::vector<BufferPart> parts_;
  std::vector<uint64_t> starts_;
  uint64_t total_ = 0;
};

// Ends a failed transfer without disturbing live peers. Closing an
// endpoint to a live peer can cancel its other transfers from us, so:
//   1. sink receives absorb every window this side still expected (`missing`
//      tags; a peer's rendezvous send only completes once received),
//   2. this side's own operations are cancelled where UCX can (receives) and
//      awaited for `grace` (its sends complete once the peer drains them),
//   3. only sends still stuck after that (the peer is gone, or dropped
//      them) are ended by closing their endpoints; the rest go back to the
//      pool,
//   4. the sinks are cancelled.
inline void DrainFailedTransfer(Transport* transport, OpTracker& ops, ScopedEndpoints& endpoints,
                                const std::vector<uint64_t>& missing, uint64_t capacity,
                                std::chrono::milliseconds grace) {
  OpTracker sinks(transport);
  std::vector<uint8_t> scratch(capacity);  // garbage by design: never read
  for (uint64_t tag : missing) sinks.Recv(tag, scratch.data(), capacity, 0);
  if (!ops.CancelAndWait(std::chrono::steady_clock::now() + grace)) {
    endpoints.Disconnect(ops.SendEndpoints());
    ops.CancelAll();
  }
  sinks.CancelAll();
}

// ceil(length / window) for window > 0, without the wrap of length + window - 1
// for a window near 2^64 (window_bytes comes from the peer's request).
inline uint64_t Windows(uint64_t length, uint64_t window) {
  return length / window + (length % window != 0 ? 1 : 0);
}

}  // namespace holdfast::smp::protect_internal

#endif  // HOLDFAST_SMP_PROTECT_DATA_PATH_H_
