/* SPDX-License-Identifier: MIT */
/* Kernel conformance: mmap-changing (the kernel selftests' scenario: every resolving call is
 * -EAGAIN while a REMOVE is pending, and works once it is read) and the dispatcher's redelivery
 * of a fault whose resolution met that -EAGAIN. Through libuffd, on every memory type. */
#include "conf.h"

static bool huge_ok;

static int release_advice(enum mem m)
{
	return mem_shared(m) ? MADV_REMOVE : MADV_DONTNEED;
}

struct dropper {
	pthread_t t;
	char *addr;
	size_t len;
	int advice;
	_Atomic pid_t tid;
	int ret;
};

/* Drops pages: blocks in the kernel until the REMOVE event is read. */
static void *drop_main(void *arg)
{
	struct dropper *d = arg;

	atomic_store(&d->tid, conf_gettid());
	d->ret = madvise(d->addr, d->len, d->advice);
	return NULL;
}

static void drop_start(struct dropper *d, char *addr, size_t len, int advice)
{
	memset(d, 0, sizeof(*d));
	d->addr = addr;
	d->len = len;
	d->advice = advice;
	ck_assert_int_eq(pthread_create(&d->t, NULL, drop_main, d), 0);
	while (!atomic_load(&d->tid))
		usleep(1000);
	ck_assert_msg(wait_blocked(atomic_load(&d->tid), 5000), "madvise did not block");
}

/* ---- mmap-changing ---- */

static const char *const pending = "a REMOVE event is pending (mmap_changing)";

START_TEST(mmap_changing)
{
	const enum mem m = (enum mem)_i;
	uint64_t features = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE |
			    mem_missing_feature(m) | mem_minor_feature(m) | mem_wp_features(m);
	uint64_t modes = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP |
			 (mem_file(m) ? UFFDIO_REGISTER_MODE_MINOR : 0);
	struct uffd *u = conf_open(m, features);
	struct uffd_event ev[4];
	struct dropper d;
	struct area a;
	char *src;
	int r;

	cov_scenario = "mmap-changing";
	area_init(&a, m, 6);
	src = conf_mmap_aligned(a.ps, a.ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
				0);
	ck_assert_ptr_ne(src, MAP_FAILED);
	memset(src, 0x3e, a.ps);
	conf_register(u, m, a.p, a.len, modes, NULL);

	drop_start(&d, a.p, a.ps, release_advice(m));

	/* While the REMOVE waits to be read, every resolving call is refused, whatever it is. */
	r = uffd_copy(u, area_page(&a, 1), src, a.ps, 0);
	ck_assert_int_eq(r, -EAGAIN);
	ck_assert_uint_eq(uffd_last_done(), 0);
	cov_ioctl_refused(_UFFDIO_COPY, m, r, pending);
	r = uffd_zeropage(u, area_page(&a, 1), a.ps, 0);
	ck_assert_int_eq(r, -EAGAIN);
	cov_ioctl_refused(_UFFDIO_ZEROPAGE, m, r, pending);
	r = uffd_move(u, area_page(&a, 1), src, a.ps, 0);
	ck_assert_int_eq(r, -EAGAIN);
	cov_ioctl_refused(_UFFDIO_MOVE, m, r, pending);
	r = uffd_poison(u, area_page(&a, 1), a.ps, 0);
	ck_assert_int_eq(r, -EAGAIN);
	cov_ioctl_refused(_UFFDIO_POISON, m, r, pending);
	r = uffd_continue(u, area_page(&a, 1), a.ps, 0);
	ck_assert_int_eq(r, -EAGAIN);
	cov_ioctl_refused(_UFFDIO_CONTINUE, m, r, pending);
	r = uffd_writeprotect(u, area_page(&a, 1), a.ps, true, 0);
	ck_assert_int_eq(r, -EAGAIN);
	cov_ioctl_refused(_UFFDIO_WRITEPROTECT, m, r, pending);
	ck_assert_int_eq(uffd_range_count(u), 1);

	/* Reading the event lets madvise return; then the calls work. */
	ck_assert_int_eq(uffd_read_events(u, ev, 4, 5000), 1);
	ck_assert_int_eq(ev[0].kind, UFFD_EVT_REMOVE);
	ck_assert_ptr_eq(ev[0].remove.start, a.p);
	ck_assert_ptr_eq(ev[0].remove.end, a.p + a.ps);
	cov_event(UFFD_EVT_REMOVE, m);
	cov_feature(UFFD_FEATURE_EVENT_REMOVE, m);
	ck_assert_int_eq(pthread_join(d.t, NULL), 0);
	ck_assert_int_eq(d.ret, 0);

	ck_assert_int_eq(uffd_copy(u, area_page(&a, 1), src, a.ps, 0), 0);
	ck_assert_int_eq(*area_page(&a, 1), 0x3e);
	cov_ioctl(_UFFDIO_COPY, m);
	r = uffd_zeropage(u, area_page(&a, 2), a.ps, 0);
	ck_assert_int_eq(r, mem_huge(m) ? -EINVAL : 0);
	r = uffd_move(u, area_page(&a, 3), src, a.ps, 0);
	ck_assert_int_eq(r, m == MEM_ANON ? 0 : -EINVAL);
	ck_assert_int_eq(uffd_poison(u, area_page(&a, 4), a.ps, 0), 0);
	cov_ioctl(_UFFDIO_POISON, m);
	if (mem_file(m)) {
		memset(a.alias + 5 * a.ps, 0x5f, a.ps);
		ck_assert_int_eq(uffd_continue(u, area_page(&a, 5), a.ps, 0), 0);
		ck_assert_int_eq(*area_page(&a, 5), 0x5f);
	} else {
		ck_assert_int_eq(uffd_continue(u, area_page(&a, 5), a.ps, 0), -EINVAL);
	}
	ck_assert_int_eq(uffd_writeprotect(u, area_page(&a, 1), a.ps, true, 0), 0);
	ck_assert(pagemap_entry(area_page(&a, 1)) & PM_UFFD_WP);
	ck_assert_int_eq(uffd_writeprotect(u, area_page(&a, 1), a.ps, false, 0), 0);

	uffd_close(u);
	munmap(src, a.ps);
	area_free(&a);
	cov_pass("mmap-changing", m);
}
END_TEST

