/* SPDX-License-Identifier: MIT */
/* Kernel conformance: events and events-wp (the kernel selftests' non-cooperative scenario: a
 * fork child faults, mremaps, faults, drops and unmaps, and the monitor follows its context),
 * and fault-details (flags, THREAD_ID, EXACT_ADDRESS). Through libuffd, on every memory type. */
#include <sys/wait.h>

#include "conf.h"

static bool huge_ok;

#define TAG ((void *)0x7a6)

/* ---- events, events-wp ---- */

struct ev_monitor {
	enum mem m;
	size_t ps;
	const char *src; /* page i holds i + 1 in its first word; all of it mapped */
	bool wp;
	struct uffd *parent;
	_Atomic int parent_faults, copied, wp_faults, bad_range;
	_Atomic int forks, remaps, remap_ok, removes, unmaps;
	_Atomic int err;
};

/*
 * Faults of the parent's and of the child's context alike (a child context gets its parent's
 * callbacks). The offset into the registration comes from the range map, which has followed the
 * child's mremap: the monitor never needs to know where the child moved the area.
 */
static int ev_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct ev_monitor *ev = arg;
	char *page = (char *)((uintptr_t)pf->address & ~(ev->ps - 1));
	size_t off;
	int r;

	if (u == ev->parent)
		atomic_fetch_add(&ev->parent_faults, 1);
	if (pf->range.data != TAG || !pf->range.start) {
		/* No range: the page went away in the same batch (REMOVE, then unregistered). */
		atomic_fetch_add(&ev->bad_range, 1);
		return -ENOENT;
	}
	cov_event(UFFD_EVT_PAGEFAULT, ev->m);
	off = pf->range.offset + (size_t)(page - (char *)pf->range.start);
	if (pf->flags & UFFD_PAGEFAULT_FLAG_WP) {
		atomic_fetch_add(&ev->wp_faults, 1);
		return uffd_writeprotect(u, page, ev->ps, false, 0);
	}
	r = uffd_copy(u, page, ev->src + off, ev->ps, ev->wp ? UFFDIO_COPY_MODE_WP : 0);
	if (r == 0)
		atomic_fetch_add(&ev->copied, 1);
	return r;
}

static int ev_fork(struct uffd *parent, struct uffd *child, void *arg)
{
	struct ev_monitor *ev = arg;
	struct uffd_range rg;

	(void)parent;
	if (uffd_range_count(child) != 1 || uffd_range_next(child, NULL, &rg) || rg.data != TAG)
		atomic_store(&ev->err, -EPROTO);
	atomic_fetch_add(&ev->forks, 1);
	cov_event(UFFD_EVT_FORK, ev->m);
	return 0; /* keep it: the monitor serves it from now on */
}

static int ev_remap(struct uffd *u, const struct uffd_remap *rm, void *arg)
{
	struct ev_monitor *ev = arg;
	struct uffd_range rg;

	atomic_fetch_add(&ev->remaps, 1);
	cov_event(UFFD_EVT_REMAP, ev->m);
	/* The map already shows the move when the callback runs. */
	if (uffd_range_find(u, rm->to, &rg) == 0 && rg.data == TAG && rg.offset == 0 &&
	    rg.start == rm->to)
		atomic_fetch_add(&ev->remap_ok, 1);
	return 0;
}

/* As the kernel test's monitor does: a range whose pages were dropped is unregistered. */
static int ev_remove(struct uffd *u, const struct uffd_span *sp, void *arg)
{
	struct ev_monitor *ev = arg;
	int r;

	atomic_fetch_add(&ev->removes, 1);
	cov_event(UFFD_EVT_REMOVE, ev->m);
	r = uffd_unregister(u, sp->start, (size_t)((char *)sp->end - (char *)sp->start));
	if (r)
		atomic_store(&ev->err, r);
	else
		cov_ioctl(_UFFDIO_UNREGISTER, ev->m);
	return r;
}

static int ev_unmap(struct uffd *u, const struct uffd_span *sp, void *arg)
{
	struct ev_monitor *ev = arg;

	(void)u;
	(void)sp;
	atomic_fetch_add(&ev->unmaps, 1);
	cov_event(UFFD_EVT_UNMAP, ev->m);
	return 0;
}

/*
 * The faulting process: read and write back the first half, move the area over @landing, do the
 * second half there, drop every page (which must then read as zeros: the monitor unregistered
 * them), unmap. Exit codes say what went wrong.
 */
