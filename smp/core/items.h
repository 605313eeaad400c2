// Validation and placement of the items of one rank's snapshot.
#ifndef HOLDFAST_SMP_CORE_ITEMS_H_
#define HOLDFAST_SMP_CORE_ITEMS_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "holdfast/ec/status.h"
#include "holdfast/v1/types.pb.h"

namespace holdfast::smp {

// Items start at multiples of this inside a segment (GPU copy engines and
// vector loads like 256-byte alignment; the waste is tiny).
inline constexpr uint64_t kItemAlignment = 256;
inline constexpr size_t kMaxItemNameBytes = 1024;
// Dimensions of one item (PyTorch allows 64) and ranks of a job on one node.
inline constexpr int kMaxShapeDims = 64;
inline constexpr int kMaxLocalRanks = 1024;

// Bytes per element, or 0 for DTYPE_BYTES / unknown.
uint64_t DTypeSize(v1::DType dtype);

// [A-Za-z0-9._-]{1,128}: job ids appear in logs, catalog keys and file names.
Status ValidateJobId(std::string_view job_id);

struct ItemPlacement {
  std::vector<uint64_t> offsets;  // per item, in request order
  uint64_t end = 0;               // bytes used (last item's end)
};

// Checks every item (non-empty unique names without NUL, at most
// kMaxItemNameBytes; a known dtype; at most kMaxShapeDims non-negative dims; nbytes equal to the
// product of the shape and the dtype size, without overflow; DTYPE_BYTES has
// an empty shape) and places them back to back at kItemAlignment.
// INVALID_ARGUMENT names the offending item; more than `max_items` items or a
// total above `max_bytes` is RESOURCE_EXHAUSTED.
Result<ItemPlacement> PlaceItems(const google::protobuf::RepeatedPtrField<v1::ItemSpec>& items,
                                 uint64_t max_items, uint64_t max_bytes);

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CORE_ITEMS_H_