/* ---- eagain-redelivery ---- */

struct rd_server {
	enum mem m;
	const char *src;
	size_t ps;
	_Atomic int calls, eagain, ok, removes;
};

static int rd_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct rd_server *rd = arg;
	char *page = (char *)((uintptr_t)pf->address & ~(rd->ps - 1));
	int r;

	atomic_fetch_add(&rd->calls, 1);
	cov_event(UFFD_EVT_PAGEFAULT, rd->m);
	r = uffd_copy(u, page, rd->src, rd->ps, 0);
	if (r == -EAGAIN)
		atomic_fetch_add(&rd->eagain, 1);
	else if (r == 0)
		atomic_fetch_add(&rd->ok, 1);
	return r;
}

static int rd_remove(struct uffd *u, const struct uffd_span *sp, void *arg)
{
	struct rd_server *rd = arg;

	(void)u;
	(void)sp;
	atomic_fetch_add(&rd->removes, 1);
	cov_event(UFFD_EVT_REMOVE, rd->m);
	return 0;
}

static void *read_first_word(void *p)
{
	return (void *)(uintptr_t) * (volatile uint8_t *)p;
}

/*
 * One message per read (batch 1), a fault queued first and a REMOVE behind it: the fault is
 * read alone, its copy meets -EAGAIN, and the dispatcher must read and apply the REMOVE, then
 * deliver the fault again until the copy goes through.
 */
