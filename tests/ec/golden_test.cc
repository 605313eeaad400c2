// Golden parity: fixed input, checked-in parity bytes and checksums. A build
// that changes the generator, the field or the byte order of coding fails
// here even if it still round-trips (and would no longer read old parity).
//
// The golden values were produced by the reference (gf_reference.cc), not by
// the code under test; ReferenceReproducesGolden keeps it that way. To
// regenerate after a deliberate format change:
//   holdfast_ec_golden_test --gtest_also_run_disabled_tests
//       --gtest_filter='*PrintGoldenHeader'
// and replace golden_parity.h with what it prints between gtest's lines.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gf_reference.h"
#include "golden_parity.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/ec/codec.h"
#include "test_util.h"

namespace holdfast::ec {
namespace {

using testutil::kGoldenChunkBytes;
using testutil::kGoldenParity;
using testutil::RefCrc64;

// The golden data chunks: a 32-bit LCG (Numerical Recipes constants),
// state = state * 1664525 + 1013904223 mod 2^32, starting at 0x686F6C64
// ("hold"); each step yields the top byte of the new state. Chunk 0 takes the
// first kGoldenChunkBytes bytes, chunk 1 the next, and so on.
std::vector<std::vector<uint8_t>> GoldenData(int k) {
  uint32_t state = 0x686F6C64u;
  std::vector<std::vector<uint8_t>> data(k, std::vector<uint8_t>(kGoldenChunkBytes));
  for (auto& chunk : data) {
    for (uint8_t& b : chunk) {
      state = state * 1664525u + 1013904223u;
      b = static_cast<uint8_t>(state >> 24);
    }
  }
  return data;
}

std::vector<std::vector<uint8_t>> ReferenceParity(int k, int m) {
  const std::vector<std::vector<uint8_t>> data = GoldenData(k);
  std::vector<std::vector<uint8_t>> parity(m, std::vector<uint8_t>(kGoldenChunkBytes));
  std::vector<const uint8_t*> in;
  std::vector<uint8_t*> out;
  for (const auto& d : data) in.push_back(d.data());
  for (auto& p : parity) out.push_back(p.data());
  testutil::RefEncode(testutil::CauchyGenerator(k, m), k, m, in, out, kGoldenChunkBytes);
  return parity;
}

std::string ToHex(const std::vector<uint8_t>& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

TEST(GoldenTest, InputIsWhatTheCommentSays) {
  // First bytes of the LCG stream, worked by hand from the constants above.
  const std::vector<std::vector<uint8_t>> data = GoldenData(1);
  uint32_t s = 0x686F6C64u * 1664525u + 1013904223u;
  EXPECT_EQ(data[0][0], s >> 24);
  s = s * 1664525u + 1013904223u;
  EXPECT_EQ(data[0][1], s >> 24);
}

TEST(GoldenTest, ReferenceReproducesGolden) {
  ASSERT_EQ(std::size(kGoldenParity), 4u);
  for (const auto& g : kGoldenParity) {
    const std::vector<std::vector<uint8_t>> parity = ReferenceParity(g.k, g.m);
    for (int p = 0; p < g.m; ++p) {
      EXPECT_EQ(ToHex(parity[p]), g.parity_hex[p]) << "k " << g.k << " m " << g.m << " p " << p;
      EXPECT_EQ(RefCrc64(parity[p]), g.checksum[p]) << "k " << g.k << " m " << g.m << " p " << p;
    }
  }
}

TEST(GoldenTest, CodecReproducesGolden) {
  for (const auto& g : kGoldenParity) {
    std::unique_ptr<Codec> codec = testutil::MakeCodec(g.k, g.m);
    ASSERT_NE(codec, nullptr);
    const std::vector<std::vector<uint8_t>> data = GoldenData(g.k);
    std::vector<std::vector<uint8_t>> parity(g.m, std::vector<uint8_t>(kGoldenChunkBytes, 0xCC));
    std::vector<const uint8_t*> in;
    std::vector<uint8_t*> out;
    for (const auto& d : data) in.push_back(d.data());
    for (auto& p : parity) out.push_back(p.data());
    ASSERT_TRUE(testutil::IsOk(codec->Encode(in, out, kGoldenChunkBytes)));
    for (int p = 0; p < g.m; ++p) {
      EXPECT_EQ(ToHex(parity[p]), g.parity_hex[p]) << "k " << g.k << " m " << g.m << " p " << p;
      EXPECT_EQ(Checksum(parity[p]), g.checksum[p]) << "k " << g.k << " m " << g.m << " p " << p;
    }
  }
}

// Decoding the golden stripe with its data lost gives back the golden data.
TEST(GoldenTest, CodecRebuildsGoldenData) {
  for (const auto& g : kGoldenParity) {
    std::unique_ptr<Codec> codec = testutil::MakeCodec(g.k, g.m);
    ASSERT_NE(codec, nullptr);
    const std::vector<std::vector<uint8_t>> data = GoldenData(g.k);
    std::vector<std::vector<uint8_t>> chunks = data;
    for (int p = 0; p < g.m; ++p) {
      std::vector<uint8_t> bytes(kGoldenChunkBytes);
      const std::string hex = g.parity_hex[p];
      for (size_t i = 0; i < bytes.size(); ++i) {
        bytes[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
      }
      chunks.push_back(bytes);
    }
    const ChunkMask lost = LowestChunks(AllChunks(g.k), std::min(g.k, g.m));
    std::vector<uint8_t*> ptrs;
    for (int i = 0; i < g.k + g.m; ++i) {
      if (lost & ChunkBit(i)) std::fill(chunks[i].begin(), chunks[i].end(), 0);
      ptrs.push_back(chunks[i].data());
    }
    ASSERT_TRUE(
        testutil::IsOk(codec->Decode(ptrs, AllChunks(g.k + g.m) & ~lost, lost, kGoldenChunkBytes)));
    for (int i = 0; i < g.k; ++i) EXPECT_EQ(chunks[i], data[i]) << "k " << g.k << " chunk " << i;
  }
}

// Prints golden_parity.h from the reference (see the top of this file).
TEST(GoldenTest, DISABLED_PrintGoldenHeader) {
  std::printf(
      "// Golden parity for golden_test.cc, generated by its PrintGoldenHeader from\n"
      "// the reference encoder. Do not edit by hand.\n"
      "#ifndef HOLDFAST_TESTS_EC_GOLDEN_PARITY_H_\n"
      "#define HOLDFAST_TESTS_EC_GOLDEN_PARITY_H_\n\n"
      "#include <cstddef>\n#include <cstdint>\n\n"
      "namespace holdfast::ec::testutil {\n\n"
      "inline constexpr size_t kGoldenChunkBytes = %zu;\n\n"
      "struct GoldenStripe {\n  int k;\n  int m;\n  const char* parity_hex[4];\n"
      "  uint64_t checksum[4];  // Checksum() of each parity chunk\n};\n\n"
      "inline constexpr GoldenStripe kGoldenParity[] = {\n",
      kGoldenChunkBytes);
  for (auto [k, m] : {std::pair{2, 1}, std::pair{4, 2}, std::pair{8, 2}, std::pair{10, 4}}) {
    const std::vector<std::vector<uint8_t>> parity = ReferenceParity(k, m);
    std::printf("    {%d,\n     %d,\n     {\n", k, m);
    for (const auto& p : parity) {
      const std::string hex = ToHex(p);
      for (size_t at = 0; at < hex.size(); at += 80) {
        std::printf("         \"%s\"%s\n", hex.substr(at, 80).c_str(),
                    at + 80 >= hex.size() ? "," : "");
      }
    }
    std::printf("     },\n     {");
    for (size_t p = 0; p < parity.size(); ++p) {
      std::printf("%s0x%016llXULL", p == 0 ? "" : ", ",
                  static_cast<unsigned long long>(RefCrc64(parity[p])));
    }
    std::printf("}},\n");
  }
  std::printf(
      "};\n\n}  // namespace holdfast::ec::testutil\n\n"
      "#endif  // HOLDFAST_TESTS_EC_GOLDEN_PARITY_H_\n");
}

}  // namespace
}  // namespace holdfast::ec
