// Random test data from a seeded generator (see seed.h).
#ifndef HOLDFAST_TESTING_RANDOM_BYTES_H_
#define HOLDFAST_TESTING_RANDOM_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace holdfast::testing {

// `n` random bytes from `rng`.
std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n);

}  // namespace holdfast::testing

#endif  // HOLDFAST_TESTING_RANDOM_BYTES_H_
