# Tests of smp/transport (UCX tagged messages over tcp on loopback). Included
# from tests/smp/CMakeLists.txt; paths are relative to this file. The binary
# has its own main(): with --transport-peer it is the helper process of the
# cross-process tests (started with posix_spawn, never a bare fork of a
# process that runs UCX).
add_executable(holdfast_smp_transport_test ${CMAKE_CURRENT_LIST_DIR}/transport_test.cc)
target_link_libraries(holdfast_smp_transport_test PRIVATE
  holdfast_smp_transport holdfast_test_common GTest::gtest Threads::Threads holdfast_warnings)
if(HOLDFAST_SANITIZE OR HOLDFAST_TSAN)
  # Deadlines stretch under ASan+UBSan.
  target_compile_definitions(holdfast_smp_transport_test PRIVATE HOLDFAST_TEST_SANITIZED=1)
endif()
gtest_discover_tests(holdfast_smp_transport_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 300 LABELS "smp")
