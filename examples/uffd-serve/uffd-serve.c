/* SPDX-License-Identifier: MIT */
/* uffd-serve: a page-fault handler for VMMs that speaks Firecracker's handler protocol. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"
#include "serve.h"

static const char usage_line[] =
	"usage: uffd-serve --listen SOCKET --image SOURCE [--prefetch FILE] [--record FILE] "
	"[--multi] [--allow-uid UID]... [--chunk SIZE] [--ahead N] [--quiet] [--help] [--version]";

/* The largest message accepted: a few hundred regions. */
#define MAX_MESSAGE 65536
#define MAX_REGIONS 256
#define MAX_ALLOWED 64
/* How long a VMM that connected may take to send its message, and to finish one it began. */
#define HANDSHAKE_S 10.0
#define MORE_S 0.2
/* Threads of the pool that serves every VMM's faults. */
#define WORKERS 2
#define HUGE_2M (UINT64_C(2) << 20)
/* No user address reaches this (57 bits: 5-level page tables). */
#define ADDR_LIMIT (UINT64_C(1) << 57)

enum vm_state { VM_HANDSHAKE, VM_MORE, VM_SERVED };

/* One connection, and the VMM it serves once its message was taken. */
struct vm {
	struct vm *next;
	int conn; /* the connection, or -1 once closed */
	struct uffd_peer peer;
	enum vm_state state;
	double deadline; /* VM_HANDSHAKE, VM_MORE: when the message must be complete */
	char *msg;
	size_t msglen;
	int ufd; /* the fd that came with the message, until adopted */
	struct uffd *u;
	struct uffd_order *record;
	struct fc_region regions[MAX_REGIONS];
	size_t nregions;
	uint64_t bytes;
	/* The prefetch thread: running from the handshake until on_exit or the end joins it. */
	pthread_t prefetch;
	atomic_bool prefetching;
	/* Set once the main thread is done with the context: on_exit waits for it. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool ready;
	long prefetched;	       /* pages, or a negative errno */
	struct uffd_serve_stats stats; /* taken when the VMM exited */
};

/* The whole-handler state. The main thread owns the list; pool threads only run on_exit. */
static struct {
	const char *sock_path, *image_spec, *prefetch_path, *record_path;
	bool multi, quiet;
	uid_t allowed[MAX_ALLOWED];
	size_t nallowed;
	uint64_t chunk, image_len;
	uint32_t ahead; /* --ahead */
	size_t page;
	struct uffd_source *image;
	struct uffd_order *order;    /* --prefetch */
	struct uffd_source *compact; /* its .pages, or NULL */
	struct uffd_monitor *m;
	int listen_fd, sig_fd, notify[2];
	struct vm *vms;
	unsigned long served_vms;
	pthread_t joiner;
	int pool_result;
} S = { .listen_fd = -1, .notify = { -1, -1 } };

