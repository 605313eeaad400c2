// Internal: the overlap rule shared by Codec and StripeCoder.
#ifndef HOLDFAST_EC_SRC_OVERLAP_H_
#define HOLDFAST_EC_SRC_OVERLAP_H_

#include <cstdint>
#include <span>

#include "holdfast/ec/status.h"

namespace holdfast::ec::internal {

struct Range {
  uintptr_t begin;
  uintptr_t end;  // exclusive; begin == end is an empty range that overlaps nothing
  bool output;
  int chunk;
};

// OK unless an output range overlaps another range (input or output). Inputs
// may alias each other: they are only read. Reorders `ranges`. Callers keep
// the ranges on the stack (at most kMaxChunks): this runs on every coding
// call, and small windows must not pay for allocations.
Status CheckNoOverlap(std::span<Range> ranges);

}  // namespace holdfast::ec::internal

#endif  // HOLDFAST_EC_SRC_OVERLAP_H_
