# Cross-node protection tests (docs/cluster.md): several holdfastd processes
# on loopback, UCX over tcp. Included from tests/smp/CMakeLists.txt; paths are
# relative to this file. Each test starts its own cluster; they run one at a
# time (RUN_SERIAL) so that the 2-core machines are not oversubscribed.
add_library(holdfast_smp_cluster_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/cluster_harness.cc)
target_include_directories(holdfast_smp_cluster_harness PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(holdfast_smp_cluster_harness
  PUBLIC holdfast_smp_daemon_harness
  PRIVATE holdfast_warnings)

add_executable(holdfast_smp_cluster_test ${CMAKE_CURRENT_LIST_DIR}/cluster_test.cc)
target_link_libraries(holdfast_smp_cluster_test PRIVATE
  holdfast_smp_cluster_harness GTest::gtest_main holdfast_warnings)
add_dependencies(holdfast_smp_cluster_test holdfastd holdfast_snapshot_tool)
gtest_discover_tests(holdfast_smp_cluster_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 900 LABELS "smp;cluster" RUN_SERIAL TRUE)

# Mutual TLS between peers and for the remote CLI (docs/security.md);
# certificates are made with the openssl CLI in each test.
add_executable(holdfast_smp_cluster_tls_test ${CMAKE_CURRENT_LIST_DIR}/cluster_tls_test.cc)
target_link_libraries(holdfast_smp_cluster_tls_test PRIVATE
  holdfast_smp_cluster_harness GTest::gtest_main holdfast_warnings)
target_compile_definitions(holdfast_smp_cluster_tls_test PRIVATE
  HOLDFAST_CLI_PATH="$<TARGET_FILE:holdfast>")
add_dependencies(holdfast_smp_cluster_tls_test holdfastd holdfast_snapshot_tool holdfast)
gtest_discover_tests(holdfast_smp_cluster_tls_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 600 LABELS "smp;cluster;security" RUN_SERIAL TRUE)

# The background scrub (docs/reliability-scrub.md): repairs, data loss, rate,
# scrubbing during saves, SIGKILL mid-repair.
add_executable(holdfast_smp_scrub_test ${CMAKE_CURRENT_LIST_DIR}/scrub_test.cc)
target_link_libraries(holdfast_smp_scrub_test PRIVATE
  holdfast_smp_cluster_harness GTest::gtest_main holdfast_warnings)
target_compile_definitions(holdfast_smp_scrub_test PRIVATE
  HOLDFAST_CLI_PATH="$<TARGET_FILE:holdfast>")
add_dependencies(holdfast_smp_scrub_test holdfastd holdfast_snapshot_tool holdfast)
gtest_discover_tests(holdfast_smp_scrub_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 600 LABELS "smp;cluster" RUN_SERIAL TRUE)

# The pure checks of Peer requests (protect/peer_requests.h); see also tests/fuzz.
add_executable(holdfast_smp_peer_requests_test ${CMAKE_CURRENT_LIST_DIR}/peer_requests_test.cc)
target_link_libraries(holdfast_smp_peer_requests_test PRIVATE
  holdfast_smp_peer_requests GTest::gtest_main holdfast_warnings)
target_include_directories(holdfast_smp_peer_requests_test PRIVATE ${PROJECT_SOURCE_DIR}/smp)
gtest_discover_tests(holdfast_smp_peer_requests_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 60 LABELS "smp")
