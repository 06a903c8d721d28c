# SPDX-License-Identifier: MIT
# The documentation's tests (label `docs`), included by tests/CMakeLists.txt:
# - doxygen: the reference and the guide build without a single warning;
# - snippet_*: every program under docs/snippets, the code the guide shows, builds and runs;
# - docs_guide: the pages show code only by including those files, never as copies.
add_subdirectory(${PROJECT_SOURCE_DIR}/docs/snippets ${CMAKE_CURRENT_BINARY_DIR}/snippets)

if(TARGET docs)
  add_test(NAME doxygen
    COMMAND Doxygen::doxygen ${LIBUFFD_DOXYFILE}
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR}/docs)
  set_tests_properties(doxygen PROPERTIES TIMEOUT 120 LABELS docs)
endif()

add_test(NAME docs_guide
  COMMAND ${BASH_EXECUTABLE} ${PROJECT_SOURCE_DIR}/docs/scripts/check-guide.sh
    ${PROJECT_SOURCE_DIR})
set_tests_properties(docs_guide PROPERTIES TIMEOUT 60 LABELS docs)
