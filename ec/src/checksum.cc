#include "holdfast/ec/checksum.h"

#include <isa-l/crc64.h>

#include <array>

namespace holdfast::ec {
namespace {

// CRC-64/ECMA-182 polynomial, bit-reflected (as crc64_ecma_refl uses it).
constexpr uint64_t kPolyReflected = 0xC96C5795D7870F42ull;

// A linear map on the 64-bit CRC register over GF(2): column i is the image
// of bit i.
using Matrix = std::array<uint64_t, 64>;

uint64_t Apply(const Matrix& m, uint64_t v) {
  uint64_t out = 0;
  for (int i = 0; v != 0; ++i, v >>= 1) {
    if (v & 1) out ^= m[i];
  }
  return out;
}

Matrix Square(const Matrix& m) {
  Matrix out;
  for (int i = 0; i < 64; ++i) out[i] = Apply(m, m[i]);
  return out;
}

// shifts[j]: the register after feeding 2^j zero bytes. Appending zeros is
// linear in the register, and the pre/post inversion of the CRC cancels out
// in Combine (as in zlib's crc32_combine), so a || b is
// shift_|b|(crc(a)) ^ crc(b).
struct ZeroShifts {
  std::array<Matrix, 64> shifts;
  ZeroShifts() {
    Matrix one_bit;  // one zero bit through the reflected register
    one_bit[0] = kPolyReflected;
    for (int i = 1; i < 64; ++i) one_bit[i] = uint64_t{1} << (i - 1);
    Matrix m = Square(Square(Square(one_bit)));  // 8 bits: one zero byte
    for (int j = 0; j < 64; ++j) {
      shifts[j] = m;
      m = Square(m);
    }
  }
};

const ZeroShifts& Shifts() {
  static const ZeroShifts shifts;
  return shifts;
}

}  // namespace

uint64_t Checksum(std::span<const uint8_t> bytes, uint64_t seed) {
  if (bytes.empty()) return seed;
  // crc64_ecma_refl does not write through its pointer; the API is just not
  // const-correct.
  return crc64_ecma_refl(seed, const_cast<uint8_t*>(bytes.data()), bytes.size());
}

uint64_t ChecksumCombine(uint64_t checksum_a, uint64_t checksum_b, uint64_t b_length) {
  const ZeroShifts& z = Shifts();
  for (int j = 0; b_length != 0; ++j, b_length >>= 1) {
    if (b_length & 1) checksum_a = Apply(z.shifts[j], checksum_a);
  }
  return checksum_a ^ checksum_b;
}

}  // namespace holdfast::ec
