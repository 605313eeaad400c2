#include "gf_reference.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <utility>

namespace holdfast::ec::testutil {
namespace {

struct Tables {
  std::array<uint8_t, 512> antilog;  // doubled so that log a + log b needs no modulo
  std::array<int, 256> log;
  std::array<std::array<uint8_t, 256>, 256> product;  // product[a][b] for the encoders

  Tables() {
    unsigned x = 1;
    for (int i = 0; i < 255; ++i) {
      antilog[i] = static_cast<uint8_t>(x);
      antilog[i + 255] = static_cast<uint8_t>(x);
      log[x] = i;
      x <<= 1;
      if (x & 0x100) x ^= kFieldPolynomial;
    }
    antilog[510] = antilog[0];
    antilog[511] = antilog[1];
    log[0] = -1;  // never used: zero has no logarithm
    for (int a = 0; a < 256; ++a) {
      for (int b = 0; b < 256; ++b) {
        product[a][b] = (a == 0 || b == 0) ? 0 : antilog[log[a] + log[b]];
      }
    }
  }
};

const Tables& T() {
  static const Tables* tables = new Tables();  // never destroyed: used from threads
  return *tables;
}

// c[row] ^= coef * src over len bytes.
void MulAdd(uint8_t coef, const uint8_t* src, uint8_t* dst, size_t len) {
  if (coef == 0) return;
  const std::array<uint8_t, 256>& row = T().product[coef];
  for (size_t b = 0; b < len; ++b) dst[b] ^= row[src[b]];
}

}  // namespace

uint8_t GfMul(uint8_t a, uint8_t b) {
  if (a == 0 || b == 0) return 0;
  return T().antilog[T().log[a] + T().log[b]];
}

uint8_t GfInv(uint8_t a) {
  if (a == 0) std::abort();
  return T().antilog[255 - T().log[a]];
}

uint8_t GfMulSlow(uint8_t a, uint8_t b) {
  unsigned acc = 0;
  unsigned aa = a;
  for (unsigned bb = b; bb != 0; bb >>= 1) {
    if (bb & 1) acc ^= aa;
    aa <<= 1;
    if (aa & 0x100) aa ^= kFieldPolynomial;
  }
  return static_cast<uint8_t>(acc);
}

bool GfInvertMatrix(std::span<const uint8_t> in, int n, std::vector<uint8_t>* out) {
  const size_t w = static_cast<size_t>(n);
  std::vector<uint8_t> a(in.begin(), in.end());
  std::vector<uint8_t>& inv = *out;
  inv.assign(w * w, 0);
  for (size_t i = 0; i < w; ++i) inv[i * w + i] = 1;
  for (size_t col = 0; col < w; ++col) {
    size_t pivot = col;
    while (pivot < w && a[pivot * w + col] == 0) ++pivot;
    if (pivot == w) return false;
    if (pivot != col) {
      for (size_t j = 0; j < w; ++j) {
        std::swap(a[pivot * w + j], a[col * w + j]);
        std::swap(inv[pivot * w + j], inv[col * w + j]);
      }
    }
    const uint8_t scale = GfInv(a[col * w + col]);
    for (size_t j = 0; j < w; ++j) {
      a[col * w + j] = GfMul(a[col * w + j], scale);
      inv[col * w + j] = GfMul(inv[col * w + j], scale);
    }
    for (size_t row = 0; row < w; ++row) {
      const uint8_t f = a[row * w + col];
      if (row == col || f == 0) continue;
      for (size_t j = 0; j < w; ++j) {
        a[row * w + j] ^= GfMul(f, a[col * w + j]);
        inv[row * w + j] ^= GfMul(f, inv[col * w + j]);
      }
    }
  }
  return true;
}

std::vector<uint8_t> GfMatMul(std::span<const uint8_t> a, std::span<const uint8_t> b, int r, int c,
                              int q) {
  std::vector<uint8_t> out(static_cast<size_t>(r) * q, 0);
  for (int i = 0; i < r; ++i) {
    for (int j = 0; j < q; ++j) {
      uint8_t acc = 0;
      for (int t = 0; t < c; ++t) acc ^= GfMul(a[i * c + t], b[t * q + j]);
      out[i * q + j] = acc;
    }
  }
  return out;
}

std::vector<uint8_t> CauchyGenerator(int k, int m) {
  const size_t w = static_cast<size_t>(k);
  std::vector<uint8_t> gen(static_cast<size_t>(k + m) * w, 0);
  for (size_t i = 0; i < w; ++i) gen[i * w + i] = 1;
  for (int i = k; i < k + m; ++i) {
    for (int j = 0; j < k; ++j) {
      gen[static_cast<size_t>(i) * w + j] = GfInv(static_cast<uint8_t>(i ^ j));
    }
  }
  return gen;
}

void RefEncode(std::span<const uint8_t> generator, int k, int m,
               std::span<const uint8_t* const> data, std::span<uint8_t* const> parity, size_t len) {
  for (int p = 0; p < m; ++p) {
    uint8_t* out = parity[p];
    for (size_t b = 0; b < len; ++b) out[b] = 0;
    for (int j = 0; j < k; ++j) {
      MulAdd(generator[static_cast<size_t>(k + p) * k + j], data[j], out, len);
    }
  }
}

std::vector<std::vector<uint8_t>> RefEncodePadded(std::span<const uint8_t> generator, int k, int m,
                                                  std::span<const std::span<const uint8_t>> data,
                                                  size_t chunk_length) {
  std::vector<std::vector<uint8_t>> padded(k, std::vector<uint8_t>(chunk_length, 0));
  std::vector<const uint8_t*> in;
  for (int j = 0; j < k; ++j) {
    std::copy(data[j].begin(), data[j].end(), padded[j].begin());
    in.push_back(padded[j].data());
  }
  std::vector<std::vector<uint8_t>> parity(m, std::vector<uint8_t>(chunk_length));
  std::vector<uint8_t*> out;
  for (auto& p : parity) out.push_back(p.data());
  RefEncode(generator, k, m, in, out, chunk_length);
  return parity;
}

bool RefDecode(std::span<const uint8_t> generator, int k, int m, std::span<uint8_t* const> chunks,
               ChunkMask available, ChunkMask lost, size_t len) {
  const int n = k + m;
  std::vector<int> survivors;
  for (int i = 0; i < n && static_cast<int>(survivors.size()) < k; ++i) {
    if (available & ChunkBit(i)) survivors.push_back(i);
  }
  if (static_cast<int>(survivors.size()) < k) return false;
  // Rows of the generator for the survivors: survivors = B * data, so
  // data = B^-1 * survivors, and any chunk c = generator row c * data.
  std::vector<uint8_t> b;
  for (int s : survivors) {
    b.insert(b.end(), generator.begin() + s * k, generator.begin() + (s + 1) * k);
  }
  std::vector<uint8_t> inv;
  if (!GfInvertMatrix(b, k, &inv)) return false;
  std::vector<uint8_t> rows = GfMatMul(generator, inv, n, k, k);
  for (int c = 0; c < n; ++c) {
    if (!(lost & ChunkBit(c))) continue;
    std::vector<uint8_t> out(len, 0);
    for (int j = 0; j < k; ++j) {
      MulAdd(rows[static_cast<size_t>(c) * k + j], chunks[survivors[j]], out.data(), len);
    }
    for (size_t i = 0; i < len; ++i) chunks[c][i] = out[i];
  }
  return true;
}

uint64_t RefCrc64(std::span<const uint8_t> bytes, uint64_t seed) {
  constexpr uint64_t kReflectedPoly = 0xC96C5795D7870F42ULL;
  uint64_t crc = ~seed;
  for (uint8_t byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? kReflectedPoly : 0);
  }
  return ~crc;
}

}  // namespace holdfast::ec::testutil
