// Chunk checksums: CRC-64/ECMA-182, reflected (ISA-L crc64_ecma_refl).
//
// Every chunk holdfast stores or moves carries one. The function chains:
// Checksum(b, Checksum(a)) == Checksum(a || b), so a pipeline can checksum a
// chunk piece by piece as the pieces arrive.
//
// Thread-safety: pure function.
#ifndef HOLDFAST_EC_CHECKSUM_H_
#define HOLDFAST_EC_CHECKSUM_H_

#include <cstdint>
#include <span>

namespace holdfast::ec {

uint64_t Checksum(std::span<const uint8_t> bytes, uint64_t seed = 0);

}  // namespace holdfast::ec

#endif  // HOLDFAST_EC_CHECKSUM_H_
