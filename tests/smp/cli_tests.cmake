# Unit tests of the holdfast CLI's pure logic (smp/cli/cli_logic.h): health
# verdict, formats, progress math. Included from tests/smp/CMakeLists.txt.
add_executable(holdfast_smp_cli_logic_test ${CMAKE_CURRENT_LIST_DIR}/cli_logic_test.cc)
target_link_libraries(holdfast_smp_cli_logic_test PRIVATE
  holdfast_cli_logic GTest::gtest_main holdfast_warnings)
gtest_discover_tests(holdfast_smp_cli_logic_test TEST_PREFIX "smp." PROPERTIES TIMEOUT 60 LABELS "smp")
