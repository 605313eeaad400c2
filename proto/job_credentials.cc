#include "holdfast/proto/job_credentials.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>

namespace holdfast::proto {
namespace {

constexpr size_t kSecretBytes = 32;

std::string Hex(const unsigned char* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 15];
  }
  return out;
}

}  // namespace

bool MetadataSafe(std::string_view value) {
  for (char c : value) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

std::string NewJobSecret() {
  std::array<unsigned char, kSecretBytes> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) return "";
  std::string secret = Hex(bytes.data(), bytes.size());
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return secret;
}

std::string SecretFromToken(std::string_view token, std::string_view job_id) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()),
           reinterpret_cast<const unsigned char*>(job_id.data()), job_id.size(), mac.data(),
           &len) == nullptr ||
      len != kSecretBytes) {
    return "";
  }
  return Hex(mac.data(), len);
}

bool WellFormedSecret(std::string_view secret) {
  if (secret.size() != 2 * kSecretBytes) return false;
  for (char c : secret) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string HashSecret(std::string_view secret) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(secret.data(), secret.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) {
    return "";
  }
  return std::string(reinterpret_cast<const char*>(md.data()), len);
}

bool SecretMatches(std::string_view secret, std::string_view hash) {
  const std::string h = HashSecret(secret);
  // Both are SHA-256 digests of fixed size; only their bytes are compared.
  return hash.size() == kSecretBytes && h.size() == kSecretBytes &&
         CRYPTO_memcmp(h.data(), hash.data(), kSecretBytes) == 0;
}

}  // namespace holdfast::proto
