/* SPDX-License-Identifier: MIT */
/* Shared by the kernel-conformance tests (test_conf_*.c): memory types, huge pages, fault
 * servers, SIGBUS catching, and the recorder whose rows become tests/COVERAGE.md. */
#ifndef UFFD_TEST_CONF_H
#define UFFD_TEST_CONF_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <uffd.h>

#include "testutil.h"

/*
 * Everything here is static: each test program is built from one source file plus testutil,
 * and this header is the conformance programs' own library. Helpers fail the running Check test
 * with ck_assert, so they are meant for test bodies, not for forked grandchildren.
 */

/* ---- memory types ---- */

enum mem {
	MEM_ANON,	     /* MAP_PRIVATE | MAP_ANONYMOUS */
	MEM_SHMEM,	     /* memfd, MAP_SHARED */
	MEM_SHMEM_PRIVATE,   /* memfd, MAP_PRIVATE */
	MEM_HUGETLB,	     /* memfd MFD_HUGETLB, MAP_SHARED */
	MEM_HUGETLB_PRIVATE, /* memfd MFD_HUGETLB, MAP_PRIVATE */
	MEM_N,
};

static const char *const mem_names[MEM_N] = {
	"anon", "shmem", "shmem-private", "hugetlb", "hugetlb-private",
};

#define HUGE_PS ((size_t)2 << 20)

static inline bool mem_huge(enum mem m)
{
	return m == MEM_HUGETLB || m == MEM_HUGETLB_PRIVATE;
}

static inline bool mem_file(enum mem m)
{
	return m != MEM_ANON;
}

static inline bool mem_shared(enum mem m)
{
	return m == MEM_SHMEM || m == MEM_HUGETLB;
}

static inline size_t mem_ps(enum mem m)
{
	return mem_huge(m) ? HUGE_PS : tu_page();
}

/* The features a context needs to register memory of this type at all, and to write-protect
 * or minor-fault it. */
static inline uint64_t mem_missing_feature(enum mem m)
{
	if (m == MEM_ANON)
		return 0;
	return mem_huge(m) ? UFFD_FEATURE_MISSING_HUGETLBFS : UFFD_FEATURE_MISSING_SHMEM;
}

static inline uint64_t mem_wp_features(enum mem m)
{
	return UFFD_FEATURE_PAGEFAULT_FLAG_WP |
	       (m == MEM_ANON ? 0 : UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
}

static inline uint64_t mem_minor_feature(enum mem m)
{
	if (m == MEM_ANON)
		return 0;
	return mem_huge(m) ? UFFD_FEATURE_MINOR_HUGETLBFS : UFFD_FEATURE_MINOR_SHMEM;
}

/* ---- the coverage recorder ---- */

/*
 * Rows go to $LIBUFFD_COVERAGE_DIR/<program>.tsv (CTest sets the variable; without it nothing
 * is recorded). One row: kind, name, memory type, "ok" or "refused", errno name, what, scenario.
 * tests/scripts/coverage.sh turns the rows of every program into tests/COVERAGE.md. A row is a
 * single O_APPEND write, so threads and forked test processes never interleave; rows already
 * written by this process are not written again.
 */
static char cov_path[512];
static const char *cov_program = "-";
static const char *cov_scenario = "-";
static _Atomic uint64_t cov_seen[2048];

static inline void cov_init(const char *program)
{
	const char *dir = getenv("LIBUFFD_COVERAGE_DIR");
	int fd;

	cov_program = program;
	if (!dir || !*dir)
		return;
	snprintf(cov_path, sizeof(cov_path), "%s/%s.tsv", dir, program);
	mkdir(dir, 0755);
	fd = open(cov_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		cov_path[0] = '\0';
	else
		close(fd);
}

static inline bool cov_first_time(const char *line)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (; *line; line++)
		h = (h ^ (uint8_t)*line) * 1099511628211ull;
	h |= 1; /* never 0, the empty slot */
	for (i = 0; i < 2048; i++) {
		_Atomic uint64_t *slot = &cov_seen[(h + i) & 2047];
		uint64_t cur = atomic_load(slot);

		if (cur == h)
			return false;
		if (cur == 0) {
			uint64_t zero = 0;

			if (atomic_compare_exchange_strong(slot, &zero, h))
				return true;
			if (zero == h)
				return false;
		}
	}
	return true;
}

static inline const char *errno_name(int err)
{
	const char *n = strerrorname_np(err < 0 ? -err : err);

	return n ? n : "E?";
}

static inline void cov_row(const char *kind, const char *name, enum mem m, const char *status,
			   int err, const char *what)
{
	char line[320];
	int fd, n;

	if (!cov_path[0] || !name)
		return;
	n = snprintf(line, sizeof(line), "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", kind, name, mem_names[m],
		     status, err ? errno_name(err) : "-", what ? what : "-", cov_scenario);
	if (n <= 0 || (size_t)n >= sizeof(line) || !cov_first_time(line))
		return;
	fd = open(cov_path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)n) != n) {
		/* a lost row shows up as a gap in the table, which the coverage step reports */
	}
	close(fd);
}

