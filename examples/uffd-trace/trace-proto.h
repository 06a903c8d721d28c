/* SPDX-License-Identifier: MIT */
/* What uffd-trace and its preload library say to each other over the monitor's unix socket. */
#ifndef UFFD_TRACE_PROTO_H
#define UFFD_TRACE_PROTO_H

/* The socket's path, set by the monitor in the traced program's environment. */
#define TRACE_ENV_SOCKET "UFFD_TRACE_SOCKET"
/* "1" when the monitor may trap faults raised inside system calls (it was allowed to open such a
 * userfaultfd itself); anything else means user-mode faults only. */
#define TRACE_ENV_KFAULTS "UFFD_TRACE_KERNEL_FAULTS"

/* The program sends one byte, TRACE_HELLO, with its userfaultfd attached (SCM_RIGHTS), closes
 * its own context (which frees memory: that must not be traced), and sends TRACE_CLOSED. The
 * monitor answers TRACE_READY once the program's memory is registered, or closes the socket to
 * refuse; either way the program then runs on. */
#define TRACE_HELLO 'H'
#define TRACE_CLOSED 'C'
#define TRACE_READY 'R'

#endif /* UFFD_TRACE_PROTO_H */
