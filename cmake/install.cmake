# SPDX-License-Identifier: MIT
# Install rules: the headers, both libraries, libuffd.pc and the CMake package uffd; with
# LIBUFFD_BUILD_HTTP, libuffd-http too (its own .pc, and the package's component `http`).
include(CMakePackageConfigHelpers)

set(LIBUFFD_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/uffd)

install(TARGETS uffd uffd_static
  EXPORT uffdTargets
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT Runtime
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Runtime
    NAMELINK_COMPONENT Development
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Development
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT Development)

install(EXPORT uffdTargets
  NAMESPACE uffd::
  FILE uffdTargets.cmake
  DESTINATION ${LIBUFFD_CMAKE_DIR}
  COMPONENT Development)

# libuffd-http has an export set of its own, loaded only when the component `http` is asked
# for: a user of libuffd alone never needs libcurl's CMake files.
if(LIBUFFD_BUILD_HTTP)
  set_target_properties(uffd_http PROPERTIES EXPORT_NAME http)
  set_target_properties(uffd_http_static PROPERTIES EXPORT_NAME http_static)
  install(TARGETS uffd_http uffd_http_static
    EXPORT uffdHttpTargets
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT Runtime
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Runtime
      NAMELINK_COMPONENT Development
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT Development
    PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT Development)
  install(EXPORT uffdHttpTargets
    NAMESPACE uffd::
    FILE uffdHttpTargets.cmake
    DESTINATION ${LIBUFFD_CMAKE_DIR}
    COMPONENT Development)
endif()

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/uffdConfig.cmake.in
  ${PROJECT_BINARY_DIR}/uffdConfig.cmake
  INSTALL_DESTINATION ${LIBUFFD_CMAKE_DIR})
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/uffdConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/uffdConfig.cmake
  ${PROJECT_BINARY_DIR}/uffdConfigVersion.cmake
  DESTINATION ${LIBUFFD_CMAKE_DIR}
  COMPONENT Development)

# libuffd.pc carries absolute directories. They are filled in at install time, from the prefix
# actually installed to, so `cmake --install build --prefix /elsewhere` gets a .pc that points
# at /elsewhere rather than at the prefix chosen when configuring.
install(CODE "
  set(LIBUFFD_PC_IN \"${PROJECT_SOURCE_DIR}/libuffd.pc.in\")
  set(LIBUFFD_PC_OUT \"${PROJECT_BINARY_DIR}/pkgconfig-install/libuffd.pc\")
  set(LIBUFFD_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(LIBUFFD_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(PROJECT_NAME \"${PROJECT_NAME}\")
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  set(PROJECT_DESCRIPTION \"${PROJECT_DESCRIPTION}\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/install-pkgconfig.cmake\")
" COMPONENT Development)
if(LIBUFFD_BUILD_HTTP)
  install(CODE "
    set(LIBUFFD_PC_IN \"${PROJECT_SOURCE_DIR}/libuffd-http.pc.in\")
    set(LIBUFFD_PC_OUT \"${PROJECT_BINARY_DIR}/pkgconfig-install/libuffd-http.pc\")
    set(LIBUFFD_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
    set(LIBUFFD_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
    set(PROJECT_VERSION \"${PROJECT_VERSION}\")
    include(\"${PROJECT_SOURCE_DIR}/cmake/install-pkgconfig.cmake\")
  " COMPONENT Development)
endif()
