/* SPDX-License-Identifier: MIT */
/* Kernel conformance: zeropage, move, move-pmd, move-pmd-split and poison (the kernel
 * selftests' scenarios of those names), served through libuffd on every memory type. */
#include "conf.h"

static bool huge_ok;

/* Page @i of an area holds its number + 1 in its first word: what a moved page must carry. */
static void fill_counters(char *base, size_t ps, size_t npages)
{
	for (size_t i = 0; i < npages; i++) {
		memset(base + i * ps, 0, ps);
		*(volatile uint64_t *)(base + i * ps) = i + 1;
	}
}

/* ---- zeropage ---- */

struct zp_server {
	enum mem m;
	_Atomic int faults;
	_Atomic int err;
};

static int zp_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct zp_server *z = arg;
	int r;

	atomic_fetch_add(&z->faults, 1);
	cov_event(UFFD_EVT_PAGEFAULT, z->m);
	r = uffd_zeropage(u, pf->address, mem_ps(z->m), 0);
	if (r)
		atomic_store(&z->err, r);
	return r;
}

static void *read_byte(void *p)
{
	return (void *)(intptr_t) * (volatile char *)p;
}

START_TEST(zeropage)
{
	const enum mem m = (enum mem)_i;
	struct uffd *u = conf_open(m, mem_missing_feature(m));
	struct zp_server z = { .m = m };
	struct server s;
	struct area a;
	pthread_t t;
	void *v;
	int r;

	cov_scenario = "zeropage";
	area_init(&a, m, 2);
	conf_register(u, m, a.p, a.len, UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (mem_shared(m))
		conf_register(u, m, a.alias, a.len, UFFDIO_REGISTER_MODE_MISSING, NULL);

	r = uffd_zeropage(u, a.p, a.ps, 0);
	if (mem_huge(m)) {
		/* hugetlbfs has no zero page: the kernel refuses the ioctl. */
		ck_assert_int_eq(r, -EINVAL);
		cov_ioctl_refused(_UFFDIO_ZEROPAGE, m, r, "hugetlbfs has no zero page");
		/* A fault there is still served by libuffd's default handler (a copy of zeros). */
		ck_assert_int_eq(pthread_create(&t, NULL, read_byte, a.p + 4097), 0);
		server_start(&s, u);
		pthread_join(t, &v);
		ck_assert_int_eq(server_stop(&s), 0);
		ck_assert_int_eq((int)(intptr_t)v, 0);
		cov_ioctl(_UFFDIO_COPY, m);
	} else {
		ck_assert_int_eq(r, 0);
		ck_assert_uint_eq(uffd_last_done(), a.ps);
		ck_assert_int_eq(memcmp(a.p, a.p + 1, a.ps - 1), 0);
		ck_assert_int_eq(a.p[0], 0);
		cov_ioctl(_UFFDIO_ZEROPAGE, m);
		/* Again: the page is there now. Through the alias, the page cache has it too. */
		ck_assert_int_eq(uffd_zeropage(u, a.p, a.ps, 0), -EEXIST);
		if (mem_shared(m))
			ck_assert_int_eq(uffd_zeropage(u, a.alias, a.ps, 0), -EEXIST);

		/* A real read fault, served by a zeropage from the fault callback. */
		uffd_on_pagefault(u, zp_fault, &z);
		ck_assert_int_eq(pthread_create(&t, NULL, read_byte, a.p + a.ps + 5), 0);
		server_start(&s, u);
		pthread_join(t, &v);
		ck_assert_int_eq(server_stop(&s), 0);
		ck_assert_int_eq((int)(intptr_t)v, 0);
		ck_assert_int_eq(atomic_load(&z.faults), 1);
		ck_assert_int_eq(atomic_load(&z.err), 0);
	}
	uffd_close(u);
	area_free(&a);
	cov_pass("zeropage", m);
}
END_TEST

/* ---- move, move-pmd, move-pmd-split ---- */

struct mv_server {
	char *dst, *src;
	size_t chunk;
	_Atomic int faults;
	_Atomic int bad_flags;
};

static int mv_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct mv_server *mv = arg;
	size_t off;

	/* Only reads touch the destination: a missing read fault, nothing else. */
	if (pf->flags &
	    (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR | UFFD_PAGEFAULT_FLAG_WRITE))
		atomic_fetch_add(&mv->bad_flags, 1);
	/* The range map gives the offset into the registration: no address arithmetic on dst. */
	off = pf->range.offset + (size_t)((char *)pf->address - (char *)pf->range.start);
	off &= ~(mv->chunk - 1);
	atomic_fetch_add(&mv->faults, 1);
	cov_event(UFFD_EVT_PAGEFAULT, MEM_ANON);
	return uffd_move(u, mv->dst + off, mv->src + off, mv->chunk, 0);
}

