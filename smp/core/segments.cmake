# Shared-memory segments (core/segment_store.h). Included from
# smp/CMakeLists.txt; paths are relative to this file, not the includer.
add_library(holdfast_smp_segments ${CMAKE_CURRENT_LIST_DIR}/segment_store.cc)
add_library(holdfast::smp_segments ALIAS holdfast_smp_segments)
target_include_directories(holdfast_smp_segments PUBLIC ${PROJECT_SOURCE_DIR}/smp)
target_link_libraries(holdfast_smp_segments
  PUBLIC holdfast::ec
  PRIVATE holdfast_warnings)
