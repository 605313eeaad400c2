// The seed of every randomized test: HOLDFAST_TEST_SEED (decimal or 0x-hex)
// or a fixed default, so runs are reproducible. Linking this library also
// prints the seed next to every failed test, to replay it.
#ifndef HOLDFAST_TESTING_SEED_H_
#define HOLDFAST_TESTING_SEED_H_

#include <cstdint>

namespace holdfast::testing {

// Aborts with a message if HOLDFAST_TEST_SEED is set but not a number.
uint64_t SuiteSeed();

}  // namespace holdfast::testing

#endif  // HOLDFAST_TESTING_SEED_H_