START_TEST(eagain_redelivery)
{
	const enum mem m = (enum mem)_i;
	struct uffd_config cfg = { .required = UFFD_FEATURE_EVENT_REMOVE | mem_missing_feature(m),
				   .batch = 1 };
	struct rd_server rd = { .m = m };
	struct pollfd pfd;
	struct uffd_stats st;
	struct uffd *u = NULL;
	struct dropper d;
	struct area a;
	pthread_t t;
	double t0;
	void *v;
	char *src;

	cov_scenario = "eagain-redelivery";
	ck_assert_int_eq(uffd_open(&u, &cfg), 0);
	cov_ioctl(_UFFDIO_API, m);
	area_init(&a, m, 4);
	src = tu_map_anon(a.ps);
	memset(src, 0x2c, a.ps);
	rd.src = src;
	rd.ps = a.ps;
	conf_register(u, m, a.p, a.len, UFFDIO_REGISTER_MODE_MISSING, NULL);
	uffd_on_pagefault(u, rd_fault, &rd);
	uffd_on_remove(u, rd_remove, &rd);

	ck_assert_int_eq(pthread_create(&t, NULL, read_first_word, a.p), 0);
	pfd = (struct pollfd){ .fd = uffd_fd(u), .events = POLLIN };
	ck_assert_int_eq(poll(&pfd, 1, 5000), 1); /* the fault is queued */
	drop_start(&d, area_page(&a, 2), a.ps, release_advice(m));

	/*
	 * How long it takes depends on the scheduler: the kernel lowers mmap_changing only when the
	 * madvise thread runs again after the REMOVE was read, which on a loaded machine was seen
	 * to take more than a second. Until then the fault goes round: redelivered a bounded number
	 * of times, woken, faulted again.
	 */
	t0 = conf_now();
	while (atomic_load(&rd.ok) == 0 && conf_now() - t0 < 20)
		ck_assert_int_ge(uffd_dispatch(u, 100), 0);
	uffd_get_stats(u, &st);
	ck_assert_msg(atomic_load(&rd.ok) == 1,
		      "fault not resolved: %d calls, %d EAGAIN; stats: %llu reads, %llu faults, "
		      "%llu woken, %llu retries, %llu removes",
		      atomic_load(&rd.calls), atomic_load(&rd.eagain), (unsigned long long)st.reads,
		      (unsigned long long)st.faults, (unsigned long long)st.faults_woken,
		      (unsigned long long)st.eagain_retries, (unsigned long long)st.removes);
	ck_assert_int_eq(pthread_join(t, &v), 0);
	ck_assert_int_eq((int)(uintptr_t)v, 0x2c);
	ck_assert_int_eq(pthread_join(d.t, NULL), 0);
	ck_assert_int_eq(d.ret, 0);
	while (atomic_load(&rd.removes) == 0 && conf_now() - t0 < 25)
		ck_assert_int_ge(uffd_dispatch(u, 50), 0);

	ck_assert_int_ge(atomic_load(&rd.eagain), 1);
	ck_assert_int_eq(atomic_load(&rd.ok), 1);
	ck_assert_int_eq(atomic_load(&rd.removes), 1);
	ck_assert_int_eq(uffd_get_stats(u, &st), 0);
	ck_assert_uint_ge(st.eagain_retries, 1);
	/* The kernel lowers mmap_changing only when the madvise thread runs again; if that takes
	 * longer than the dispatcher's bounded retries, the fault is woken and comes back: every
	 * fault after the first is one that was woken. */
	ck_assert_uint_ge(st.faults, 1);
	ck_assert_uint_le(st.faults - 1, st.faults_woken);
	ck_assert_uint_eq(st.removes, 1);
	cov_ioctl_refused(_UFFDIO_COPY, m, -EAGAIN, pending);
	cov_ioctl(_UFFDIO_COPY, m);
	cov_feature(UFFD_FEATURE_EVENT_REMOVE, m);
	uffd_close(u);
	munmap(src, a.ps);
	area_free(&a);
	cov_pass("eagain-redelivery", m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_changing");
	TCase *mc = tcase_create("mmap_changing"), *rd = tcase_create("eagain_redelivery");

	huge_ok = conf_start("test_conf_changing", false);

	tcase_set_timeout(mc, 30);
	tcase_add_loop_test(mc, mmap_changing, 0, conf_mem_end(huge_ok));
	tcase_set_timeout(rd, 60);
	tcase_add_loop_test(rd, eagain_redelivery, 0, conf_mem_end(huge_ok));
	suite_add_tcase(s, mc);
	suite_add_tcase(s, rd);
	return tu_run(s);
}
