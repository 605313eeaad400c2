# Integration and fault-injection tests of holdfastd: real daemon processes,
# the snapshot tool as writer/verifier, raw gRPC for bad input. Included from
# tests/smp/CMakeLists.txt; paths are relative to this file.
add_library(holdfast_smp_daemon_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/harness.cc)
target_include_directories(holdfast_smp_daemon_harness PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(holdfast_smp_daemon_harness
  PUBLIC holdfast::proto holdfast::client holdfast::ec holdfast_test_common GTest::gtest gRPC::grpc++
         Threads::Threads
  PRIVATE holdfast_warnings)
# The tests run these binaries of the same build.
target_compile_definitions(holdfast_smp_daemon_harness PUBLIC
  HOLDFAST_HOLDFASTD_PATH="$<TARGET_FILE:holdfastd>"
  HOLDFAST_SNAPSHOT_TOOL_PATH="$<TARGET_FILE:holdfast_snapshot_tool>"
  HOLDFAST_TEST_FAILPOINTS=$<BOOL:${HOLDFAST_FAILPOINTS}>)
if(HOLDFAST_SANITIZE OR HOLDFAST_TSAN)
  # Every process of a test is several times slower under ASan+UBSan:
  # deadlines stretch and the random-kill loops run fewer trials.
  target_compile_definitions(holdfast_smp_daemon_harness PUBLIC HOLDFAST_TEST_SANITIZED=1)
endif()
add_dependencies(holdfast_smp_daemon_harness holdfastd holdfast_snapshot_tool)

set(HOLDFAST_SMP_DAEMON_TESTS
  daemon_writer_kill_test
  daemon_crash_test
  daemon_bad_input_test
  daemon_budget_test
  daemon_ranks_test
  daemon_jobsec_test
  daemon_hugepages_test
)
foreach(test IN LISTS HOLDFAST_SMP_DAEMON_TESTS)
  add_executable(holdfast_smp_${test} ${CMAKE_CURRENT_LIST_DIR}/${test}.cc)
  target_link_libraries(holdfast_smp_${test} PRIVATE
    holdfast_smp_daemon_harness holdfast::proto holdfast::client holdfast::ec GTest::gtest_main
    holdfast_warnings)
  add_dependencies(holdfast_smp_${test} holdfastd holdfast_snapshot_tool)
  gtest_discover_tests(holdfast_smp_${test}
    TEST_PREFIX "smp."
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT 900 LABELS "smp")
endforeach()
