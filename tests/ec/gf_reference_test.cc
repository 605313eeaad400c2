// Tests of the reference itself: if the yardstick were wrong, every
// comparison against it would be meaningless. The field arithmetic is checked
// against a second, table-free definition, against the field axioms, and (as
// an outside opinion) against ISA-L's own gf_mul / gf_inv.
#include "gf_reference.h"

#include <gtest/gtest.h>
#include <isa-l/erasure_code.h>

#include <cstdint>
#include <vector>

#include "test_util.h"

namespace holdfast::ec::testutil {
namespace {

TEST(GfReferenceTest, TableMultiplyEqualsShiftAndAdd) {
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      ASSERT_EQ(GfMul(static_cast<uint8_t>(a), static_cast<uint8_t>(b)),
                GfMulSlow(static_cast<uint8_t>(a), static_cast<uint8_t>(b)))
          << a << " * " << b;
    }
  }
}

TEST(GfReferenceTest, FieldAxioms) {
  for (int a = 0; a < 256; ++a) {
    const auto x = static_cast<uint8_t>(a);
    EXPECT_EQ(GfMul(x, 1), x);
    EXPECT_EQ(GfMul(x, 0), 0);
    if (a != 0) {
      EXPECT_EQ(GfMul(x, GfInv(x)), 1) << a;
    }
  }
  Rng rng = TestRng();
  for (int i = 0; i < 20000; ++i) {
    const auto a = static_cast<uint8_t>(rng.Next());
    const auto b = static_cast<uint8_t>(rng.Next());
    const auto c = static_cast<uint8_t>(rng.Next());
    ASSERT_EQ(GfMul(a, b), GfMul(b, a));
    ASSERT_EQ(GfMul(GfMul(a, b), c), GfMul(a, GfMul(b, c)));
    ASSERT_EQ(GfMul(a, b ^ c), GfMul(a, b) ^ GfMul(a, c));
  }
  // 2 generates the multiplicative group: its powers visit all 255 non-zero
  // elements, which is what makes 0x11d primitive.
  std::vector<bool> seen(256, false);
  uint8_t x = 1;
  for (int i = 0; i < 255; ++i) {
    EXPECT_FALSE(seen[x]) << "2^" << i << " repeats";
    seen[x] = true;
    x = GfMul(x, 2);
  }
  EXPECT_EQ(x, 1);
}

TEST(GfReferenceTest, AgreesWithIsal) {
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      ASSERT_EQ(GfMul(static_cast<uint8_t>(a), static_cast<uint8_t>(b)),
                gf_mul(static_cast<unsigned char>(a), static_cast<unsigned char>(b)));
    }
    if (a != 0) {
      ASSERT_EQ(GfInv(static_cast<uint8_t>(a)), gf_inv(static_cast<unsigned char>(a)));
    }
  }
}

TEST(GfReferenceTest, InvertMatrixGivesTheIdentity) {
  Rng rng = TestRng();
  int singular = 0;
  for (int round = 0; round < 300; ++round) {
    const int n = rng.UniformInt(1, 12);
    std::vector<uint8_t> a = rng.Bytes(static_cast<size_t>(n) * n);
    std::vector<uint8_t> inv;
    if (!GfInvertMatrix(a, n, &inv)) {
      ++singular;
      continue;
    }
    std::vector<uint8_t> id(static_cast<size_t>(n) * n, 0);
    for (int i = 0; i < n; ++i) id[i * n + i] = 1;
    ASSERT_EQ(GfMatMul(a, inv, n, n, n), id) << "n " << n;
    ASSERT_EQ(GfMatMul(inv, a, n, n, n), id) << "n " << n;
  }
  EXPECT_LT(singular, 60);  // random matrices are rarely singular

  // A matrix with two equal rows is singular.
  std::vector<uint8_t> dup = {1, 2, 3, 4, 5, 6, 1, 2, 3};
  std::vector<uint8_t> inv;
  EXPECT_FALSE(GfInvertMatrix(dup, 3, &inv));
  std::vector<uint8_t> zero(4, 0);
  EXPECT_FALSE(GfInvertMatrix(zero, 2, &inv));
}

// The property codec.h relies on: every k x k submatrix of [I; C] formed by
// any k of its rows is invertible. Exhaustive for small codes.
TEST(GfReferenceTest, CauchyGeneratorIsMds) {
  for (auto [k, m] : {std::pair{2, 1}, std::pair{3, 3}, std::pair{4, 2}, std::pair{6, 4},
                      std::pair{8, 2}, std::pair{5, 8}}) {
    const std::vector<uint8_t> gen = CauchyGenerator(k, m);
    ForEachMask(k + m, k, k, [&](uint64_t rows) {
      std::vector<uint8_t> sub;
      for (int r = 0; r < k + m; ++r) {
        if (rows & (uint64_t{1} << r)) sub.insert(sub.end(), &gen[r * k], &gen[(r + 1) * k]);
      }
      std::vector<uint8_t> inv;
      ASSERT_TRUE(GfInvertMatrix(sub, k, &inv)) << "k " << k << " m " << m << " rows " << rows;
    });
  }
}

TEST(GfReferenceTest, RefDecodeUndoesRefEncode) {
  Rng rng = TestRng();
  const int k = 5;
  const int m = 3;
  const size_t len = 333;
  const std::vector<uint8_t> gen = CauchyGenerator(k, m);
  std::vector<std::vector<uint8_t>> chunks(k + m);
  for (int i = 0; i < k; ++i) chunks[i] = rng.Bytes(len);
  for (int i = k; i < k + m; ++i) chunks[i].assign(len, 0);
  std::vector<const uint8_t*> in;
  std::vector<uint8_t*> out;
  for (int i = 0; i < k; ++i) in.push_back(chunks[i].data());
  for (int i = k; i < k + m; ++i) out.push_back(chunks[i].data());
  RefEncode(gen, k, m, in, out, len);
  const std::vector<std::vector<uint8_t>> original = chunks;

  ForEachMask(k + m, 1, m, [&](uint64_t lost) {
    std::vector<std::vector<uint8_t>> work = original;
    std::vector<uint8_t*> ptrs;
    for (auto& c : work) ptrs.push_back(c.data());
    for (int i = 0; i < k + m; ++i) {
      if (lost & (uint64_t{1} << i)) work[i].assign(len, 0xEE);
    }
    ASSERT_TRUE(RefDecode(gen, k, m, ptrs, AllChunks(k + m) & ~lost, lost, len));
    ASSERT_EQ(work, original) << "lost " << MaskToString(lost);
  });
  std::vector<uint8_t*> ptrs;
  for (auto& c : chunks) ptrs.push_back(c.data());
  EXPECT_FALSE(RefDecode(gen, k, m, ptrs, AllChunks(k - 1), ChunkBit(k), len));
}

TEST(GfReferenceTest, Crc64SeedChains) {
  Rng rng = TestRng();
  const std::vector<uint8_t> buf = rng.Bytes(1000);
  const std::span<const uint8_t> all(buf);
  EXPECT_EQ(RefCrc64(all.subspan(377), RefCrc64(all.first(377))), RefCrc64(all));
}

}  // namespace
}  // namespace holdfast::ec::testutil
