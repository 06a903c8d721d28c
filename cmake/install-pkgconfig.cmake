# SPDX-License-Identifier: MIT
# Runs at install time (from cmake/install.cmake): writes libuffd.pc for the prefix being
# installed to and installs it. DESTDIR is a staging root, so it is not part of the paths.
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${LIBUFFD_${dir}}")
    set(CMAKE_INSTALL_FULL_${dir} "${LIBUFFD_${dir}}")
  else()
    set(CMAKE_INSTALL_FULL_${dir} "${CMAKE_INSTALL_PREFIX}/${LIBUFFD_${dir}}")
  endif()
endforeach()
configure_file("${LIBUFFD_PC_IN}" "${LIBUFFD_PC_OUT}" @ONLY)
file(INSTALL "${LIBUFFD_PC_OUT}" DESTINATION "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig")