static inline const char *cov_event_label(enum uffd_event_kind k)
{
	switch (k) {
	case UFFD_EVT_PAGEFAULT:
		return "PAGEFAULT";
	case UFFD_EVT_FORK:
		return "FORK";
	case UFFD_EVT_REMAP:
		return "REMAP";
	case UFFD_EVT_REMOVE:
		return "REMOVE";
	case UFFD_EVT_UNMAP:
		return "UNMAP";
	default:
		return NULL;
	}
}

/* A feature bit's effect was seen on memory of type @m. */
static inline void cov_feature(uint64_t bit, enum mem m)
{
	cov_row("feature", uffd_feature_name(bit), m, "ok", 0, NULL);
}

static inline void cov_features(uint64_t bits, enum mem m)
{
	for (unsigned i = 0; i < 64; i++)
		if (bits & (1ull << i))
			cov_feature(1ull << i, m);
}

static inline void cov_feature_refused(uint64_t bit, enum mem m, int err, const char *what)
{
	cov_row("feature", uffd_feature_name(bit), m, "refused", err, what);
}

/* An ioctl (by its _UFFDIO_* number) did its job on memory of type @m. */
static inline void cov_ioctl(unsigned nr, enum mem m)
{
	cov_row("ioctl", uffd_ioctl_name(nr), m, "ok", 0, NULL);
}

static inline void cov_ioctl_refused(unsigned nr, enum mem m, int err, const char *what)
{
	cov_row("ioctl", uffd_ioctl_name(nr), m, "refused", err, what);
}

static inline void cov_event(enum uffd_event_kind k, enum mem m)
{
	cov_row("event", cov_event_label(k), m, "ok", 0, NULL);
}

/* The scenario ran to its end on memory of type @m. */
static inline void cov_pass(const char *scenario, enum mem m)
{
	cov_row("scenario", scenario, m, "ok", 0, NULL);
}

/* ---- huge pages ---- */

/*
 * Huge pages come from surplus pages, never from the persistent pool: each area raises
 * /proc/sys/vm/nr_overcommit_hugepages by what it may need while it lives, and the kernel then
 * allocates surplus huge pages on demand (at mmap() for the reservation, at fault time beyond it)
 * and frees them when they are released. nr_hugepages is never written, so other test programs
 * that set it (tu_hugepages_reserve() and its restore) and these cannot take pages from each
 * other, and nothing stays allocated after a test, even a killed one. The knob is changed only
 * relatively, under a lock the conformance programs share, and every raise is written in a
 * ledger with the raising pid: a program starting up takes back what dead processes left.
 * Needs beyond a mapping's reservation: a fork child's copy-on-write or faults (it owns no
 * reservation of a private mapping), pages after a hole was punched - and a UFFDIO_COPY into
 * hugetlbfs whose source is not all mapped, which first copies into a temporary huge page from
 * outside any reservation (seen on 6.18 as ENOMEM). So sources of huge copies are written in
 * full before they are used, and areas that fork ask for extra pages.
 */
#define NR_OVERCOMMIT "/proc/sys/vm/nr_overcommit_hugepages"
#define HUGE_LOCK "/tmp/libuffd-test-hugepages.lock"
#define HUGE_LEDGER "/tmp/libuffd-test-hugepages.ledger"

static inline long conf_read_long(const char *path)
{
	char buf[64] = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? strtol(buf, NULL, 10) : -1;
}

