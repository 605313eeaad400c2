// The checks holdfastd makes on Peer service requests before acting on them
// (docs/cluster.md): pure functions of the request and of what this node
// knows, so that they can be unit-tested and fuzzed (tests/fuzz/) without a
// cluster. A peer passed CheckCaller (it is in the cluster file) but is not
// otherwise trusted: a wrong request must get INVALID_ARGUMENT, never an
// out-of-range index or an overflow.
//
// Thread-safety: pure functions.
#ifndef HOLDFAST_SMP_PROTECT_PEER_REQUESTS_H_
#define HOLDFAST_SMP_PROTECT_PEER_REQUESTS_H_

#include <span>
#include <string>

#include "holdfast/ec/layout.h"
#include "holdfast/ec/status.h"
#include "holdfast/v1/peer.pb.h"

namespace holdfast::smp {

// Protect: the request's group (member_nodes) must be this node's group,
// `group_ids` by position, with this node at `position`; k, m, alignment and
// one size per member must make a valid layout. Returns that layout.
Result<ec::GroupLayout> CheckProtectRequest(const v1::ProtectRequest& req,
                                            std::span<const std::string> group_ids, int position);

// The layout of a protection record (a Conclude manifest, or a record held
// here): k, m, alignment and one member per position must make a valid
// layout, chunk_crcs must hold n * n values, and `position` must be in the
// group. Errors name `what`.
Result<ec::GroupLayout> CheckProtectionRecord(const v1::ProtectionRecord& record, int position,
                                              const std::string& what);

// Conclude: a protected round's manifest must be for the request's job and
// step and pass CheckProtectionRecord. An abandoned round needs nothing.
Status CheckConcludeRequest(const v1::ConcludeRequest& req, int position);

// ReadChunks: every chunk reference must name a stripe and chunk in
// [0, n) held at `position` under `layout` (the record this node holds).
Status CheckChunkRefs(const v1::ReadChunksRequest& req, const ec::GroupLayout& layout,
                      int position);

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_PROTECT_PEER_REQUESTS_H_
