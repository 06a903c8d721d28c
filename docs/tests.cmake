# SPDX-License-Identifier: MIT
# The documentation's tests (label `docs`), included by tests/CMakeLists.txt:
# - doxygen: the reference and the guide build without a single warning;
# - snippet_*: every program under docs/snippets, the code the guide shows, builds and runs;
# - docs_guide: the pages show code only by including those files, never as copies;
# - man_pages: an install into a fresh prefix has a man page for every public function and every
#   installed tool, each with its sections, found by `man NAME` and rendered without a warning.
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

if(TARGET man)
  set(man_headers ${PROJECT_SOURCE_DIR}/include/uffd.h)
  if(LIBUFFD_BUILD_HTTP)
    list(APPEND man_headers ${PROJECT_SOURCE_DIR}/include/uffd_http.h)
  endif()
  add_test(NAME man_pages
    COMMAND ${BASH_EXECUTABLE} ${PROJECT_SOURCE_DIR}/docs/scripts/check-man.sh
      ${CMAKE_COMMAND} ${PROJECT_BINARY_DIR} ${CMAKE_CURRENT_BINARY_DIR}/man-prefix
      ${CMAKE_INSTALL_MANDIR} ${CMAKE_INSTALL_BINDIR} ${man_headers})
  set_tests_properties(man_pages PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS docs)
endif()