static void help(void)
{
	printf("%s\n\n"
	       "A page-fault handler for virtual machine monitors, speaking Firecracker's handler\n"
	       "protocol (docs/snapshotting/handling-page-faults-on-snapshot-resume.md): it listens\n"
	       "on the unix socket SOCKET; a VMM restoring a snapshot connects and sends one\n"
	       "message, a JSON array of GuestRegionUffdMapping objects (base_host_virt_addr,\n"
	       "size, offset, page_size, and the deprecated page_size_kib, which holds bytes),\n"
	       "with its userfaultfd attached (SCM_RIGHTS). The VMM registered its guest memory\n"
	       "itself; uffd-serve adopts the fd, records each region (uffd_range_add()) and serves\n"
	       "its faults from SOURCE (a file, or an http:// or https:// URL) at the region's\n"
	       "offset, an aligned chunk per fault (uffd_serve()). A region with page_size 2 MiB\n"
	       "(hugetlbfs) is served in whole huge pages. Pages the VMM discards (a balloon's\n"
	       "MADV_DONTNEED, a REMOVE event) read as zero afterwards. It learns the VMM's pid\n"
	       "from SO_PEERCRED and notices at once when it exits.\n\n"
	       "Without --multi it serves one VMM and exits once that VMM has exited. With --multi it\n"
	       "serves any number of VMMs at once, each on a context of its own, until SIGTERM or\n"
	       "SIGINT.\n\n"
	       "The socket is an attack surface, and is guarded so: it is made with mode 0600, so\n"
	       "that only this user (and root) can connect; with --allow-uid it is made 0666 and\n"
	       "every connection's uid (SO_PEERCRED) is checked against this user's, root's and the\n"
	       "allowed ones. Keep SOCKET in a directory only those users can reach. A connection\n"
	       "is refused, with one line on stderr, when its peer is not allowed, when its message\n"
	       "is not exactly the protocol's (strict JSON of known keys with unsigned integers, at\n"
	       "most 65536 bytes and 256 regions, sent within 10 s), when it has no fd, several\n"
	       "fds, or an fd that is not a userfaultfd or lacks a feature its regions need\n"
	       "(EVENT_REMOVE: a balloon's discards must be seen), when regions are empty,\n"
	       "unaligned, overlapping, overflowing or reach past the end of SOURCE, and when a\n"
	       "second message follows on the connection (then the VMM stays served). Every fd\n"
	       "that came with a refused message is closed, and the other VMMs are served on.\n\n"
	       "      --listen SOCKET  the unix socket to listen on (a stale socket there is\n"
	       "                       replaced; anything else there is an error)\n"
	       "      --image SOURCE   the guest memory image: a file, or an http:// or https://\n"
	       "                       URL\n"
	       "      --prefetch FILE  install the working set recorded in FILE (lazy-load's\n"
	       "                       format, image offsets) as soon as a VMM is served, from\n"
	       "                       FILE.pages in one sequential read when it is there\n"
	       "      --record FILE    when a VMM exits, write the order in which it first touched\n"
	       "                       its pages to FILE and the pages to FILE.pages (with\n"
	       "                       --multi: FILE.PID and FILE.PID.pages per VMM)\n"
	       "      --multi          serve any number of VMMs, until SIGTERM or SIGINT\n"
	       "      --allow-uid UID  also let the user UID connect; may be repeated\n"
	       "  -c, --chunk SIZE     bytes fetched per fault, an aligned chunk around it: a power\n"
	       "                       of two from the page size to 64M, with a K or M suffix\n"
	       "                       (default 64K; a 2 MiB region fetches at least its page)\n"
	       "      --ahead N        after each fault that fetches its chunk, fetch the next N\n"
	       "                       chunks of the region too, in parallel (0-64, default 0; an\n"
	       "                       HTTP image only: a file is read synchronously); not with\n"
	       "                       --record\n"
	       "  -q, --quiet          no line per VMM that connects\n"
	       "  -h, --help           print this help and exit\n"
	       "  -V, --version        print the libuffd version and exit\n\n"
	       "Exit status: 0 when the VMM served has exited (with --multi: on SIGTERM or SIGINT), 1\n"
	       "on an error it cannot serve past (one line on stderr), 2 on a usage error.\n",
	       usage_line);
}

/* ---- VMMs ---- */

static void vm_free(struct vm *vm)
{
	if (vm->ufd >= 0)
		close(vm->ufd);
	if (vm->u)
		uffd_close(vm->u);
	uffd_order_free(vm->record);
	free(vm->msg);
	if (vm->conn >= 0)
		close(vm->conn);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->cond);
	free(vm);
}

static void vm_unlink(struct vm *vm)
{
	for (struct vm **p = &S.vms; *p; p = &(*p)->next)
		if (*p == vm) {
			*p = vm->next;
			return;
		}
}

/* Refuse a connection: close every fd that came with it first, then say why, then hang up (the
 * peer sees the end of the connection once nothing of it is left here). Without --multi a
 * message that cannot be served ends the handler. */
