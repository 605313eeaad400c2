// Chunk checksums: CRC-64/ECMA-182, reflected (ISA-L crc64_ecma_refl).
//
// Every chunk holdfast stores or moves carries one. The function chains:
// Checksum(b, Checksum(a)) == Checksum(a || b), so a pipeline can checksum a
// chunk piece by piece as the pieces arrive. ChecksumCombine joins the
// checksums of pieces computed independently (on several threads):
// ChecksumCombine(Checksum(a), Checksum(b), |b|) == Checksum(a || b).
//
// Thread-safety: pure functions.
#ifndef HOLDFAST_EC_CHECKSUM_H_
#define HOLDFAST_EC_CHECKSUM_H_

#include <cstdint>
#include <span>

namespace holdfast::ec {

uint64_t Checksum(std::span<const uint8_t> bytes, uint64_t seed = 0);

// The checksum of a || b from the checksum of a, the checksum of b (each
// computed with seed 0) and the length of b. Costs at most 64 small GF(2)
// matrix-vector products (one per set bit of `b_length`), well under a
// microsecond.
uint64_t ChecksumCombine(uint64_t checksum_a, uint64_t checksum_b, uint64_t b_length);

}  // namespace holdfast::ec

#endif  // HOLDFAST_EC_CHECKSUM_H_