enum pmd_expect { PMD_ANY, PMD_MOVED, PMD_SPLIT };

/*
 * Move every chunk of a populated source into a registered destination, one fault each. With a
 * source made of transparent huge pages and 2 MB chunks, the kernel moves whole PMDs when the
 * destination's PMD is empty (PMD_MOVED), and must split them when the destination faulted in
 * a page table of small pages (PMD_SPLIT, a MADV_NOHUGEPAGE destination).
 */
static void move_common(size_t chunk, int src_advice, int dst_advice, enum pmd_expect pmd,
			const char *scenario)
{
	const size_t ps = tu_page();
	const size_t len = 8 * ((size_t)2 << 20);
	const size_t npages = len / ps;
	struct uffd *u = conf_open(MEM_ANON, UFFD_FEATURE_MOVE);
	struct mv_server mv = { .chunk = chunk };
	struct server s;
	char *src, *dst;
	long src_thp;

	cov_scenario = scenario;
	src = conf_mmap_aligned(len, (size_t)2 << 20, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dst = conf_mmap_aligned(len, (size_t)2 << 20, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(src, MAP_FAILED);
	ck_assert_ptr_ne(dst, MAP_FAILED);
	/* Before the source is populated: it decides whether the source is made of THPs. */
	ck_assert_int_eq(madvise(src, len, src_advice), 0);
	ck_assert_int_eq(madvise(dst, len, dst_advice), 0);
	ck_assert_int_eq(madvise(src, len, MADV_DONTFORK), 0);
	fill_counters(src, ps, npages);
	src_thp = smaps_bytes(src, "AnonHugePages");

	mv.src = src;
	mv.dst = dst;
	conf_register(u, MEM_ANON, dst, len, UFFDIO_REGISTER_MODE_MISSING, (void *)0x3);
	uffd_on_pagefault(u, mv_fault, &mv);
	server_start(&s, u);
	for (size_t c = 0; c < len / chunk; c++) {
		size_t first = c * chunk / ps, n = chunk / ps;

		size_t bad_src = 0, bad_dst = 0, left = 0;

		for (size_t i = first; i < first + n; i++)
			bad_src += *(volatile uint64_t *)(src + i * ps) != i + 1;
		/* The first read faults; the monitor moves the whole chunk. */
		for (size_t i = first; i < first + n; i++)
			bad_dst += *(volatile uint64_t *)(dst + i * ps) != i + 1;
		/* The source is empty now: it reads as zeros. */
		for (size_t i = first; i < first + n; i++)
			left += *(volatile uint64_t *)(src + i * ps) != 0;
		ck_assert_msg(!bad_src && !bad_dst && !left,
			      "chunk %zu: %zu bad source, %zu bad destination, %zu not moved", c,
			      bad_src, bad_dst, left);
	}
	ck_assert_int_eq(server_stop(&s), 0);
	ck_assert_int_eq(atomic_load(&mv.faults), (int)(len / chunk));
	ck_assert_int_eq(atomic_load(&mv.bad_flags), 0);
	if (pmd != PMD_ANY && src_thp != (long)len)
		fprintf(stderr,
			"note: %s: the source got %ld of %zu bytes in huge pages; the PMD "
			"path was not (fully) taken\n",
			scenario, src_thp, len);
	else if (pmd == PMD_MOVED)
		ck_assert_int_eq(smaps_bytes(dst, "AnonHugePages"), (long)len);
	else if (pmd == PMD_SPLIT)
		ck_assert_int_eq(smaps_bytes(dst, "AnonHugePages"), 0);
	cov_ioctl(_UFFDIO_MOVE, MEM_ANON);
	cov_feature(UFFD_FEATURE_MOVE, MEM_ANON);
	uffd_close(u);
	munmap(src, len);
	munmap(dst, len);
	cov_pass(scenario, MEM_ANON);
}

START_TEST(move)
{
	move_common(tu_page(), MADV_NOHUGEPAGE, MADV_NOHUGEPAGE, PMD_ANY, "move");
}
END_TEST

START_TEST(move_pmd)
{
	move_common((size_t)2 << 20, MADV_HUGEPAGE, MADV_HUGEPAGE, PMD_MOVED, "move-pmd");
}
END_TEST

START_TEST(move_pmd_split)
{
	move_common((size_t)2 << 20, MADV_HUGEPAGE, MADV_NOHUGEPAGE, PMD_SPLIT, "move-pmd-split");
}
END_TEST

/* MOVE is for private anonymous memory: on shmem and hugetlbfs the kernel refuses it. */
START_TEST(move_refused)
{
	const enum mem m = (enum mem)(_i + 1);
	struct uffd *u = conf_open(m, mem_missing_feature(m) | UFFD_FEATURE_MOVE);
	struct area a;
	char *src;
	int r;

	cov_scenario = "move";
	area_init(&a, m, 1);
	src = tu_map_anon(a.ps);
	memset(src, 0x11, a.ps);
	conf_register(u, m, a.p, a.len, UFFDIO_REGISTER_MODE_MISSING, NULL);
	r = uffd_move(u, a.p, src, a.ps, 0);
	ck_assert_int_eq(r, -EINVAL);
	ck_assert_uint_eq(uffd_last_done(), 0);
	ck_assert_int_eq(src[a.ps - 1], 0x11); /* nothing moved */
	cov_ioctl_refused(_UFFDIO_MOVE, m, r, "MOVE needs private anonymous memory");
	cov_feature_refused(UFFD_FEATURE_MOVE, m, r, "MOVE needs private anonymous memory");
	cov_row("scenario", "move", m, "refused", r, "MOVE needs private anonymous memory");
	uffd_close(u);
	munmap(src, a.ps);
	area_free(&a);
}
END_TEST

/* ---- poison ---- */

struct po_server {
	enum mem m;
	struct area *a;
	const char *zeros;
	_Atomic int faults;
	_Atomic int err;
};

/* Odd pages get a page of zeros, even pages a poison marker. */
static int po_fault(struct uffd *u, const struct uffd_pagefault *pf, void *arg)
{
	struct po_server *po = arg;
	size_t ps = po->a->ps;
	size_t off = (size_t)((char *)pf->address - po->a->p) & ~(ps - 1);
	int r;

	if (pf->flags & (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_MINOR))
		atomic_store(&po->err, -EPROTO);
	atomic_fetch_add(&po->faults, 1);
	cov_event(UFFD_EVT_PAGEFAULT, po->m);
	if ((off / ps) & 1)
		r = uffd_copy(u, po->a->p + off, po->zeros, ps, 0);
	else
		r = uffd_poison(u, po->a->p + off, ps, 0);
	if (r)
		atomic_store(&po->err, r);
	return r;
}

START_TEST(poison)
{
	const enum mem m = (enum mem)_i;
	struct uffd *u = conf_open(m, mem_missing_feature(m) | UFFD_FEATURE_POISON);
	struct po_server po = { .m = m };
	size_t npages = mem_huge(m) ? 4 : 32;
	sigjmp_buf jb;
	volatile size_t nbus = 0, i;
	struct server s;
	struct area a;
	char *zeros;

	cov_scenario = "poison";
	area_init(&a, m, npages);
	zeros = tu_map_anon(a.ps);
	po.a = &a;
	po.zeros = zeros;
	conf_register(u, m, a.p, a.len, UFFDIO_REGISTER_MODE_MISSING, NULL);
	uffd_on_pagefault(u, po_fault, &po);
	server_start(&s, u);
	bus_catch();
	for (i = 0; i < npages; i++) {
		const char *b = area_page(&a, i);

		bus_jmp = &jb;
		if (sigsetjmp(jb, 1)) {
			nbus++;
			ck_assert_msg(i % 2 == 0, "SIGBUS on page %zu, which was copied",
				      (size_t)i);
			continue;
		}
		for (size_t k = 0; k < a.ps; k += 64)
			if (((volatile const char *)b)[k] != 0)
				ck_abort_msg("page %zu byte %zu is not zero", (size_t)i, k);
		ck_assert_msg(i % 2 == 1, "page %zu was poisoned but read", (size_t)i);
	}
	bus_jmp = NULL;
	ck_assert_int_eq(server_stop(&s), 0);
	ck_assert_int_eq(atomic_load(&po.err), 0);
	ck_assert_uint_eq(nbus, npages / 2);
	ck_assert_int_eq(atomic_load(&po.faults), (int)npages);
	cov_ioctl(_UFFDIO_POISON, m);
	cov_ioctl(_UFFDIO_COPY, m);
	cov_feature(UFFD_FEATURE_POISON, m);
	uffd_close(u);
	munmap(zeros, a.ps);
	area_free(&a);
	cov_pass("poison", m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conf_fill");
	TCase *zp = tcase_create("zeropage"), *mv = tcase_create("move"),
	      *po = tcase_create("poison");

	huge_ok = conf_start("test_conf_fill", false);

	tcase_set_timeout(zp, 30);
	tcase_add_loop_test(zp, zeropage, 0, conf_mem_end(huge_ok));
	tcase_set_timeout(mv, 60);
	tcase_add_test(mv, move);
	tcase_add_test(mv, move_pmd);
	tcase_add_test(mv, move_pmd_split);
	tcase_add_loop_test(mv, move_refused, 0, conf_mem_end(huge_ok) - 1);
	tcase_set_timeout(po, 30);
	tcase_add_loop_test(po, poison, 0, conf_mem_end(huge_ok));
	suite_add_tcase(s, zp);
	suite_add_tcase(s, mv);
	suite_add_tcase(s, po);
	return tu_run(s);
}
