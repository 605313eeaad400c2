# Cross-node protection tests (docs/cluster.md): several holdfastd processes
# on loopback, UCX over tcp. Included from tests/smp/CMakeLists.txt; paths are
# relative to this file. Each test starts its own cluster; they run one at a
# time (RUN_SERIAL) so that the 2-core machines are not oversubscribed.
add_library(holdfast_smp_cluster_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/cluster_harness.cc)
target_include_directories(holdfast_smp_cluster_harness PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(holdfast_smp_cluster_harness
  PUBLIC holdfast_smp_daemon_harness
  PRIVATE holdfast_warnings)

# One executable per suite, each test of it a ctest run serially; every suite
# may run holdfastd, the snapshot tool and the `holdfast` CLI of this build.
function(holdfast_cluster_suite name timeout labels)
  add_executable(holdfast_smp_${name} ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/${name}.cc)
  target_link_libraries(holdfast_smp_${name} PRIVATE
    holdfast_smp_cluster_harness GTest::gtest_main holdfast_warnings)
  target_compile_definitions(holdfast_smp_${name} PRIVATE
    HOLDFAST_CLI_PATH="$<TARGET_FILE:holdfast>")
  add_dependencies(holdfast_smp_${name} holdfastd holdfast_snapshot_tool holdfast)
  gtest_discover_tests(holdfast_smp_${name}
    TEST_PREFIX "smp."
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${timeout} LABELS "${labels}" RUN_SERIAL TRUE)
endfunction()

holdfast_cluster_suite(cluster_test 900 "smp;cluster")
# Mutual TLS between peers and for the remote CLI (docs/security.md);
# certificates are made with the openssl CLI in each test.
holdfast_cluster_suite(cluster_tls_test 600 "smp;cluster;security")
# The background scrub (docs/reliability-scrub.md): repairs, data loss, rate,
# scrubbing during saves, SIGKILL mid-repair.
holdfast_cluster_suite(scrub_test 600 "smp;cluster")

# The pure checks of Peer requests (protect/peer_requests.h); see also tests/fuzz.
add_executable(holdfast_smp_peer_requests_test ${CMAKE_CURRENT_LIST_DIR}/peer_requests_test.cc)
target_link_libraries(holdfast_smp_peer_requests_test PRIVATE
  holdfast_smp_peer_requests GTest::gtest_main holdfast_warnings)
target_include_directories(holdfast_smp_peer_requests_test PRIVATE ${PROJECT_SOURCE_DIR}/smp)
gtest_discover_tests(holdfast_smp_peer_requests_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 60 LABELS "smp")