static inline int conf_write_long(const char *path, long v)
{
	char buf[64];
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int n = snprintf(buf, sizeof(buf), "%ld\n", v < 0 ? 0 : v);
	bool ok;

	if (fd < 0)
		return -1;
	ok = write(fd, buf, (size_t)n) == n;
	close(fd);
	return ok ? 0 : -1;
}

/* The ledger: "pid pages" lines. Read, changed and written whole, under the lock. */
struct huge_ledger {
	int n;
	long pid[64], pages[64];
};

static inline void ledger_load(struct huge_ledger *l)
{
	FILE *f = fopen(HUGE_LEDGER, "re");

	l->n = 0;
	if (!f)
		return;
	while (l->n < 64 && fscanf(f, "%ld %ld", &l->pid[l->n], &l->pages[l->n]) == 2)
		l->n++;
	fclose(f);
}

static inline void ledger_store(const struct huge_ledger *l)
{
	FILE *f = fopen(HUGE_LEDGER, "we");

	if (!f)
		return;
	for (int i = 0; i < l->n; i++)
		if (l->pages[i])
			fprintf(f, "%ld %ld\n", l->pid[i], l->pages[i]);
	fclose(f);
}

/* Add @n pages (negative: take back) to what this process may have; 0 or -1. */
static inline int huge_pool_add(long n)
{
	int lk = open(HUGE_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	struct huge_ledger l;
	long cur, pid = (long)getpid();
	int i, ret = -1;

	if (lk < 0)
		return -1;
	flock(lk, LOCK_EX);
	ledger_load(&l);
	/* First what processes that died without giving back left behind. */
	for (i = 0; i < l.n; i++)
		if (l.pid[i] != pid && kill((pid_t)l.pid[i], 0) != 0 && errno == ESRCH) {
			cur = conf_read_long(NR_OVERCOMMIT);
			if (cur >= 0)
				conf_write_long(NR_OVERCOMMIT, cur - l.pages[i]);
			l.pages[i] = 0;
		}
	cur = conf_read_long(NR_OVERCOMMIT);
	if (cur >= 0 && conf_write_long(NR_OVERCOMMIT, cur + n) == 0) {
		for (i = 0; i < l.n && l.pid[i] != pid; i++)
			;
		if (i == l.n && l.n < 64) {
			l.pid[l.n] = pid;
			l.pages[l.n++] = 0;
		}
		if (i < l.n)
			l.pages[i] += n;
		ret = 0;
	}
	ledger_store(&l);
	flock(lk, LOCK_UN);
	close(lk);
	return ret;
}

/* Whether this machine can give the conformance tests huge pages: root, a 2 MB size, room. */
static inline const char *huge_unavailable(void)
{
	static char why[160];
	void *p;

	if (getuid() != 0)
		return "huge pages for the tests need root (nr_overcommit_hugepages)";
	if (conf_read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_overcommit_hugepages") < 0)
		return "no 2 MB huge pages";
	if (huge_pool_add(2) != 0)
		return "cannot write " NR_OVERCOMMIT;
	p = mmap(NULL, 2 * HUGE_PS, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (p == MAP_FAILED)
		snprintf(why, sizeof(why), "cannot map surplus huge pages: %s", strerror(errno));
	else
		munmap(p, 2 * HUGE_PS);
	huge_pool_add(-2);
	return p == MAP_FAILED ? why : NULL;
}

/* ---- areas ---- */

struct area {
	enum mem mem;
	char *p;     /* the mapping the tests register */
	char *alias; /* file types: a second MAP_SHARED mapping of the same file, or NULL */
	size_t len;  /* bytes */
	size_t ps;   /* page size of the type */
	size_t npages;
	int fd;		 /* the memfd, or -1 */
	long huge_pages; /* surplus huge pages allowed for the area's lifetime */
};

/* Map @len bytes at an address aligned to @align (a power of two, 0 for any). */
static inline char *conf_mmap_aligned(size_t len, size_t align, int prot, int flags, int fd,
				      off_t off)
{
	char *res, *p;
	size_t slack;

	if (align <= tu_page())
		return mmap(NULL, len, prot, flags, fd, off);
	slack = len + align;
	res = mmap(NULL, slack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return MAP_FAILED;
	p = (char *)(((uintptr_t)res + align - 1) & ~(uintptr_t)(align - 1));
	if (p > res)
		munmap(res, (size_t)(p - res));
	if (res + slack > p + len)
		munmap(p + len, (size_t)(res + slack - (p + len)));
	return mmap(p, len, prot, flags | MAP_FIXED, fd, off);
}

/*
 * A fresh area of @npages pages of the type's page size. File types get a second, shared
 * mapping of the same file (alias): writing there fills the page cache without any fault in
 * the registered mapping, and reading there shows what the page cache holds. @align: the
 * mapping's alignment (0: the page size). @extra_huge: huge pages the area may use beyond its
 * mappings' own reservations.
 */
static inline void area_init_aligned(struct area *a, enum mem m, size_t npages, size_t align,
				     long extra_huge)
{
	const int prot = PROT_READ | PROT_WRITE;

	memset(a, 0, sizeof(*a));
	a->mem = m;
	a->ps = mem_ps(m);
	a->npages = npages;
	a->len = npages * a->ps;
	a->fd = -1;
	if (align < a->ps)
		align = a->ps;
	if (m == MEM_ANON) {
		a->p = conf_mmap_aligned(a->len, align, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ck_assert_ptr_ne(a->p, MAP_FAILED);
		return;
	}
	if (mem_huge(m)) {
		/* the file's pages, the private copies of a private mapping, and the extra */
		a->huge_pages = (long)npages * (mem_shared(m) ? 1 : 2) + extra_huge;
		ck_assert_int_eq(huge_pool_add(a->huge_pages), 0);
	}
	a->fd = memfd_create("libuffd-conf", MFD_CLOEXEC | (mem_huge(m) ? MFD_HUGETLB : 0));
	ck_assert_int_ge(a->fd, 0);
	ck_assert_int_eq(ftruncate(a->fd, (off_t)a->len), 0);
	a->p = conf_mmap_aligned(a->len, align, prot, mem_shared(m) ? MAP_SHARED : MAP_PRIVATE,
				 a->fd, 0);
	a->alias = conf_mmap_aligned(a->len, align, prot, MAP_SHARED, a->fd, 0);
	ck_assert_msg(a->p != MAP_FAILED && a->alias != MAP_FAILED, "mmap %s: %s", mem_names[m],
		      strerror(errno));
}

static inline void area_init(struct area *a, enum mem m, size_t npages)
{
	area_init_aligned(a, m, npages, 0, 0);
}

/* Close every context that registered the area first: an unmap under an unread context blocks. */
static inline void area_free(struct area *a)
{
	if (a->p && a->p != MAP_FAILED)
		munmap(a->p, a->len);
	if (a->alias && a->alias != MAP_FAILED)
		munmap(a->alias, a->len);
	if (a->fd >= 0)
		close(a->fd);
	if (a->huge_pages)
		huge_pool_add(-a->huge_pages);
	memset(a, 0, sizeof(*a));
	a->fd = -1;
}

static inline char *area_page(const struct area *a, size_t i)
{
	return a->p + i * a->ps;
}

/* Drop pages so that they fault as missing again: what the kernel tests call release_pages. */
static inline int area_release(struct area *a, size_t first, size_t n)
{
	char *p = area_page(a, first);
	size_t len = n * a->ps;

	if (mem_shared(a->mem))
		return madvise(p, len, MADV_REMOVE);
	if (a->mem == MEM_ANON)
		return madvise(p, len, MADV_DONTNEED);
	/* private file mappings: drop the private copies, and empty the file behind them */
	if (madvise(p, len, MADV_DONTNEED))
		return -1;
	return fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(first * a->ps),
			 (off_t)len);
}

/* ---- contexts ---- */

static inline struct uffd *conf_open(enum mem m, uint64_t features)
{
	struct uffd_config cfg = { .required = features };
	struct uffd *u = NULL;
	int r = uffd_open(&u, &cfg);

	ck_assert_msg(r == 0, "uffd_open(0x%llx): %s", (unsigned long long)features,
		      uffd_strerror(r));
	cov_ioctl(_UFFDIO_API, m);
	return u;
}

static inline void conf_register(struct uffd *u, enum mem m, void *addr, size_t len, uint64_t modes,
				 void *data)
{
	int r = uffd_register(u, addr, len, modes, data);

	ck_assert_msg(r == 0, "register %s modes 0x%llx: %s", mem_names[m],
		      (unsigned long long)modes, uffd_strerror(r));
	cov_ioctl(_UFFDIO_REGISTER, m);
	if (mem_file(m) && (modes & UFFDIO_REGISTER_MODE_MISSING))
		cov_feature(mem_missing_feature(m), m);
}

static inline void conf_unregister(struct uffd *u, enum mem m, void *addr, size_t len)
{
	ck_assert_int_eq(uffd_unregister(u, addr, len), 0);
	cov_ioctl(_UFFDIO_UNREGISTER, m);
}

/* ---- fault servers ---- */

/*
 * One context served by a thread: poll(uffd, stop eventfd), then uffd_dispatch(u, 0), the way
 * the kernel tests' poll thread works. Stopped with the eventfd, never with pthread_cancel.
 */
struct server {
	struct uffd *u;
	pthread_t t;
	int stopfd;
	_Atomic int err;
	bool running;
};

static inline void *server_main(void *arg)
{
	struct server *s = arg;
	struct pollfd pfd[2] = {
		{ .fd = uffd_fd(s->u), .events = POLLIN },
		{ .fd = s->stopfd, .events = POLLIN },
	};

	for (;;) {
		int r = poll(pfd, 2, -1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			atomic_store(&s->err, -errno);
			break;
		}
		if (pfd[0].revents) {
			r = uffd_dispatch(s->u, 0);
			if (r < 0 && r != -EINTR) {
				atomic_store(&s->err, r);
				break;
			}
			continue; /* drain the fd before looking at the stop request */
		}
		if (pfd[1].revents)
			break;
	}
	return NULL;
}

static inline void server_start(struct server *s, struct uffd *u)
{
	memset(s, 0, sizeof(*s));
	s->u = u;
	s->stopfd = eventfd(0, EFD_CLOEXEC);
	ck_assert_int_ge(s->stopfd, 0);
	ck_assert_int_eq(pthread_create(&s->t, NULL, server_main, s), 0);
	s->running = true;
}

/* Stop and join; returns the server's error (0 if none). */
static inline int server_stop(struct server *s)
{
	uint64_t one = 1;

	if (!s->running)
		return 0;
	ck_assert_int_eq(write(s->stopfd, &one, sizeof(one)), (ssize_t)sizeof(one));
	pthread_join(s->t, NULL);
	close(s->stopfd);
	s->running = false;
	return atomic_load(&s->err);
}

/* A monitor run by a thread until uffd_monitor_stop(). It serves fork children too. */
struct mon_thread {
	struct uffd_monitor *m;
	pthread_t t;
	_Atomic int err;
	_Atomic long handled;
	bool running;
};

static inline void *mon_main(void *arg)
{
	struct mon_thread *mt = arg;
	int r = uffd_monitor_run(mt->m, -1);

	if (r < 0)
		atomic_store(&mt->err, r);
	else
		atomic_store(&mt->handled, r);
	return NULL;
}

static inline void mon_start(struct mon_thread *mt, struct uffd_monitor *m)
{
	memset(mt, 0, sizeof(*mt));
	mt->m = m;
	ck_assert_int_eq(pthread_create(&mt->t, NULL, mon_main, mt), 0);
	mt->running = true;
}

static inline int mon_stop(struct mon_thread *mt)
{
	if (!mt->running)
		return 0;
	ck_assert_int_eq(uffd_monitor_stop(mt->m), 0);
	pthread_join(mt->t, NULL);
	mt->running = false;
	return atomic_load(&mt->err);
}

/* ---- SIGBUS ---- */

/* Each thread arms its own jump buffer; a SIGBUS with none armed ends the process. */
static _Thread_local sigjmp_buf *bus_jmp;

static inline void bus_handler(int sig)
{
	(void)sig;
	if (bus_jmp)
		siglongjmp(*bus_jmp, 1);
	_exit(99);
}

static inline void bus_catch(void)
{
	struct sigaction sa = { .sa_handler = bus_handler };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

/* ---- pagemap ---- */

#define PM_PRESENT (1ull << 63)
#define PM_UFFD_WP (1ull << 57)

static inline uint64_t pagemap_entry(const void *addr)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / tu_page() * sizeof(e))) !=
	    (ssize_t)sizeof(e))
		e = 0;
	close(fd);
	return e;
}

/* A "Field:  N kB" line of the /proc/self/smaps entry of the mapping that starts at @start, in
 * bytes; -1 if there is no such mapping or field. */
static inline long smaps_bytes(const void *start, const char *field)
{
	char line[256], want[32];
	size_t flen = strlen(field);
	FILE *f = fopen("/proc/self/smaps", "re");
	bool in = false;
	long kb = -1;

	if (!f)
		return -1;
	snprintf(want, sizeof(want), "%lx-", (unsigned long)(uintptr_t)start);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		bool header = sscanf(line, "%lx-%lx ", &lo, &hi) == 2;

		if (header && in)
			break;
		if (header)
			in = strncmp(line, want, strlen(want)) == 0;
		else if (in && strncmp(line, field, flen) == 0 && line[flen] == ':')
			kb = strtol(line + flen + 1, NULL, 10);
	}
	fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

/* ---- small things ---- */

static inline pid_t conf_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* Wait until thread @tid sleeps uninterruptibly (blocked on an event nobody has read). */
static inline bool wait_blocked(pid_t tid, int timeout_ms)
{
	char path[64], buf[512];

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	for (int waited = 0; waited <= timeout_ms; waited++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		char *rp;

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = '\0';
			rp = strrchr(buf, ')');
			if (rp && rp[1] == ' ' && rp[2] == 'D')
				return true;
		}
		usleep(1000);
	}
	return false;
}

