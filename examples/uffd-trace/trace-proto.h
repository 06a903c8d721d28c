/* SPDX-License-Identifier: MIT */
/* What uffd-trace and its preload library say to each other over the monitor's unix socket. */
#ifndef UFFD_TRACE_PROTO_H
#define UFFD_TRACE_PROTO_H

/* The socket's path, set by the monitor in the traced program's environment. */
#define TRACE_ENV_SOCKET "UFFD_TRACE_SOCKET"

/* The program sends one byte with its userfaultfd attached (SCM_RIGHTS): TRACE_HELLO when the
 * context traps faults raised in system calls too, TRACE_HELLO_USER when it is user-mode-only.
 * It closes its own context (which frees memory: that must not be traced), and sends
 * TRACE_CLOSED. The monitor answers TRACE_READY once the program's memory is registered, or
 * closes the socket to refuse; either way the program then runs on. */
#define TRACE_HELLO 'H'
#define TRACE_HELLO_USER 'U'
#define TRACE_CLOSED 'C'
#define TRACE_READY 'R'

#endif /* UFFD_TRACE_PROTO_H */
