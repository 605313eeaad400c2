// The data path between holdfastd peers: one UCX (ucp) context and worker
// per daemon, driven by one progress thread, with tagged sends and receives
// of byte ranges (docs/cluster.md, "Peers").
//
// Why tags: over tcp (these machines) UCX emulates RMA put at ~0.15 GB/s,
// while tagged messages reach the wire limit (~2.3 GB/s); with RDMA the same
// calls use zero-copy rendezvous. No code change between the two.
//
// Matching: a receive matches exactly one message with the same 64-bit tag
// from any peer; the protocol makes tags unique (round id | stripe | chunk |
// window), so a message can only land in the buffer posted for it. A send
// may be posted before the matching receive: UCX keeps it as unexpected
// (large messages use rendezvous, so their bytes move only once matched).
//
// Failures: endpoints use peer error handling, so a send to a peer that died
// completes with UNAVAILABLE instead of hanging. A receive from a dead peer
// never completes by itself: its owner cancels it (Cancel) after a deadline.
// A receive matched by a message that arrived on an endpoint this side had
// already closed completes with UNAVAILABLE (UCX drops such a message).
//
// Threading: every method is safe to call from any thread. Completion
// callbacks run on the progress thread, never inside the calling method;
// they must be short and must not block (post real work elsewhere). They may
// call Send/Recv/Cancel. The progress thread sleeps in epoll when nothing is
// in flight (no busy polling on a 2-core machine).
#ifndef HOLDFAST_SMP_TRANSPORT_TRANSPORT_H_
#define HOLDFAST_SMP_TRANSPORT_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "holdfast/ec/status.h"

namespace holdfast::smp {

struct TransportOptions {
  // Written into UCX's environment before the context is created when
  // non-empty (UCX_TLS, UCX_NET_DEVICES); empty: UCX's own defaults or the
  // caller's environment.
  std::string tls;
  std::string net_devices;
};

// Counters since creation (for status and benchmarks).
struct TransportStats {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t sends_failed = 0;
  uint64_t cancelled = 0;
};

class Transport {
 public:
  using EndpointId = uint32_t;  // 0 is never a valid endpoint
  using OpId = uint64_t;        // 0 is never a valid operation
  // `bytes`: the received message's length (receives) or the bytes sent.
  using Done = std::function<void(Status status, uint64_t bytes)>;

  // Creates the context and worker and starts the progress thread.
  // UNAVAILABLE with UCX's message when UCX cannot initialise.
  static Result<std::unique_ptr<Transport>> Create(const TransportOptions& options);

  // Cancels every operation still in flight (their callbacks run with
  // CANCELLED before the destructor returns), closes endpoints, stops the
  // progress thread, releases the worker and context.
  virtual ~Transport() = default;

  // This worker's address (opaque bytes), for peers to Connect to.
  virtual const std::string& address() const = 0;

  // An endpoint to the worker whose address is `worker_address`.
  // INVALID_ARGUMENT for an address UCX rejects. Connecting twice to the same
  // address gives two endpoints; callers keep one per peer incarnation.
  virtual Result<EndpointId> Connect(const std::string& worker_address) = 0;
  // Closes an endpoint; its sends still in flight complete with CANCELLED.
  // The peer's endpoint paired with it (UCX pairs the endpoints two workers
  // open to each other) fails too, within milliseconds or at the next
  // keepalive (1 s): the close is always forced, because a graceful one
  // would leave the peer's end a zombie that silently drops rendezvous.
  virtual void Disconnect(EndpointId endpoint) = 0;
  // True once UCX reported the endpoint's peer failed (reset, timeout): the
  // endpoint is dead for good, every later send on it fails at once; its
  // owner should Disconnect it and Connect again. False for a live endpoint,
  // and for one already disconnected (its id is forgotten).
  virtual bool Failed(EndpointId endpoint) const = 0;

  // Sends [data, data + length) with `tag`. `data` must stay valid and
  // unchanged until `done` runs. Returns the operation's id (for Cancel).
  // Errors (unknown endpoint, peer gone) are reported through `done`.
  // length may be 0.
  virtual OpId Send(EndpointId endpoint, uint64_t tag, const void* data, uint64_t length,
                    Done done) = 0;

  // Receives the message tagged exactly `tag` into [buffer, buffer +
  // capacity). A longer message completes with INVALID_ARGUMENT (truncated);
  // a shorter one reports its length.
  virtual OpId Recv(uint64_t tag, void* buffer, uint64_t capacity, Done done) = 0;

  // Cancels an operation still in flight: its `done` runs with CANCELLED
  // (on the progress thread, possibly before Cancel returns on another
  // thread). No effect if it already completed.
  virtual void Cancel(OpId op) = 0;

  virtual TransportStats stats() const = 0;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_TRANSPORT_TRANSPORT_H_