static void refuse(struct vm *vm, bool fatal, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void refuse(struct vm *vm, bool fatal, const char *fmt, ...)
{
	char why[512];
	va_list ap;
	int conn = vm->conn;
	struct uffd_peer peer = vm->peer;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	vm->conn = -1;
	vm_unlink(vm);
	vm_free(vm);
	if (fatal && !S.multi)
		tool_die("connection of pid %d (uid %u) refused: %s", (int)peer.pid,
			 (unsigned)peer.uid, why);
	tool_warn("connection of pid %d (uid %u) refused: %s", (int)peer.pid, (unsigned)peer.uid,
		  why);
	close(conn);
}

static bool uid_allowed(uid_t uid)
{
	if (uid == 0 || uid == getuid())
		return true;
	for (size_t i = 0; i < S.nallowed; i++)
		if (S.allowed[i] == uid)
			return true;
	return false;
}

static void on_accept(void)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct vm *vm;
	int fd = accept4(S.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			tool_warn("cannot accept a connection: %s", strerror(errno));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		tool_warn("connection refused: cannot tell its peer (SO_PEERCRED): %s",
			  strerror(errno));
		close(fd);
		return;
	}
	if (!uid_allowed(cred.uid)) {
		close(fd);
		tool_warn("connection of pid %d (uid %u) refused: that user may not connect "
			  "(--allow-uid)",
			  (int)cred.pid, (unsigned)cred.uid);
		return;
	}
	vm = calloc(1, sizeof(*vm));
	if (!vm) {
		close(fd);
		tool_warn("connection of pid %d refused: out of memory", (int)cred.pid);
		return;
	}
	vm->conn = fd;
	vm->ufd = -1;
	vm->peer = (struct uffd_peer){ .pid = cred.pid, .uid = cred.uid, .gid = cred.gid };
	vm->state = VM_HANDSHAKE;
	vm->deadline = tool_now() + HANDSHAKE_S;
	atomic_init(&vm->prefetching, false);
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	vm->next = S.vms;
	S.vms = vm;
}

/* The regions as the protocol gives them, checked against each other and the image. */
static bool check_regions(struct vm *vm, char *why, size_t room)
{
	for (size_t i = 0; i < vm->nregions; i++) {
		const struct fc_region *r = &vm->regions[i];

		if (r->page_size != S.page && r->page_size != HUGE_2M) {
			snprintf(why, room,
				 "region %zu: page_size %" PRIu64 " is neither %zu nor 2 MiB", i,
				 r->page_size, S.page);
			return false;
		}
		if (r->size == 0) {
			snprintf(why, room, "region %zu: size 0", i);
			return false;
		}
		if (r->base % r->page_size || r->size % r->page_size || r->offset % S.page) {
			snprintf(why, room,
				 "region %zu: base_host_virt_addr 0x%" PRIx64 ", size %" PRIu64
				 " or offset %" PRIu64 " is not aligned to its page size %" PRIu64,
				 i, r->base, r->size, r->offset, r->page_size);
			return false;
		}
		if (r->base >= ADDR_LIMIT || r->size > ADDR_LIMIT - r->base) {
			snprintf(why, room,
				 "region %zu: base_host_virt_addr 0x%" PRIx64 " + size %" PRIu64
				 " overflows the address space",
				 i, r->base, r->size);
			return false;
		}
		if (r->offset > S.image_len || r->size > S.image_len - r->offset) {
			snprintf(why, room,
				 "region %zu: offset %" PRIu64 " + size %" PRIu64
				 " lies past the image's end (%" PRIu64 " bytes)",
				 i, r->offset, r->size, S.image_len);
			return false;
		}
		for (size_t j = 0; j < i; j++) {
			const struct fc_region *q = &vm->regions[j];

			if (r->base < q->base + q->size && q->base < r->base + r->size) {
				snprintf(why, room, "regions %zu and %zu overlap", j, i);
				return false;
			}
		}
	}
	return true;
}

/* ---- prefetch: the recorded working set, region by region ---- */

/* The compacted working set seen as one region's runs back to back: a read maps to the places
 * of those runs in FILE.pages. */
struct seg {
	uint64_t virt, phys, len;
};
struct slice {
	struct uffd_source *compact;
	struct seg *seg;
	size_t nseg;
	uint64_t total;
};

