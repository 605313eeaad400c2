# SnapshotManager unit tests: in-memory catalog with injected failures, real
# segments in a private tmpfs directory. Included from tests/smp/CMakeLists.txt.
add_executable(holdfast_smp_manager_test ${CMAKE_CURRENT_LIST_DIR}/snapshot_manager_test.cc)
target_link_libraries(holdfast_smp_manager_test PRIVATE
  holdfast_smp_core holdfast_smp_catalog holdfast_test_common GTest::gtest_main holdfast_warnings)
gtest_discover_tests(holdfast_smp_manager_test TEST_PREFIX "smp." PROPERTIES TIMEOUT 300)
