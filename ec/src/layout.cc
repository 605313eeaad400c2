#include "holdfast/ec/layout.h"

#include <algorithm>
#include <bit>
#include <string>

namespace holdfast::ec {

Result<GroupLayout> GroupLayout::Create(const LayoutOptions& options,
                                        std::span<const uint64_t> node_bytes) {
  const int k = options.k;
  const int m = options.m;
  HOLDFAST_RETURN_IF_ERROR(CheckCodeParameters(k, m));
  const uint64_t align = options.alignment;
  if (align == 0 || !std::has_single_bit(align)) {
    return Status::InvalidArgument("alignment must be a power of two, got " +
                                   std::to_string(align));
  }
  const int n = k + m;
  if (node_bytes.size() != static_cast<size_t>(n)) {
    return Status::InvalidArgument("a " + std::to_string(k) + "+" + std::to_string(m) +
                                   " group has " + std::to_string(n) + " nodes, got sizes for " +
                                   std::to_string(node_bytes.size()));
  }

  GroupLayout layout;
  layout.k_ = k;
  layout.m_ = m;
  layout.node_bytes_.assign(node_bytes.begin(), node_bytes.end());
  layout.piece_bytes_.resize(n);
  for (int i = 0; i < n; ++i) {
    const uint64_t s = node_bytes[i];
    const uint64_t per_piece = s / k + (s % k != 0);  // ceil without overflow
    // Round up to the alignment; cannot overflow for any realistic size, but
    // guard anyway since sizes can come from the wire.
    if (per_piece > UINT64_MAX - (align - 1)) {
      return Status::InvalidArgument("node " + std::to_string(i) + " size overflows");
    }
    layout.piece_bytes_[i] = (per_piece + align - 1) & ~(align - 1);
    // Every piece offset (up to k * piece) must be representable.
    if (layout.piece_bytes_[i] > UINT64_MAX / static_cast<uint64_t>(k)) {
      return Status::InvalidArgument("node " + std::to_string(i) + " size " + std::to_string(s) +
                                     " overflows piece offsets at alignment " +
                                     std::to_string(align));
    }
  }

  layout.chunk_length_.assign(n, 0);
  for (int r = 0; r < n; ++r) {
    uint64_t longest = 0;
    for (int c = 0; c < k; ++c) longest = std::max(longest, layout.ChunkExtent(r, c).length);
    layout.chunk_length_[r] = longest;
  }

  // Node i holds parity p of stripe (i - k - p) mod n, laid out by p.
  layout.parity_bytes_.assign(n, 0);
  layout.parity_offset_.assign(static_cast<size_t>(n) * m, 0);
  for (int i = 0; i < n; ++i) {
    uint64_t offset = 0;
    for (int p = 0; p < m; ++p) {
      const int stripe = ((i - k - p) % n + n) % n;
      layout.parity_offset_[static_cast<size_t>(stripe) * m + p] = offset;
      if (layout.chunk_length_[stripe] > UINT64_MAX - offset) {
        return Status::InvalidArgument("node " + std::to_string(i) +
                                       "'s parity buffer size overflows 64 bits");
      }
      offset += layout.chunk_length_[stripe];
    }
    layout.parity_bytes_[i] = offset;
  }
  return layout;
}

Extent GroupLayout::ChunkExtent(int stripe, int chunk) const {
  const int node = NodeOf(stripe, chunk);
  if (chunk < k_) {
    const uint64_t piece = piece_bytes_[node];
    const uint64_t size = node_bytes_[node];
    const uint64_t begin = std::min(size, piece * static_cast<uint64_t>(chunk));
    const uint64_t end = begin + std::min(piece, size - begin);
    return {node, Extent::Buffer::kData, begin, end - begin};
  }
  const int p = chunk - k_;
  return {node, Extent::Buffer::kParity, parity_offset_[static_cast<size_t>(stripe) * m_ + p],
          chunk_length_[stripe]};
}

Result<std::vector<StripeRebuild>> GroupLayout::PlanRebuild(NodeMask lost_nodes) const {
  const NodeMask all = AllChunks(n());
  if (lost_nodes & ~all) {
    return Status::InvalidArgument("lost nodes " + MaskToString(lost_nodes & ~all) +
                                   " are not in a group of " + std::to_string(n()));
  }
  if (std::popcount(lost_nodes) > m_) {
    return Status::DataLoss("lost nodes " + MaskToString(lost_nodes) + ": " +
                            std::to_string(std::popcount(lost_nodes)) + " lost, a " +
                            std::to_string(k_) + "+" + std::to_string(m_) + " group tolerates " +
                            std::to_string(m_));
  }
  std::vector<StripeRebuild> plan;
  for (int r = 0; r < n(); ++r) {
    ChunkMask lost = 0;
    for (NodeMask l = lost_nodes; l != 0; l &= l - 1) {
      lost |= ChunkBit(ChunkOf(r, std::countr_zero(l)));
    }
    if (lost == 0) continue;
    plan.push_back({r, lost, LowestChunks(AllChunks(n()) & ~lost, k_)});
  }
  return plan;
}

}  // namespace holdfast::ec
