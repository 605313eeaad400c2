#include "holdfast/ec/checksum.h"

#include <isa-l/crc64.h>

namespace holdfast::ec {

uint64_t Checksum(std::span<const uint8_t> bytes, uint64_t seed) {
  if (bytes.empty()) return seed;
  // crc64_ecma_refl does not write through its pointer; the API is just not
  // const-correct.
  return crc64_ecma_refl(seed, const_cast<uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace holdfast::ec
