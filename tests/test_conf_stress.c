/* SPDX-License-Identifier: MIT */
/* Kernel conformance: a libuffd port of the kernel's uffd-stress bounces, on every memory type.
 *
 * Two areas, src and dst; every page holds a pthread mutex and a counter. Per CPU there is a
 * locking thread (lock a page's mutex - which faults if the page is not there yet -, check the
 * counter against a copy kept elsewhere, increment both), a fault-serving monitor (a context per
 * CPU registering that CPU's slice of dst, served either by a poll() loop around
 * uffd_dispatch() or by a uffd_monitor), and a background copier that moves that slice from src
 * to dst with uffd_copy(), write-protecting the slice halfway. When the copiers are done, src is
 * dropped, the lockers stop, every page's counter is verified, and src and dst swap: the next
 * bounce goes the other way. Bounce modes, from the bits of the bounce number as in the kernel's
 * test: random pages or sequential ones, lockers racing on the same pages or not, verify, poll.
 *
 * The default run is short (about 10 s in all); LIBUFFD_TEST_LONG=1 runs a long one (256 MiB,
 * up to 64 bounces or about 40 s per memory type). */
#include <stdarg.h>
#include <sys/random.h>

#include "conf.h"

#define BOUNCE_RANDOM (1 << 0)
#define BOUNCE_RACINGFAULTS (1 << 1)
#define BOUNCE_VERIFY (1 << 2)
#define BOUNCE_POLL (1 << 3)

#define MAX_CPUS 16

static bool huge_ok;
static bool long_run;

struct stress;

struct cpu {
	struct stress *st;
	unsigned idx;
	struct uffd *u;
	struct uffd_monitor *mon;
	struct server srv;
	struct mon_thread mt;
	pthread_t locker, copier;
	pid_t locker_tid;
	_Atomic unsigned long missing, wp, eexist;
	bool eexist_tested;
};

struct stress {
	enum mem m;
	struct area a[2];
	struct area *src, *dst;
	size_t ps, npages, ppc; /* page size, pages, pages per CPU */
	unsigned ncpu;
	int bounces;  /* the current bounce number: its bits are the mode */
	int nbounces; /* bounces done */
	bool wp;
	uint64_t *verify; /* what each page's counter must hold */
	_Atomic bool finished;
	_Atomic int failed;
	char why[256];
	struct cpu cpu[MAX_CPUS];
};

static void stress_fail(struct stress *st, const char *fmt, ...)
{
	va_list ap;
	int zero = 0;

	if (!atomic_compare_exchange_strong(&st->failed, &zero, 1))
		return;
	va_start(ap, fmt);
	vsnprintf(st->why, sizeof(st->why), fmt, ap);
	va_end(ap);
}

static pthread_mutex_t *page_mutex(const struct stress *st, char *area, size_t nr)
{
	return (pthread_mutex_t *)(area + nr * st->ps);
}

static volatile uint64_t *page_count(const struct stress *st, char *area, size_t nr)
{
	size_t off = (sizeof(pthread_mutex_t) + 7) & ~(size_t)7;

	return (volatile uint64_t *)(area + nr * st->ps + off);
}

/* ---- the three threads of a CPU ---- */

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *locking_thread(void *arg)
{
	struct cpu *c = arg;
	struct stress *st = c->st;
	unsigned long page_nr = 0;
	uint64_t seed = 0;

	c->locker_tid = conf_gettid();
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed) || !seed)
		seed = 0x9e3779b97f4a7c15ull + c->idx;
	if (!(st->bounces & BOUNCE_RANDOM)) {
		page_nr = -(unsigned long)st->bounces;
		if (!(st->bounces & BOUNCE_RACINGFAULTS))
			page_nr += c->idx * st->ppc;
	}
	while (!atomic_load(&st->finished)) {
		char *dst = st->dst->p;
		uint64_t count;

		if (st->bounces & BOUNCE_RANDOM)
			page_nr = (unsigned long)xorshift(&seed);
		else
			page_nr++;
		page_nr %= st->npages;
		/* The first touch of a missing page is this lock: a fault. */
		pthread_mutex_lock(page_mutex(st, dst, page_nr));
		count = *page_count(st, dst, page_nr);
		if (count != st->verify[page_nr])
			stress_fail(st, "page %lu: counter %llu, expected %llu", page_nr,
				    (unsigned long long)count,
				    (unsigned long long)st->verify[page_nr]);
		count++;
		*page_count(st, dst, page_nr) = count;
		st->verify[page_nr] = count;
		pthread_mutex_unlock(page_mutex(st, dst, page_nr));
	}
	return NULL;
}

