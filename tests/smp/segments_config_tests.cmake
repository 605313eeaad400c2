# Tests for smp/core/segment_store, smp/config and smp/cluster. Included from
# tests/smp/CMakeLists.txt; paths are relative to this file.
add_executable(holdfast_smp_segment_store_test ${CMAKE_CURRENT_LIST_DIR}/segment_store_test.cc)
target_link_libraries(holdfast_smp_segment_store_test PRIVATE
  holdfast_smp_segments holdfast_warnings GTest::gtest_main)
gtest_discover_tests(holdfast_smp_segment_store_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 120 LABELS "smp")

add_executable(holdfast_smp_config_test ${CMAKE_CURRENT_LIST_DIR}/config_test.cc)
target_link_libraries(holdfast_smp_config_test PRIVATE
  holdfast_smp_config holdfast_warnings GTest::gtest_main yaml-cpp)
# The test loads deploy/holdfastd.example.yaml from the source tree.
target_compile_definitions(holdfast_smp_config_test PRIVATE
  HOLDFAST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(holdfast_smp_config_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 120 LABELS "smp")

add_executable(holdfast_smp_cluster_config_test ${CMAKE_CURRENT_LIST_DIR}/cluster_config_test.cc)
target_link_libraries(holdfast_smp_cluster_config_test PRIVATE
  holdfast_smp_cluster holdfast_test_common holdfast_warnings GTest::gtest_main)
# The test loads deploy/cluster.example.yaml from the source tree.
target_compile_definitions(holdfast_smp_cluster_config_test PRIVATE
  HOLDFAST_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(holdfast_smp_cluster_config_test
  TEST_PREFIX "smp."
  DISCOVERY_TIMEOUT 60
  PROPERTIES TIMEOUT 120 LABELS "smp")