static int slice_read(void *impl, void *buf, size_t len, uint64_t off)
{
	struct slice *s = impl;
	size_t lo = 0, hi = s->nseg;

	if (off > s->total || len > s->total - off)
		return -ENXIO;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (s->seg[mid].virt <= off)
			lo = mid;
		else
			hi = mid;
	}
	for (size_t i = lo; len; i++) {
		uint64_t in = off - s->seg[i].virt, n = s->seg[i].len - in;
		int err;

		if (n > len)
			n = len;
		err = uffd_source_read(s->compact, buf, (size_t)n, s->seg[i].phys + in);
		if (err)
			return err;
		buf = (char *)buf + n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

static int64_t slice_length(void *impl)
{
	return (int64_t)((struct slice *)impl)->total;
}

/* Prefetch one region: the recorded runs that fall in it, clipped to it (for huge pages,
 * widened to whole pages, read from the image). Returns pages installed or a negative errno. */
static long prefetch_region(struct vm *vm, const struct fc_region *r)
{
	static const struct uffd_source_ops ops = { .size = sizeof(ops),
						    .read = slice_read,
						    .length = slice_length };
	struct uffd_order *sub;
	struct slice sl = { .compact = S.compact };
	struct uffd_source *src = NULL;
	uint64_t phys = 0, end = r->offset + r->size, off, len;
	bool huge = r->page_size != S.page;
	long n = uffd_order_count(S.order), got = 0;
	int err = uffd_order_new(&sub);

	if (err)
		return err;
	sl.seg = calloc((size_t)n + 1, sizeof(*sl.seg));
	if (!sl.seg) {
		uffd_order_free(sub);
		return -ENOMEM;
	}
	for (long i = 0; i < n; i++, phys += len) {
		uint64_t a, b;

		uffd_order_get(S.order, i, &off, &len, NULL);
		a = off > r->offset ? off : r->offset;
		b = off + len < end ? off + len : end;
		if (a >= b)
			continue;
		if (huge) {
			a = r->offset + (a - r->offset) / r->page_size * r->page_size;
			b = r->offset +
			    (b - r->offset + r->page_size - 1) / r->page_size * r->page_size;
		}
		if (uffd_order_add(sub, a, b - a, NULL) != 0)
			continue;
		sl.seg[sl.nseg++] = (struct seg){ sl.total, phys + (a - off), b - a };
		sl.total += b - a;
	}
	if (sl.nseg && S.compact && !huge && (err = uffd_source_new(&src, &ops, &sl)) != 0)
		got = err;
	if (sl.nseg && !got)
		got = uffd_prefetch(vm->u, (void *)(uintptr_t)r->base, sub, src);
	uffd_source_close(src);
	free(sl.seg);
	uffd_order_free(sub);
	return got;
}

static void *prefetch_main(void *arg)
{
	struct vm *vm = arg;
	long total = 0;

	for (size_t i = 0; i < vm->nregions; i++) {
		long n = prefetch_region(vm, &vm->regions[i]);

		if (n < 0) {
			total = n;
			break;
		}
		total += n;
	}
	vm->prefetched = total;
	return NULL;
}

static void prefetch_join(struct vm *vm)
{
	if (atomic_exchange(&vm->prefetching, false))
		pthread_join(vm->prefetch, NULL);
}

/* A pool thread: the VMM is gone. Its context is closed when this returns: end the prefetch
 * that uses it first, then hand the VMM to the main thread. */
static void on_vm_exit(struct uffd *u, void *arg)
{
	struct vm *vm = arg;

	pthread_mutex_lock(&vm->lock);
	while (!vm->ready)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	prefetch_join(vm);
	uffd_serve_get_stats(u, &vm->stats);
	vm->u = NULL; /* the monitor closes it */
	if (write(S.notify[1], &vm, sizeof(vm)) != sizeof(vm))
		abort(); /* a pipe write of a pointer cannot be short */
}

/* ---- the message ---- */

static void serve_vm(struct vm *vm)
{
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_REMOVE };
	char why[256];
	size_t n;
	int err = fc_parse(vm->msg, vm->msglen, vm->regions, MAX_REGIONS, &n, why, sizeof(why));

	if (err) {
		refuse(vm, true, "%s", why);
		return;
	}
	vm->nregions = n;
	if (!check_regions(vm, why, sizeof(why))) {
		refuse(vm, true, "%s", why);
		return;
	}
	/* Only EVENT_REMOVE: MISSING_HUGETLBFS is a capability every kernel since 4.11 has, which
	 * Firecracker does not request (a hugetlbfs region registers without it). */
	for (size_t i = 0; i < n; i++)
		vm->bytes += vm->regions[i].size;
	err = uffd_adopt(&vm->u, vm->ufd, &cfg);
	if (err == -EINVAL) {
		refuse(vm, true, "the fd sent is not a userfaultfd");
		return;
	}
	if (err == -EOPNOTSUPP) {
		refuse(vm, true,
		       "the userfaultfd lacks a feature its regions need (EVENT_REMOVE: discarded "
		       "pages would read as the image)");
		return;
	}
	if (err) {
		refuse(vm, true, "cannot adopt its userfaultfd: %s", uffd_strerror(err));
		return;
	}
	vm->ufd = -1; /* the context owns it */
	if (S.record_path && (err = uffd_order_new(&vm->record)) != 0) {
		refuse(vm, true, "%s", uffd_strerror(err));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct fc_region *r = &vm->regions[i];
		struct uffd_serve_config sc = {
			.source = S.image,
			.offset = r->offset,
			.chunk = S.chunk > r->page_size ? S.chunk : r->page_size,
			.page_size = r->page_size == S.page ? 0 : r->page_size,
			.discard = UFFD_DISCARD_ZERO,
			.flags = UFFD_SERVE_MAP_ONLY,
			.modes = UFFDIO_REGISTER_MODE_MISSING,
			.record = vm->record,
			.ahead = S.ahead,
		};

		err = uffd_serve(vm->u, (void *)(uintptr_t)r->base, (size_t)r->size, &sc);
		if (err) {
			refuse(vm, true, "cannot serve region %zu: %s", i, uffd_strerror(err));
			return;
		}
	}
	uffd_on_exit(vm->u, on_vm_exit, vm);
	err = uffd_monitor_add(S.m, vm->u);
	if (err) {
		refuse(vm, true, "cannot serve it: %s", uffd_strerror(err));
		return;
	}
	/* From here the monitor owns the context; on_exit hands the VMM back. */
	vm->state = VM_SERVED;
	free(vm->msg);
	vm->msg = NULL;
	err = uffd_monitor_watch_pid(S.m, vm->u, vm->peer.pid);
	if (err && err != -ESRCH)
		tool_warn("pid %d: cannot watch for its exit (%s): noticed within a second instead",
			  (int)vm->peer.pid, uffd_strerror(err));
	if (err == -ESRCH)
		uffd_monitor_probe(S.m);
	if (S.order) {
		atomic_store(&vm->prefetching, true);
		err = pthread_create(&vm->prefetch, NULL, prefetch_main, vm);
		if (err) {
			atomic_store(&vm->prefetching, false);
			tool_warn("pid %d: cannot start a prefetch thread: %s", (int)vm->peer.pid,
				  strerror(err));
		}
	}
	pthread_mutex_lock(&vm->lock);
	vm->ready = true;
	pthread_cond_signal(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	S.served_vms++;
	if (!S.quiet)
		printf("vmm %d (uid %u): %zu region(s), %.1f MiB, served from %s\n",
		       (int)vm->peer.pid, (unsigned)vm->peer.uid, n, (double)vm->bytes / (1 << 20),
		       S.image_spec);
	if (!S.multi) {
		/* One VMM: nobody else connects from now on. */
		close(S.listen_fd);
		S.listen_fd = -1;
		unlink(S.sock_path);
	}
}

/* Read what a connection sent: the message with its fd, the rest of a message that arrived in
 * parts, or, once served, anything at all (the protocol sends nothing more). */
static void on_readable(struct vm *vm)
{
	char buf[MAX_MESSAGE + 1];
	ssize_t n;
	int fd = -1;

	if (vm->state == VM_SERVED) {
		n = uffd_fd_recv(vm->conn, &fd, buf, sizeof(buf), NULL);
		if (n >= 0)
			close(fd);
		if (n == -EAGAIN || n == -EINTR)
			return;
		if (n == -ECONNRESET) { /* the VMM closed its end: it stays served */
			close(vm->conn);
			vm->conn = -1;
			return;
		}
		close(vm->conn);
		vm->conn = -1;
		tool_warn("vmm %d: a second message on its connection refused (the protocol sends "
			  "one); the connection is closed, the VMM stays served",
			  (int)vm->peer.pid);
		return;
	}
	if (vm->state == VM_HANDSHAKE) {
		n = uffd_fd_recv(vm->conn, &vm->ufd, buf, sizeof(buf), NULL);
		if (n == -EAGAIN || n == -EINTR)
			return;
		if (n == -EBADMSG) {
			refuse(vm, true, "the message came with no fd, or with more than one");
			return;
		}
		if (n == -ECONNRESET) {
			refuse(vm, true, "it hung up without sending a message");
			return;
		}
		if (n == -EMSGSIZE) {
			refuse(vm, true, "the message is over %d bytes, or its control data too",
			       MAX_MESSAGE);
			return;
		}
		if (n < 0) {
			refuse(vm, true, "cannot receive its message: %s", uffd_strerror((int)n));
			return;
		}
	} else {
		struct msghdr mh = { 0 };
		struct iovec iov = { buf, sizeof(buf) };
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(16 * sizeof(int))];
		} ctl;
		bool fds = false;

		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		n = recvmsg(vm->conn, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n >= 0 && c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				int *f = (int *)(void *)CMSG_DATA(c);

				for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				     i++)
					close(f[i]);
				fds = true;
			}
		if (fds || (mh.msg_flags & MSG_CTRUNC)) {
			refuse(vm, true, "the message came with more than one fd");
			return;
		}
		if (n <= 0) {
			refuse(vm, true, "%s",
			       n == 0 ? "truncated JSON: it hung up in the middle of its message" :
					strerror(errno));
			return;
		}
	}
	if (vm->msglen + (size_t)n > MAX_MESSAGE) {
		refuse(vm, true, "the message is over %d bytes", MAX_MESSAGE);
		return;
	}
	{
		char *p = realloc(vm->msg, vm->msglen + (size_t)n);

		if (!p) {
			refuse(vm, true, "out of memory");
			return;
		}
		vm->msg = p;
		memcpy(vm->msg + vm->msglen, buf, (size_t)n);
		vm->msglen += (size_t)n;
	}
	{
		static struct fc_region tmp[MAX_REGIONS];
		char why[256];
		size_t cnt;
		int err = fc_parse(vm->msg, vm->msglen, tmp, MAX_REGIONS, &cnt, why, sizeof(why));

		/* A message that stops short of its end may still be arriving: wait a little. */
		if (err == FC_TRUNCATED) {
			if (vm->state == VM_HANDSHAKE)
				vm->deadline = tool_now() + MORE_S;
			vm->state = VM_MORE;
			return;
		}
	}
	serve_vm(vm);
}