/* The fault callback of every CPU's context: copy the page over, or lift write-protection. */
static int stress_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct cpu *c = arg;
	struct stress *st = c->st;
	char *page = (char *)((uintptr_t)pf->address & ~(st->ps - 1));
	size_t off = (size_t)(page - st->dst->p);
	int r;

	if (pf->tid == 0)
		stress_fail(st, "a fault without THREAD_ID's thread id");
	if (pf->flags & UFFD_PAGEFAULT_FLAG_WP) {
		atomic_fetch_add(&c->wp, 1);
		return uffd_writeprotect(u, page, st->ps, false, 0);
	}
	if (off >= st->npages * st->ps) {
		stress_fail(st, "fault at %p, outside dst", pf->address);
		return -EPROTO;
	}
	r = uffd_copy(u, page, st->src->p + off, st->ps, st->wp ? UFFDIO_COPY_MODE_WP : 0);
	if (r == 0)
		atomic_fetch_add(&c->missing, 1);
	else if (r == -EEXIST)
		atomic_fetch_add(&c->eexist, 1); /* the copier was first: dispatch wakes it */
	else
		stress_fail(st, "fault copy at page %zu: %s", off / st->ps, uffd_strerror(r));
	return r;
}

/* A copy that may lose the race; once per bounce a won copy is repeated to see EEXIST. */
static void copy_page_retry(struct cpu *c, size_t nr)
{
	struct stress *st = c->st;
	char *dst = st->dst->p + nr * st->ps;
	int r = uffd_copy(c->u, dst, st->src->p + nr * st->ps, st->ps,
			  st->wp ? UFFDIO_COPY_MODE_WP : 0);

	if (r == -EEXIST) {
		/* Someone else placed it; wake whoever may wait on it, as the kernel test does. */
		if (uffd_wake(c->u, dst, st->ps))
			stress_fail(st, "wake page %zu", nr);
		return;
	}
	if (r) {
		stress_fail(st, "background copy of page %zu: %s", nr, uffd_strerror(r));
		return;
	}
	if (!c->eexist_tested) {
		/* Shared memory: through the alias, the page cache has it as well. */
		char *again = mem_shared(st->m) ? st->dst->alias + nr * st->ps : dst;

		c->eexist_tested = true;
		r = uffd_copy(c->u, again, st->src->p + nr * st->ps, st->ps, 0);
		if (r != -EEXIST)
			stress_fail(st, "copy over a present page: %d, not -EEXIST", r);
	}
}

static void *background_thread(void *arg)
{
	struct cpu *c = arg;
	struct stress *st = c->st;
	size_t start = c->idx * st->ppc, end = start + st->ppc, mid = (start + end) / 2, nr;

	for (nr = start; nr < mid; nr++)
		copy_page_retry(c, nr);
	/* Halfway, write-protect the slice: the lockers' writes then fault as well. */
	if (st->wp) {
		int r = uffd_writeprotect(c->u, st->dst->p + start * st->ps, st->ppc * st->ps, true,
					  0);

		if (r)
			stress_fail(st, "write-protect slice %u: %s", c->idx, uffd_strerror(r));
	}
	for (nr = mid; nr < end; nr++)
		copy_page_retry(c, nr);
	return NULL;
}

/* ---- one bounce ---- */

static uint64_t stress_features(enum mem m, bool wp)
{
	uint64_t f = UFFD_FEATURE_THREAD_ID | mem_missing_feature(m);

	if (wp)
		f |= mem_wp_features(m) | (m == MEM_ANON ? UFFD_FEATURE_WP_UNPOPULATED : 0);
	return f;
}

