// An independent, deliberately slow reference for what ec/ computes: GF(2^8)
// arithmetic, the systematic Cauchy generator, encoding and decoding by
// matrix products, and a bitwise CRC-64. It shares no code with ec/ or ISA-L;
// the tests compare the library against it byte for byte.
//
// The field is GF(2)[x] / (x^8 + x^4 + x^3 + x^2 + 1), polynomial 0x11d (the
// one ISA-L uses), with 2 as the primitive element for the log tables.
//
// Thread-safety: pure functions; the tables are built once, thread-safely.
#ifndef HOLDFAST_TESTS_EC_GF_REFERENCE_H_
#define HOLDFAST_TESTS_EC_GF_REFERENCE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "holdfast/ec/codec.h"

namespace holdfast::ec::testutil {

inline constexpr unsigned kFieldPolynomial = 0x11d;

// Multiplication through the log / antilog tables.
uint8_t GfMul(uint8_t a, uint8_t b);
// Multiplicative inverse; a must not be 0.
uint8_t GfInv(uint8_t a);
// Multiplication by shift-and-add (carry-less, reduced by the polynomial): a
// second, table-free definition that the table version is checked against.
uint8_t GfMulSlow(uint8_t a, uint8_t b);

// Inverts the n x n row-major matrix `in` by Gauss-Jordan elimination.
// Returns false (and leaves `out` unspecified) when it is singular.
bool GfInvertMatrix(std::span<const uint8_t> in, int n, std::vector<uint8_t>* out);

// Row-major product of an (r x c) and a (c x q) matrix.
std::vector<uint8_t> GfMatMul(std::span<const uint8_t> a, std::span<const uint8_t> b, int r, int c,
                              int q);

// The (k + m) x k systematic generator: identity on rows 0..k-1, and row i,
// column j = GfInv(i ^ j) for rows k..k+m-1.
std::vector<uint8_t> CauchyGenerator(int k, int m);

// parity[p][b] = sum_j generator[(k + p) * k + j] * data[j][b].
void RefEncode(std::span<const uint8_t> generator, int k, int m,
               std::span<const uint8_t* const> data, std::span<uint8_t* const> parity, size_t len);

// RefEncode for a stripe whose data chunks may be shorter than chunk_length
// (zero padded, see layout.h); returns the m parity chunks.
std::vector<std::vector<uint8_t>> RefEncodePadded(std::span<const uint8_t> generator, int k, int m,
                                                  std::span<const std::span<const uint8_t>> data,
                                                  size_t chunk_length);

// Rebuilds the chunks in `lost` from the lowest k chunks of `available` by
// inverting the generator's survivor rows. Returns false when fewer than k
// chunks are available or the survivor matrix is singular.
bool RefDecode(std::span<const uint8_t> generator, int k, int m, std::span<uint8_t* const> chunks,
               ChunkMask available, ChunkMask lost, size_t len);

// CRC-64/ECMA-182 in reflected form, one bit at a time (reflected polynomial
// 0xC96C5795D7870F42). Like ISA-L's crc64_ecma_refl, the register starts at
// ~seed and the result is complemented, so seed 0 gives CRC-64/XZ and a
// previous result can be passed as the seed to continue a computation.
uint64_t RefCrc64(std::span<const uint8_t> bytes, uint64_t seed = 0);

}  // namespace holdfast::ec::testutil

#endif  // HOLDFAST_TESTS_EC_GF_REFERENCE_H_