static int events_child(struct area *a, char *landing)
{
	const size_t half = (a->npages + 1) / 2;
	char *q;
	size_t nr;

	alarm(20);
	for (nr = 0; nr < half; nr++) {
		volatile uint64_t *c = (volatile uint64_t *)area_page(a, nr);

		if (*c != nr + 1)
			return 10;
		*c = nr + 1; /* with write-protection: a WP fault */
	}
	q = mremap(a->p, a->len, a->len, MREMAP_MAYMOVE | MREMAP_FIXED, landing);
	if (q != landing)
		return 11;
	for (; nr < a->npages; nr++) {
		volatile uint64_t *c = (volatile uint64_t *)(q + nr * a->ps);

		if (*c != nr + 1)
			return 12;
		*c = nr + 1;
	}
	if (madvise(q, a->len, mem_shared(a->mem) ? MADV_REMOVE : MADV_DONTNEED))
		return 13;
	if (mem_file(a->mem) && !mem_shared(a->mem) &&
	    fallocate(a->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)a->len))
		return 14;
	for (nr = 0; nr < a->len; nr += 512)
		if (((volatile char *)q)[nr])
			return 15;
	if (munmap(q, a->len))
		return 16;
	return 0;
}

static void events_common(enum mem m, bool wp)
{
	const char *scenario = wp ? "events-wp" : "events";
	uint64_t features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |
			    mem_missing_feature(m) | (wp ? mem_wp_features(m) : 0);
	struct uffd *u = conf_open(m, features);
	struct ev_monitor ev = { .m = m, .wp = wp, .parent = u };
	size_t npages = mem_huge(m) ? 4 : 32;
	struct uffd_monitor *mon;
	struct mon_thread mt;
	struct area a;
	char *src, *landing;
	int status;
	pid_t pid;

	cov_scenario = scenario;
	/* The child's copies (private memory: it owns no reservation) and its zero pages after
	 * the drop need huge pages beyond what the mapping reserved. */
	area_init_aligned(&a, m, npages, 0, mem_huge(m) ? (long)(2 * npages) : 0);
	ev.ps = a.ps;
	src = tu_map_anon(a.len);
	memset(src, 0x6d, a.len);
	for (size_t i = 0; i < npages; i++)
		*(uint64_t *)(src + i * a.ps) = i + 1;
	ev.src = src;
	landing = conf_mmap_aligned(a.len, a.ps, PROT_NONE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ck_assert_ptr_ne(landing, MAP_FAILED);

	conf_register(u, m, a.p, a.len,
		      UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0), TAG);
	uffd_on_pagefault(u, ev_fault, &ev);
	uffd_on_fork(u, ev_fork, &ev);
	uffd_on_remap(u, ev_remap, &ev);
	uffd_on_remove(u, ev_remove, &ev);
	uffd_on_unmap(u, ev_unmap, &ev);
	ck_assert_int_eq(uffd_monitor_new(&mon), 0);
	ck_assert_int_eq(uffd_monitor_add(mon, u), 0);
	mon_start(&mt, mon);

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(events_child(&a, landing));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(mon_stop(&mt), 0);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: status 0x%x", status);

	ck_assert_int_eq(atomic_load(&ev.err), 0);
	ck_assert_int_eq(atomic_load(&ev.forks), 1);
	ck_assert_int_eq(atomic_load(&ev.parent_faults), 0);
	ck_assert_int_eq(atomic_load(&ev.copied), (int)npages);
	ck_assert_int_eq(atomic_load(&ev.wp_faults), wp ? (int)npages : 0);
	ck_assert_int_eq(atomic_load(&ev.remaps), 1);
	ck_assert_int_eq(atomic_load(&ev.remap_ok), 1);
	ck_assert_int_ge(atomic_load(&ev.removes), 1);
	ck_assert_int_ge(atomic_load(&ev.unmaps), 1);
	cov_features(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
			     UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP,
		     m);
	cov_ioctl(_UFFDIO_COPY, m);
	if (wp) {
		cov_ioctl(_UFFDIO_WRITEPROTECT, m);
		cov_feature(UFFD_FEATURE_PAGEFAULT_FLAG_WP, m);
		if (m != MEM_ANON)
			cov_feature(UFFD_FEATURE_WP_HUGETLBFS_SHMEM, m);
	}
	uffd_monitor_free(mon); /* closes the parent's context and what is left of the child's */
	munmap(landing, a.len);
	munmap(src, a.len);
	area_free(&a);
	cov_pass(scenario, m);
}

START_TEST(events)
{
	events_common((enum mem)_i, false);
}
END_TEST