static void bounce(struct stress *st)
{
	const uint64_t modes = UFFDIO_REGISTER_MODE_MISSING |
			       (st->wp ? UFFDIO_REGISTER_MODE_WP : 0);
	const bool poll_mode = st->bounces & BOUNCE_POLL;
	const size_t slice = st->ppc * st->ps;
	unsigned i;

	for (i = 0; i < st->ncpu; i++) {
		struct cpu *c = &st->cpu[i];

		c->u = conf_open(st->m, stress_features(st->m, st->wp));
		conf_register(c->u, st->m, st->dst->p + i * slice, slice, modes, st);
		if (mem_shared(st->m))
			conf_register(c->u, st->m, st->dst->alias + i * slice, slice, modes, st);
		uffd_on_pagefault(c->u, stress_fault, c);
		c->eexist_tested = false;
	}
	/*
	 * Empty dst after registering: a copy that lost a race in the last bounce may have put a
	 * page of zeros here, and with the range registered nothing can fill it behind our back.
	 */
	ck_assert_int_eq(area_release(st->dst, 0, st->npages), 0);

	atomic_store(&st->finished, false);
	for (i = 0; i < st->ncpu; i++) {
		struct cpu *c = &st->cpu[i];

		ck_assert_int_eq(pthread_create(&c->locker, NULL, locking_thread, c), 0);
		if (poll_mode) {
			server_start(&c->srv, c->u);
		} else {
			ck_assert_int_eq(uffd_monitor_new(&c->mon), 0);
			ck_assert_int_eq(uffd_monitor_add(c->mon, c->u), 0);
			mon_start(&c->mt, c->mon);
		}
		ck_assert_int_eq(pthread_create(&c->copier, NULL, background_thread, c), 0);
	}
	for (i = 0; i < st->ncpu; i++)
		ck_assert_int_eq(pthread_join(st->cpu[i].copier, NULL), 0);

	/* Everything is in dst: drop src now. A late fault copy from it gets EEXIST. */
	ck_assert_int_eq(area_release(st->src, 0, st->npages), 0);
	atomic_store(&st->finished, true);
	for (i = 0; i < st->ncpu; i++)
		ck_assert_int_eq(pthread_join(st->cpu[i].locker, NULL), 0);

	for (i = 0; i < st->ncpu; i++) {
		struct cpu *c = &st->cpu[i];

		if (poll_mode)
			ck_assert_int_eq(server_stop(&c->srv), 0);
		else
			ck_assert_int_eq(mon_stop(&c->mt), 0);
		if (st->wp)
			ck_assert_int_eq(uffd_writeprotect(c->u, st->dst->p + i * slice, slice,
							   false, 0),
					 0);
		conf_unregister(c->u, st->m, st->dst->p + i * slice, slice);
		if (poll_mode)
			uffd_close(c->u);
		else
			uffd_monitor_free(c->mon);
		c->u = NULL;
		c->mon = NULL;
	}
	ck_assert_msg(!atomic_load(&st->failed), "bounce %d: %s", st->bounces, st->why);

	/* Every counter must be what the lockers last wrote. */
	for (size_t nr = 0; nr < st->npages; nr++)
		if (*page_count(st, st->dst->p, nr) != st->verify[nr])
			ck_abort_msg("bounce %d: page %zu holds %llu, expected %llu", st->bounces,
				     nr, (unsigned long long)*page_count(st, st->dst->p, nr),
				     (unsigned long long)st->verify[nr]);
}

/*
 * @bounces at most; after @seconds no new bounce starts once 16 have run (any 16 consecutive
 * bounce numbers give every mode once), which keeps a long run within a test timeout even on a
 * slow or sanitized build.
 */
