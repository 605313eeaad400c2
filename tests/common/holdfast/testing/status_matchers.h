// gtest assertion helpers for holdfast::Status and Result<T>:
//   EXPECT_TRUE(IsOk(s));  EXPECT_TRUE(HasCode(r, StatusCode::kNotFound));
#ifndef HOLDFAST_TESTING_STATUS_MATCHERS_H_
#define HOLDFAST_TESTING_STATUS_MATCHERS_H_

#include <gtest/gtest.h>

#include "holdfast/ec/status.h"

namespace holdfast::testing {

::testing::AssertionResult IsOk(const Status& status);
template <typename T>
::testing::AssertionResult IsOk(const Result<T>& result) {
  return IsOk(result.status());
}
::testing::AssertionResult HasCode(const Status& status, StatusCode code);
template <typename T>
::testing::AssertionResult HasCode(const Result<T>& result, StatusCode code) {
  return HasCode(result.status(), code);
}

}  // namespace holdfast::testing

#endif  // HOLDFAST_TESTING_STATUS_MATCHERS_H_
