#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cstdlib>

#include "holdfast/testing/random_bytes.h"
#include "holdfast/testing/seed.h"
#include "holdfast/testing/status_matchers.h"

namespace holdfast::testing {
namespace {

constexpr uint64_t kDefaultSeed = 0x686F6C6466617374ULL;  // "holdfast"

uint64_t ParseSeed() {
  const char* env = std::getenv("HOLDFAST_TEST_SEED");
  if (env == nullptr || *env == '\0') return kDefaultSeed;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(env, &end, 0);
  if (end == env || *end != '\0') {
    std::fprintf(stderr, "HOLDFAST_TEST_SEED=%s is not a number\n", env);
    std::abort();
  }
  return v;
}

class SeedPrinter : public ::testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result() != nullptr && info.result()->Failed()) {
      std::printf("[   SEED   ] %s.%s: rerun with HOLDFAST_TEST_SEED=0x%016llx\n",
                  info.test_suite_name(), info.name(),
                  static_cast<unsigned long long>(SuiteSeed()));
      std::fflush(stdout);
    }
  }
};

// Registered before main(); gtest owns the listener from then on. This file
// is always linked (SuiteSeed lives here), so the registration is too.
[[maybe_unused]] const bool kSeedPrinterRegistered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new SeedPrinter());
  return true;
}();

}  // namespace

uint64_t SuiteSeed() {
  static const uint64_t seed = ParseSeed();
  return seed;
}

::testing::AssertionResult IsOk(const Status& status) {
  if (status.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << status.ToString();
}

::testing::AssertionResult HasCode(const Status& status, StatusCode code) {
  if (status.code() == code) return ::testing::AssertionSuccess() << status.ToString();
  return ::testing::AssertionFailure()
         << "expected " << StatusCodeName(code) << ", got " << status.ToString();
}

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

}  // namespace holdfast::testing
