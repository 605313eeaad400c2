#include "protect/peer_requests.h"

#include <string>
#include <vector>

namespace holdfast::smp {

Result<ec::GroupLayout> CheckProtectRequest(const v1::ProtectRequest& req,
                                            std::span<const std::string> group_ids, int position) {
  // The layout first: it checks k and m before anything adds them.
  const std::vector<uint64_t> sizes(req.data_bytes().begin(), req.data_bytes().end());
  auto layout = ec::GroupLayout::Create({.k = req.k(), .m = req.m(), .alignment = req.alignment()},
                                        sizes);
  if (!layout.ok()) return layout.status().WithContext("protect request");
  const int n = layout->n();
  bool same_group = req.member_nodes_size() == n && group_ids.size() == static_cast<size_t>(n) &&
                    position >= 0 && position < n;
  for (int p = 0; same_group && p < n; ++p) same_group = req.member_nodes(p) == group_ids[p];
  if (!same_group) {
    return Status::InvalidArgument("protect request does not match this node's group");
  }
  return layout;
}

Result<ec::GroupLayout> CheckProtectionRecord(const v1::ProtectionRecord& record, int position,
                                              const std::string& what) {
  std::vector<uint64_t> sizes;
  sizes.reserve(static_cast<size_t>(record.members_size()));
  for (const auto& member : record.members()) sizes.push_back(member.data_bytes());
  auto layout = ec::GroupLayout::Create(
      {.k = record.k(), .m = record.m(), .alignment = record.alignment()}, sizes);
  if (!layout.ok()) return layout.status().WithContext(what);
  const int n = layout->n();
  if (record.chunk_crcs_size() != n * n) {
    return Status::InvalidArgument(what + ": " + std::to_string(record.chunk_crcs_size()) +
                                   " chunk checksums for a group of " + std::to_string(n));
  }
  if (position < 0 || position >= n) {
    return Status::InvalidArgument(what + ": position " + std::to_string(position) +
                                   " is not in a group of " + std::to_string(n));
  }
  return layout;
}

Status CheckConcludeRequest(const v1::ConcludeRequest& req, int position) {
  if (!req.protected_()) return Status::Ok();
  const v1::ProtectionRecord& manifest = req.manifest();
  if (manifest.job_id() != req.job_id() || manifest.step() != req.step()) {
    return Status::InvalidArgument("conclude request: the manifest is not for job " +
                                   req.job_id() + " step " + std::to_string(req.step()));
  }
  return CheckProtectionRecord(manifest, position, "conclude request manifest").status();
}

Status CheckChunkRefs(const v1::ReadChunksRequest& req, const ec::GroupLayout& layout,
                      int position) {
  const int n = layout.n();
  for (const v1::ChunkRef& ref : req.chunks()) {
    // Both in [0, n) before NodeOf adds them.
    if (ref.stripe() < 0 || ref.stripe() >= n || ref.chunk() < 0 || ref.chunk() >= n ||
        layout.NodeOf(ref.stripe(), ref.chunk()) != position) {
      return Status::InvalidArgument("chunk " + std::to_string(ref.chunk()) + " of stripe " +
                                     std::to_string(ref.stripe()) + " is not held here");
    }
  }
  return Status::Ok();
}

}  // namespace holdfast::smp
