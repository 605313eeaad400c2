// The segments catalog_record_fuzz keeps in its segment directory, and their
// bytes, which the seed manifests (make_corpus.cc) describe item by item.
#ifndef HOLDFAST_TESTS_FUZZ_SEGMENT_FIXTURE_H_
#define HOLDFAST_TESTS_FUZZ_SEGMENT_FIXTURE_H_

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/segment_store.h"

namespace holdfast::fuzz {

inline constexpr char kSegmentPrefix[] = "fuzzseg";
inline constexpr uint64_t kSegmentBytes = 8192;
inline constexpr uint64_t kSegmentIds[] = {1, 2, 3, 4};

inline std::vector<uint8_t> FixtureBytes(uint64_t id) {
  std::vector<uint8_t> bytes(kSegmentBytes);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + id * 13);
  return bytes;
}

// Creates the fixture segments that are missing (Recover removes the ones no
// record names).
inline Status MakeFixtureSegments(const smp::SegmentStore& store) {
  for (uint64_t id : kSegmentIds) {
    auto seg = store.Create(id, kSegmentBytes);
    if (!seg.ok()) {
      if (seg.status().code() == StatusCode::kAlreadyExists) continue;
      return seg.status();
    }
    const std::vector<uint8_t> bytes = FixtureBytes(id);
    std::memcpy(seg->data(), bytes.data(), bytes.size());
  }
  return Status::Ok();
}

}  // namespace holdfast::fuzz

#endif  // HOLDFAST_TESTS_FUZZ_SEGMENT_FIXTURE_H_