static void stress_run(enum mem m, size_t mib, int bounces, double seconds)
{
	struct stress *st = calloc(1, sizeof(*st));
	pthread_mutex_t init = PTHREAD_MUTEX_INITIALIZER;
	unsigned long missing = 0, wp = 0, eexist = 0;
	double t0 = conf_now();
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	ck_assert_ptr_nonnull(st);
	cov_scenario = "stress";
	st->m = m;
	st->ps = mem_ps(m);
	st->ncpu = (unsigned)(ncpu < 1 ? 1 : ncpu > MAX_CPUS ? MAX_CPUS : ncpu);
	st->ppc = (mib << 20) / st->ps / st->ncpu;
	if (st->ppc < 2)
		st->ppc = 2;
	st->npages = st->ppc * st->ncpu;
	/* Each area may need up to its size again in huge pages beyond its reservation: the
	 * private copies of a private mapping are re-made each bounce. */
	area_init_aligned(&st->a[0], m, st->npages, 0, mem_huge(m) ? (long)st->npages : 0);
	area_init_aligned(&st->a[1], m, st->npages, 0, mem_huge(m) ? (long)st->npages : 0);
	st->src = &st->a[0];
	st->dst = &st->a[1];
	st->verify = calloc(st->npages, sizeof(*st->verify));
	ck_assert_ptr_nonnull(st->verify);
	for (size_t nr = 0; nr < st->npages; nr++) {
		memcpy(page_mutex(st, st->src->p, nr), &init, sizeof(init));
		*page_count(st, st->src->p, nr) = 1;
		*(page_count(st, st->src->p, nr) + 1) = 1;
		st->verify[nr] = 1;
	}
	ck_assert_int_eq(area_release(st->dst, 0, st->npages), 0);
	for (unsigned i = 0; i < st->ncpu; i++) {
		st->cpu[i].st = st;
		st->cpu[i].idx = i;
	}
	/* Write-protection as in the kernel test: wherever the kernel can do it. */
	st->wp = true;

	for (int done = 0; bounces--; done++) {
		struct area *tmp;

		if (done >= 16 && conf_now() - t0 > seconds)
			break;
		st->bounces = bounces;
		bounce(st);
		st->nbounces++;
		for (unsigned i = 0; i < st->ncpu; i++) {
			missing += atomic_exchange(&st->cpu[i].missing, 0);
			wp += atomic_exchange(&st->cpu[i].wp, 0);
			eexist += atomic_exchange(&st->cpu[i].eexist, 0);
		}
		tmp = st->src;
		st->src = st->dst;
		st->dst = tmp;
	}
	fprintf(stderr,
		"stress %s: %zu pages x %u CPUs, %d bounces, %.1f s: %lu missing, %lu "
		"write-protect faults served, %lu lost to the copier\n",
		mem_names[m], st->ppc, st->ncpu, st->nbounces, conf_now() - t0, missing, wp,
		eexist);
	ck_assert_uint_gt(missing + eexist, 0);
	ck_assert_uint_gt(wp, 0);
	cov_ioctl(_UFFDIO_COPY, m);
	cov_ioctl(_UFFDIO_WAKE, m);
	cov_ioctl(_UFFDIO_WRITEPROTECT, m);
	cov_event(UFFD_EVT_PAGEFAULT, m);
	cov_feature(UFFD_FEATURE_THREAD_ID, m);
	cov_feature(UFFD_FEATURE_PAGEFAULT_FLAG_WP, m);
	if (m == MEM_ANON)
		cov_feature(UFFD_FEATURE_WP_UNPOPULATED, m);
	else
		cov_feature(UFFD_FEATURE_WP_HUGETLBFS_SHMEM, m);
	area_free(&st->a[0]);
	area_free(&st->a[1]);
	free(st->verify);
	free(st);
	cov_pass("stress", m);
}

START_TEST(stress)
{
	const enum mem m = (enum mem)_i;

	/* Sizes in MiB; 16 bounces run every mode once. */
	if (long_run)
		stress_run(m, 256, 64, 40);
	else
		stress_run(m, mem_huge(m) ? 64 : 32, 32, 20);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_stress");
	TCase *tc = tcase_create("stress");
	const char *l = getenv("LIBUFFD_TEST_LONG");

	huge_ok = conf_start("test_conf_stress", false);
	long_run = l && *l && strcmp(l, "0") != 0;

	tcase_set_timeout(tc, long_run ? 900 : 60);
	tcase_add_loop_test(tc, stress, 0, conf_mem_end(huge_ok));
	suite_add_tcase(s, tc);
	return tu_run(s);
}