START_TEST(events_wp)
{
	events_common((enum mem)_i, true);
}
END_TEST

/* ---- fault-details ---- */

struct toucher {
	pthread_t t;
	volatile char *addr;
	bool write;
	_Atomic pid_t tid;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;

	atomic_store(&t->tid, conf_gettid());
	if (t->write)
		*t->addr = 1;
	else
		(void)*t->addr;
	return NULL;
}

/* One fault through the pull interface; checks what it says, then resolves it. */
static void one_fault(struct uffd *u, struct area *a, const char *src, size_t page, size_t at,
		      bool write, bool details)
{
	struct toucher t = { .addr = area_page(a, page) + at, .write = write };
	struct uffd_event ev[2];
	uintptr_t want;
	int n;

	ck_assert_int_eq(pthread_create(&t.t, NULL, touch_main, &t), 0);
	n = uffd_read_events(u, ev, 2, 5000);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(ev[0].kind, UFFD_EVT_PAGEFAULT);
	ck_assert_ptr_eq(ev[0].ctx, u);
	want = (uintptr_t)t.addr;
	if (!details)
		want &= ~(uintptr_t)(a->ps - 1); /* hugetlbfs: the huge page's start */
	ck_assert_ptr_eq(ev[0].pagefault.address, (void *)want);
	ck_assert_int_eq(!!(ev[0].pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE), write);
	ck_assert_int_eq(
		ev[0].pagefault.flags & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR), 0);
	ck_assert_int_eq(ev[0].pagefault.tid, details ? atomic_load(&t.tid) : 0);
	ck_assert_ptr_eq(ev[0].pagefault.range.start, a->p);
	ck_assert_ptr_eq(ev[0].pagefault.range.data, TAG);
	ck_assert_ptr_eq(ev[0].pagefault.range.end, a->p + a->len);
	ck_assert_uint_eq(ev[0].pagefault.range.offset, 0);
	ck_assert_int_eq(uffd_copy(u, area_page(a, page), src, a->ps, 0), 0);
	ck_assert_int_eq(pthread_join(t.t, NULL), 0);
	cov_event(UFFD_EVT_PAGEFAULT, a->mem);
}

START_TEST(fault_details)
{
	const enum mem m = (enum mem)_i;
	struct uffd *u = conf_open(m, UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EXACT_ADDRESS |
					      mem_missing_feature(m));
	struct uffd *plain = conf_open(m, mem_missing_feature(m));
	struct area a;
	char *src;

	cov_scenario = "fault-details";
	area_init(&a, m, 4);
	src = tu_map_anon(a.ps);
	memset(src, 0x44, a.ps);
	conf_register(u, m, a.p, a.len, UFFDIO_REGISTER_MODE_MISSING, TAG);
	/* A read and a write, each at an odd address: exact address and thread id. */
	one_fault(u, &a, src, 0, a.ps / 2 + 123, false, true);
	one_fault(u, &a, src, 1, 7, true, true);
	uffd_close(u);
	/* Without the features: the page's start, and no thread id. */
	conf_register(plain, m, a.p, a.len, UFFDIO_REGISTER_MODE_MISSING, TAG);
	one_fault(plain, &a, src, 2, a.ps / 2 + 123, false, false);
	one_fault(plain, &a, src, 3, 9, true, false);
	ck_assert_int_eq(a.p[2 * a.ps], 0x44);
	ck_assert_int_eq(a.p[3 * a.ps + 9], 1);
	cov_feature(UFFD_FEATURE_THREAD_ID, m);
	cov_feature(UFFD_FEATURE_EXACT_ADDRESS, m);
	cov_ioctl(_UFFDIO_COPY, m);
	uffd_close(plain);
	munmap(src, a.ps);
	area_free(&a);
	cov_pass("fault-details", m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_events");
	TCase *ev = tcase_create("events"), *fd = tcase_create("fault_details");

	huge_ok = conf_start("test_conf_events", true);

	tcase_set_timeout(ev, 30);
	if (conf_can_fork_monitored("events, events-wp")) {
		tcase_add_loop_test(ev, events, 0, conf_mem_end(huge_ok));
		tcase_add_loop_test(ev, events_wp, 0, conf_mem_end(huge_ok));
	}
	tcase_set_timeout(fd, 30);
	tcase_add_loop_test(fd, fault_details, 0, conf_mem_end(huge_ok));
	suite_add_tcase(s, ev);
	suite_add_tcase(s, fd);
	return tu_run(s);
}