static inline double conf_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Skip the whole program (exit 77), saying why to the coverage step too. */
__attribute__((noreturn, format(printf, 1, 2))) static inline void conf_skip(const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	cov_row("skip", cov_program, MEM_ANON, "refused", 0, why);
	tu_skip("%s", why);
}

/*
 * The start of every conformance program: the recorder, then the checks that skip it. They
 * need all of Linux 6.18's userfaultfd; @need_root for EVENT_FORK (CAP_SYS_PTRACE) and for
 * pagemap's uffd-wp bit. Returns whether the hugetlbfs memory types can run; when they cannot,
 * the program runs the others and the coverage step learns why.
 */
static inline bool conf_start(const char *program, bool need_root)
{
	uint64_t f = 0;
	const char *why;
	int r;

	cov_init(program);
	r = uffd_probe(&f, NULL);
	if (r)
		conf_skip("no userfaultfd: %s", uffd_strerror(r));
	if ((f & 0x1ffff) != 0x1ffff)
		conf_skip("the conformance tests need every Linux 6.18 feature (have 0x%llx)",
			  (unsigned long long)f);
	if (need_root && getuid() != 0)
		conf_skip("needs root (EVENT_FORK needs CAP_SYS_PTRACE; pagemap's uffd-wp bit)");
	why = huge_unavailable();
	if (why) {
		fprintf(stderr, "note: hugetlbfs cases not run: %s\n", why);
		cov_row("skip", "hugetlbfs", MEM_HUGETLB, "refused", 0, why);
	}
	return why == NULL;
}

/*
 * Under ThreadSanitizer, fork() holds the sanitizer's own locks while the kernel blocks the
 * forking thread until the FORK event is read, and the monitor thread that must read it waits
 * on those locks: a deadlock no library can avoid (glibc's malloc locks were the same, and
 * libuffd avoids them). Scenarios that fork with EVENT_FORK served in the same process do not
 * run there; this says so, and tells the coverage step.
 */
#if defined(__SANITIZE_THREAD__)
#define CONF_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONF_TSAN 1
#endif
#endif

static inline bool conf_can_fork_monitored(const char *scenarios)
{
#ifdef CONF_TSAN
	const char *why = "EVENT_FORK served in the forking process deadlocks in ThreadSanitizer's "
			  "fork()";

	fprintf(stderr, "note: %s not run: %s\n", scenarios, why);
	cov_row("skip", scenarios, MEM_ANON, "refused", 0, why);
	return false;
#else
	(void)scenarios;
	return true;
#endif
}

/* The loop bounds of a test run on every memory type this machine can give. */
static inline int conf_mem_end(bool huge_ok)
{
	return huge_ok ? MEM_N : MEM_HUGETLB;
}

#endif
