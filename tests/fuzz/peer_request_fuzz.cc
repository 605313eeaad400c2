// Fuzz target: Peer service requests (proto/holdfast/v1/peer.proto) as a
// peer sends them, parsed as gRPC parses them and checked as holdfastd
// checks them before acting (smp/protect/peer_requests.h).
//
// Input: one byte choosing the request type, then the serialized request.
// This node is at position kPosition of a fixed group (kGroup). After a
// request passes its checks, the target computes what the handler computes
// from it (chunk extents, transfer windows) and aborts if any of it falls
// outside the buffers it names: that is the memory the daemon would send.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "catalog/batch_validation.h"
#include "holdfast/ec/layout.h"
#include "holdfast/v1/peer.pb.h"
#include "protect/data_path.h"
#include "protect/peer_requests.h"

namespace {

using namespace holdfast;
using namespace holdfast::smp;
using protect_internal::Windows;

const std::vector<std::string> kGroup = {"node-a", "node-b", "node-c", "node-d", "node-e", "node-f"};
constexpr int kPosition = 2;  // node-c

// HOLDFAST_FUZZ_VERBOSE=1: print each check's outcome (for checking seeds).
const bool verbose = std::getenv("HOLDFAST_FUZZ_VERBOSE") != nullptr;

void Report(const char* what, const Status& s) {
  if (verbose) std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
}

void Check(bool ok) {
  if (!ok) std::abort();
}

// The windows a transfer of `length` bytes takes must cover it, each window
// inside it (member_roles.cc sends min(window, length - w * window) at w * window).
void CheckWindows(uint64_t length, uint64_t window) {
  const uint64_t windows = Windows(length, window);
  const unsigned __int128 covered = static_cast<unsigned __int128>(windows) * window;
  Check(covered >= length);
  if (windows > 0) Check(static_cast<unsigned __int128>(windows - 1) * window < length);
}

// Every extent this node reads for a chunk lies inside its own buffers.
void CheckExtent(const ec::GroupLayout& layout, int stripe, int chunk, int position) {
  const ec::Extent e = layout.ChunkExtent(stripe, chunk);
  Check(e.node == position);
  const uint64_t limit = e.buffer == ec::Extent::Buffer::kData ? layout.data_bytes(position)
                                                               : layout.parity_bytes(position);
  Check(e.offset <= limit && e.length <= limit - e.offset);
}

void Protect(const v1::ProtectRequest& req) {
  auto layout = CheckProtectRequest(req, kGroup, kPosition);
  Report("protect", layout.status());
  if (!layout.ok()) return;
  // RunRoles: data chunks this member sends, parity it encodes.
  const uint64_t window = std::max<uint64_t>(req.window_bytes(), 4096);
  for (int r = 0; r < layout->n(); ++r) {
    const int c = layout->ChunkOf(r, kPosition);
    Check(c >= 0 && c < layout->n() && layout->NodeOf(r, c) == kPosition);
    CheckExtent(*layout, r, c, kPosition);
    CheckWindows(layout->ChunkExtent(r, c).length, window);
  }
}

void Conclude(const v1::ConcludeRequest& req) {
  const Status checked = CheckConcludeRequest(req, kPosition);
  Report("conclude", checked);
  if (!checked.ok() || !req.protected_()) return;
  // RecordProtected then writes the manifest to the catalog.
  CatalogBatch batch;
  batch.put_protections.push_back(req.manifest());
  batch.put_protections.back().set_position(kPosition);
  Report("conclude catalog batch", catalog_internal::ValidateBatch(batch));
}

// The protection records this node might hold when a ReadChunks arrives.
v1::ProtectionRecord HeldRecord(int which) {
  v1::ProtectionRecord rec;
  const int k = which == 0 ? 4 : which == 1 ? 1 : 3;
  const int m = which == 0 ? 2 : which == 1 ? 5 : 3;
  rec.set_k(k);
  rec.set_m(m);
  rec.set_replicate(which == 1);
  rec.set_alignment(4096);
  for (int p = 0; p < k + m; ++p) {
    auto* member = rec.add_members();
    member->set_node_id(kGroup[p]);
    member->set_data_bytes(which == 2 ? 0 : uint64_t{1} << (12 + p));
  }
  rec.mutable_chunk_crcs()->Resize((k + m) * (k + m), 0);
  return rec;
}

void ReadChunks(const v1::ReadChunksRequest& req) {
  const v1::ProtectionRecord held = HeldRecord(static_cast<int>(req.transfer_id() % 3));
  auto layout = CheckProtectionRecord(held, kPosition, "held");
  Check(layout.ok());
  const Status checked = CheckChunkRefs(req, *layout, kPosition);
  Report("read chunks", checked);
  if (!checked.ok()) return;
  const uint64_t window = std::max<uint64_t>(req.window_bytes(), 4096);
  for (const v1::ChunkRef& ref : req.chunks()) {
    CheckExtent(*layout, ref.stripe(), ref.chunk(), kPosition);
    CheckWindows(layout->ChunkExtent(ref.stripe(), ref.chunk()).length, window);
  }
}

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message* message) {
  return message->ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t kind = data[0] % 7;
  ++data;
  --size;
  switch (kind) {
    case 0: {
      v1::HelloRequest req;  // checked by equality with this node's identity
      (void)Parse(data, size, &req);
      break;
    }
    case 1: {
      v1::GroupStateRequest req;  // from_node (CheckCaller) and a job id to look up
      (void)Parse(data, size, &req);
      break;
    }
    case 2: {
      v1::ProtectRequest req;
      if (Parse(data, size, &req)) Protect(req);
      break;
    }
    case 3: {
      v1::ConcludeRequest req;
      if (Parse(data, size, &req)) Conclude(req);
      break;
    }
    case 4: {
      v1::GetManifestRequest req;  // a lookup by job and step
      (void)Parse(data, size, &req);
      break;
    }
    case 5: {
      v1::ReadChunksRequest req;
      if (Parse(data, size, &req)) ReadChunks(req);
      break;
    }
    case 6: {
      v1::VerifyChunksRequest req;  // a lookup by job and step
      (void)Parse(data, size, &req);
      break;
    }
  }
  return 0;
}
