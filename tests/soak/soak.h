/* SPDX-License-Identifier: MIT */
/* The soak test's shared definitions: the target's status page, the messages, page contents. */
#ifndef UFFD_SOAK_H
#define UFFD_SOAK_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#define SOAK_THREADS 4
#define SOAK_SLOTS 8	   /* mappings each target thread owns at once */
#define SOAK_MAX_PAGES 64  /* pages of a new mapping */
#define SOAK_GROW_PAGES 16 /* pages an mremap may add */

/* What the target did, as it counted it: compared with what the monitor saw. */
struct soak_log {
	uint64_t faults;       /* touches of the parent that found the page missing */
	uint64_t child_faults; /* the same, in fork children */
	uint64_t forks, remaps, removes, unmaps;
	uint64_t touches, bytes_checked, zero_pages_read, mmaps, grows, shrinks;
};

/* One target thread, as the watchdog sees it. */
struct soak_thread {
	_Atomic uint64_t heartbeat; /* bumped after every operation */
	_Atomic int op;		    /* the operation under way (enum soak_op) */
	_Atomic int done;
	struct soak_log log;
};

/* A shared page (memfd) between the monitor and the target. */
struct soak_status {
	struct soak_thread t[SOAK_THREADS];
	_Atomic uint64_t child_faults; /* fork children add theirs here */
	_Atomic int child_errors;      /* a fork child read a wrong byte */
	char error[256];	       /* the target's first error, for the report */
};

enum soak_op {
	OP_IDLE,
	OP_TOUCH,
	OP_MMAP,
	OP_MUNMAP,
	OP_MOVE,
	OP_SHRINK,
	OP_GROW,
	OP_DONTNEED,
	OP_FORK,
	OP__COUNT
};

/* Messages on the sockets (SOCK_SEQPACKET), target to monitor and back. */
enum soak_msg_type { MSG_HELLO, MSG_REGISTER, MSG_DONE, MSG_EXIT, MSG_REPLY };

struct soak_msg {
	int type;
	int rc;	       /* MSG_REPLY: 0 or a negative errno */
	pid_t pid;     /* MSG_HELLO */
	uint64_t gen;  /* MSG_REGISTER: the mapping's identity */
	uint64_t addr; /* MSG_REGISTER: where, in the target */
	uint64_t len;
};

/* The content of byte-offset @off of registration @gen, 8 bytes at a time (never 0). */
static inline uint64_t soak_word(uint64_t gen, uint64_t off)
{
	uint64_t x = gen * 0x9e3779b97f4a7c15ull ^ off * 0xc2b2ae3d27d4eb4full;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x | 1;
}

#endif