/* ---- the end of a VMM, and of the handler ---- */

static void vm_done(struct vm *vm)
{
	const struct uffd_serve_stats *s = &vm->stats;

	printf("vmm %d exited: faults=%" PRIu64 " fetches=%" PRIu64 " fetched=%" PRIu64
	       " installed=%" PRIu64 " zeroed=%" PRIu64 " prefetched=%" PRIu64 " present=%" PRIu64
	       " poisoned=%" PRIu64 "\n",
	       (int)vm->peer.pid, s->faults, s->fetches, s->bytes_fetched, s->pages_installed,
	       s->pages_zeroed, s->prefetched, s->eexist_skipped, s->poisoned);
	if (S.order && vm->prefetched < 0)
		tool_warn("vmm %d: prefetching failed: %s", (int)vm->peer.pid,
			  uffd_strerror((int)vm->prefetched));
	if (vm->record) {
		char path[4096];

		if (S.multi)
			snprintf(path, sizeof(path), "%s.%d", S.record_path, (int)vm->peer.pid);
		else
			snprintf(path, sizeof(path), "%s", S.record_path);
		tool_order_save(vm->record, path, S.image);
		printf("vmm %d: recorded %ld run(s), %" PRIu64 " pages, in %s and %s.pages\n",
		       (int)vm->peer.pid, uffd_order_count(vm->record),
		       tool_order_bytes(vm->record) / S.page, path, path);
	}
	vm_unlink(vm);
	vm_free(vm);
}

static void *joiner_main(void *arg)
{
	struct vm *none = NULL;

	(void)arg;
	S.pool_result = uffd_monitor_join(S.m);
	if (write(S.notify[1], &none, sizeof(none)) != sizeof(none))
		abort();
	return NULL;
}

/* Stop the pool, then hand back what is left: VMMs still served get their record written. */
static void shutdown_all(void)
{
	uffd_monitor_stop(S.m);
	pthread_join(S.joiner, NULL);
	for (struct vm *vm = S.vms, *next; vm; vm = next) {
		next = vm->next;
		prefetch_join(vm);
		if (vm->state == VM_SERVED) {
			if (vm->u)
				uffd_serve_get_stats(vm->u, &vm->stats);
			vm->u = NULL; /* the monitor owns it */
			vm_done(vm);
		} else {
			vm_unlink(vm);
			vm_free(vm);
		}
	}
	uffd_monitor_free(S.m);
	if (S.listen_fd >= 0) {
		close(S.listen_fd);
		unlink(S.sock_path);
	}
}

/* ---- the socket ---- */

static void listen_on(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		tool_die("'%s': a unix socket's path has at most %zu bytes", path,
			 sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0) {
		/* A socket nobody listens on is what a handler that died leaves: replace it. */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		bool stale = S_ISSOCK(st.st_mode) && probe >= 0 &&
			     connect(probe, (struct sockaddr *)&sa, sizeof(sa)) != 0 &&
			     errno == ECONNREFUSED;

		if (probe >= 0)
			close(probe);
		if (!S_ISSOCK(st.st_mode))
			tool_die("'%s' exists and is not a socket", path);
		if (!stale)
			tool_die("'%s' is in use by another handler", path);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		tool_die("cannot make a socket: %s", strerror(errno));
	/* Made with the mode it keeps: no moment when others could connect. */
	old = umask(S.nallowed ? 0111 : 0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		tool_die("cannot listen on '%s': %s", path, strerror(errno));
	umask(old);
	if (listen(fd, 64) != 0)
		tool_die("cannot listen on '%s': %s", path, strerror(errno));
	S.listen_fd = fd;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'L' },
		{ "image", required_argument, NULL, 'I' },
		{ "prefetch", required_argument, NULL, 'P' },
		{ "record", required_argument, NULL, 'R' },
		{ "multi", no_argument, NULL, 'M' },
		{ "allow-uid", required_argument, NULL, 'U' },
		{ "chunk", required_argument, NULL, 'c' },
		{ "ahead", required_argument, NULL, 'A' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	sigset_t sigs;
	bool done = false;
	int c, err, status = 0;

	tool_init("uffd-serve", usage_line);
	S.page = tool_page_size();
	S.chunk = 16 * S.page;
	while ((c = getopt_long(argc, argv, ":c:qhV", opts, NULL)) != -1) {
		switch (c) {
		case 'L':
			S.sock_path = optarg;
			break;
		case 'I':
			S.image_spec = optarg;
			break;
		case 'P':
			S.prefetch_path = optarg;
			break;
		case 'A':
			S.ahead = tool_ahead(optarg);
			break;
		case 'R':
			S.record_path = optarg;
			break;
		case 'M':
			S.multi = true;
			break;
		case 'U':
			if (S.nallowed == MAX_ALLOWED)
				tool_usage_error("more than %d --allow-uid", MAX_ALLOWED);
			S.allowed[S.nallowed++] =
				(uid_t)tool_number("--allow-uid", optarg, 0, UINT32_MAX - 1);
			break;
		case 'c':
			S.chunk = tool_size("--chunk", optarg, S.page, 64 << 20);
			if (S.chunk & (S.chunk - 1))
				tool_usage_error(
					"invalid value '%s' for --chunk: expected a power of "
					"two",
					optarg);
			break;
		case 'q':
			S.quiet = true;
			break;
		default:
			tool_other_option(c, argv, help);
		}
	}
	tool_no_operands(argc, argv);
	if (!S.sock_path)
		tool_usage_error("no --listen SOCKET given");
	if (!S.image_spec)
		tool_usage_error("no --image SOURCE given");
	tool_ahead_not_with_record(S.ahead, S.record_path);

	S.image = tool_source_open(S.image_spec, &S.image_len);
	if (S.prefetch_path) {
		S.order = tool_order_load(S.prefetch_path, S.image_len, S.page);
		S.compact = tool_compact_open(S.prefetch_path, S.order);
	}
	/* SIGTERM and SIGINT end the handler through the loop; a VMM hanging up is no signal. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	S.sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (S.sig_fd < 0 || pipe2(S.notify, O_CLOEXEC) != 0)
		tool_die("cannot make the handler's fds: %s", strerror(errno));
	err = uffd_monitor_new(&S.m);
	if (!err)
		err = uffd_monitor_start(S.m, WORKERS);
	if (err)
		tool_die("cannot start serving: %s", uffd_strerror(err));
	err = pthread_create(&S.joiner, NULL, joiner_main, NULL);
	if (err)
		tool_die("cannot start a thread: %s", strerror(err));
	listen_on(S.sock_path);
	if (!S.quiet)
		printf("uffd-serve: listening on %s (mode %s), serving %s (%.1f MiB)%s\n",
		       S.sock_path, S.nallowed ? "0666, uids checked" : "0600", S.image_spec,
		       (double)S.image_len / (1 << 20), S.multi ? ", any number of VMMs" : "");

	while (!done) {
		struct pollfd pfd[3 + 1024];
		struct vm *who[3 + 1024];
		size_t n = 0;
		double now = tool_now(), next = -1;
		int timeout = -1;

		pfd[n++] = (struct pollfd){ .fd = S.sig_fd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = S.notify[0], .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = S.listen_fd, .events = POLLIN };
		for (struct vm *vm = S.vms; vm && n < 3 + 1024; vm = vm->next) {
			if (vm->conn < 0)
				continue;
			who[n] = vm;
			pfd[n++] = (struct pollfd){ .fd = vm->conn, .events = POLLIN };
			if (vm->state != VM_SERVED && (next < 0 || vm->deadline < next))
				next = vm->deadline;
		}
		if (next >= 0)
			timeout = next <= now ? 0 : (int)((next - now) * 1000) + 1;
		if (poll(pfd, n, timeout) < 0 && errno != EINTR)
			tool_die("poll: %s", strerror(errno));
		if (pfd[0].revents) {
			struct signalfd_siginfo si;

			if (read(S.sig_fd, &si, sizeof(si)) == sizeof(si)) {
				if (!S.multi && S.served_vms) {
					tool_warn("stopped by signal %u before the VMM exited",
						  si.ssi_signo);
					status = 1;
				}
				done = true;
			}
		}
		if (pfd[1].revents) {
			struct vm *vm;

			if (read(S.notify[0], &vm, sizeof(vm)) == sizeof(vm)) {
				if (!vm) { /* the pool ended by itself: an error */
					tool_die("serving failed, giving up: %s",
						 uffd_strerror(S.pool_result < 0 ? S.pool_result :
										   -EIO));
				}
				vm_done(vm);
				/* The pool closes an exited context at its next tick, which does
				 * not come while no context is left: ask for it now. */
				uffd_monitor_probe(S.m);
				if (!S.multi)
					done = true;
				/* who[] may hold the VMM just freed (its connection hung up in the
				 * same round): poll again for a fresh list. */
				if (!done)
					continue;
			}
		}
		if (done)
			break;
		if (S.listen_fd >= 0 && pfd[2].revents)
			on_accept();
		now = tool_now();
		for (size_t i = 3; i < n; i++) {
			struct vm *vm = who[i];

			if (pfd[i].revents)
				on_readable(vm);
			else if (vm->state != VM_SERVED && vm->deadline <= now)
				refuse(vm, true, "%s",
				       vm->state == VM_HANDSHAKE ?
					       "it sent no message within 10 s" :
					       "truncated JSON: the rest of its message never came");
		}
	}
	shutdown_all();
	uffd_order_free(S.order);
	uffd_source_close(S.compact);
	uffd_source_close(S.image);
	close(S.sig_fd);
	return status;
}
