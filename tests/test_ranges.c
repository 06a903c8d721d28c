/* SPDX-License-Identifier: MIT */
/* Tests for the range map: the hidden uffd_rmap_* API against a page model, -ENOMEM atomicity,
 * scale, and uffd_register / uffd_unregister / uffd_range_* against the real kernel. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/userfaultfd.h>
#include <uffd.h>

#include "internal.h"
#include "testutil.h"

/*
 * In fork mode Check reports every passing assertion to the parent with a write(): millions of
 * syscalls in the model test. These versions are silent until they fail.
 */
#define REQ_CMP(type, fmt, a, op, b)                                                    \
	do {                                                                            \
		type a_ = (type)(a);                                                    \
		type b_ = (type)(b);                                                    \
		if (!(a_ op b_))                                                        \
			ck_abort_msg("%s %s %s: " fmt " vs " fmt, #a, #op, #b, a_, b_); \
	} while (0)
#undef ck_assert
#define ck_assert(c)                                    \
	do {                                            \
		if (!(c))                               \
			ck_abort_msg("failed: %s", #c); \
	} while (0)
#define REQ_INT(a, op, b) REQ_CMP(long long, "%lld", a, op, b)
#define REQ_UINT(a, op, b) REQ_CMP(unsigned long long, "%llu", a, op, b)
#define REQ_PTR(a, op, b) REQ_CMP(const void *, "%p", a, op, b)
#undef ck_assert_int_eq
#define ck_assert_int_eq(a, b) REQ_INT(a, ==, b)
#undef ck_assert_int_ne
#define ck_assert_int_ne(a, b) REQ_INT(a, !=, b)
#undef ck_assert_int_lt
#define ck_assert_int_lt(a, b) REQ_INT(a, <, b)
#undef ck_assert_int_le
#define ck_assert_int_le(a, b) REQ_INT(a, <=, b)
#undef ck_assert_int_gt
#define ck_assert_int_gt(a, b) REQ_INT(a, >, b)
#undef ck_assert_int_ge
#define ck_assert_int_ge(a, b) REQ_INT(a, >=, b)
#undef ck_assert_uint_eq
#define ck_assert_uint_eq(a, b) REQ_UINT(a, ==, b)
#undef ck_assert_uint_ne
#define ck_assert_uint_ne(a, b) REQ_UINT(a, !=, b)
#undef ck_assert_uint_lt
#define ck_assert_uint_lt(a, b) REQ_UINT(a, <, b)
#undef ck_assert_uint_le
#define ck_assert_uint_le(a, b) REQ_UINT(a, <=, b)
#undef ck_assert_uint_gt
#define ck_assert_uint_gt(a, b) REQ_UINT(a, >, b)
#undef ck_assert_uint_ge
#define ck_assert_uint_ge(a, b) REQ_UINT(a, >=, b)
#undef ck_assert_ptr_eq
#define ck_assert_ptr_eq(a, b) REQ_PTR(a, ==, b)
#undef ck_assert_ptr_ne
#define ck_assert_ptr_ne(a, b) REQ_PTR(a, !=, b)
#undef ck_assert_ptr_null
#define ck_assert_ptr_null(a) REQ_PTR(a, ==, NULL)
#undef ck_assert_ptr_nonnull
#define ck_assert_ptr_nonnull(a) REQ_PTR(a, !=, NULL)

/* The fault-injection hooks in sys.c (hidden, reachable through the static library). */
void uffd_test_fail_at(int site, int nth, int err);
void uffd_test_fail_from(int site, int nth, int err);
unsigned long uffd_test_calls(int site);

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64: deterministic, so a failure reproduces. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- checking a map ---- */

static long check_subtree(const struct uffd_node *t, const struct uffd_node **inorder)
{
	long n;

	if (!t)
		return 0;
	if (t->left)
		ck_assert_uint_ge(t->prio, t->left->prio);
	if (t->right)
		ck_assert_uint_ge(t->prio, t->right->prio);
	n = check_subtree(t->left, inorder);
	/* In-order traversal must visit exactly the list, in order. */
	ck_assert_ptr_eq(t, *inorder);
	*inorder = t->next;
	return n + 1 + check_subtree(t->right, inorder);
}

/* Every structural invariant: list order and links, tree order and heap, counts. */
static void check_map(const struct uffd_rmap *m)
{
	const struct uffd_node *p, *prev = NULL, *walk = m->first;
	long n = 0;
	size_t nfree = 0;

	for (p = m->first; p; prev = p, p = p->next, n++) {
		ck_assert_ptr_eq(p->prev, prev);
		ck_assert_uint_lt(p->start, p->end);
		if (prev)
			ck_assert_uint_le(prev->end, p->start);
	}
	ck_assert_int_eq(n, m->count);
	ck_assert_int_eq(check_subtree(m->root, &walk), m->count);
	ck_assert_ptr_null(walk);
	for (p = m->free; p; p = p->next)
		nfree++;
	ck_assert_uint_eq(nfree, m->nfree);
}

struct piece {
	uintptr_t start, end;
	void *data;
	size_t offset;
	uint64_t modes;
};

/* Copy the map's pieces out, for "unchanged" comparisons. Returns the count. */
static size_t snapshot(const struct uffd_rmap *m, struct piece **out)
{
	size_t n = 0;
	struct piece *v = calloc((size_t)m->count + 1, sizeof(*v));

	ck_assert_ptr_nonnull(v);
	for (const struct uffd_node *p = m->first; p; p = p->next)
		v[n++] = (struct piece){ p->start, p->end, p->data, p->offset, p->modes };
	*out = v;
	return n;
}

static void assert_same(const struct uffd_rmap *m, const struct piece *v, size_t n)
{
	size_t i = 0;

	check_map(m);
	ck_assert_uint_eq((size_t)m->count, n);
	for (const struct uffd_node *p = m->first; p; p = p->next, i++) {
		ck_assert_uint_eq(p->start, v[i].start);
		ck_assert_uint_eq(p->end, v[i].end);
		ck_assert_ptr_eq(p->data, v[i].data);
		ck_assert_uint_eq(p->offset, v[i].offset);
		ck_assert_uint_eq(p->modes, v[i].modes);
	}
}

static void expect_piece(const struct uffd_node *n, uintptr_t start, uintptr_t end, void *data,
			 size_t offset)
{
	ck_assert_ptr_nonnull(n);
	ck_assert_uint_eq(n->start, start);
	ck_assert_uint_eq(n->end, end);
	ck_assert_ptr_eq(n->data, data);
	ck_assert_uint_eq(n->offset, offset);
}

#define D(x) ((void *)(uintptr_t)(x))

/* ---- the map API, by hand ---- */

START_TEST(rmap_basic)
{
	struct uffd_rmap m;
	struct uffd_range r;

	uffd_rmap_init(&m, 1);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0));
	ck_assert_ptr_null(uffd_rmap_next(&m, 0));
	ck_assert(!uffd_rmap_overlaps(&m, 0, UINTPTR_MAX));

	ck_assert_int_eq(uffd_rmap_insert(&m, 0x1000, 0x5000, D(1), 7, 1), 0);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x8000, 0x9000, D(2), 0, 2), 0);
	check_map(&m);
	ck_assert_int_eq(m.count, 2);

	ck_assert_ptr_null(uffd_rmap_find(&m, 0xfff));
	expect_piece(uffd_rmap_find(&m, 0x1000), 0x1000, 0x5000, D(1), 7);
	expect_piece(uffd_rmap_find(&m, 0x4fff), 0x1000, 0x5000, D(1), 7);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x5000));
	expect_piece(uffd_rmap_find(&m, 0x8000), 0x8000, 0x9000, D(2), 0);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x9000));
	ck_assert_ptr_null(uffd_rmap_find(&m, UINTPTR_MAX));

	expect_piece(uffd_rmap_next(&m, 0), 0x1000, 0x5000, D(1), 7);
	expect_piece(uffd_rmap_next(&m, 0x4fff), 0x1000, 0x5000, D(1), 7);
	expect_piece(uffd_rmap_next(&m, 0x5000), 0x8000, 0x9000, D(2), 0);
	expect_piece(uffd_rmap_next(&m, 0x8fff), 0x8000, 0x9000, D(2), 0);
	ck_assert_ptr_null(uffd_rmap_next(&m, 0x9000));

	ck_assert(uffd_rmap_overlaps(&m, 0, 0x1001));
	ck_assert(!uffd_rmap_overlaps(&m, 0, 0x1000));
	ck_assert(!uffd_rmap_overlaps(&m, 0x5000, 0x8000));
	ck_assert(uffd_rmap_overlaps(&m, 0x5000, 0x8001));
	ck_assert(uffd_rmap_overlaps(&m, 0x2000, 0x3000));
	ck_assert(!uffd_rmap_overlaps(&m, 0x2000, 0x2000));
	ck_assert(!uffd_rmap_overlaps(&m, 0x9000, UINTPTR_MAX));

	uffd_rmap_fill(uffd_rmap_find(&m, 0x2000), &r);
	ck_assert_ptr_eq(r.start, D(0x1000));
	ck_assert_ptr_eq(r.end, D(0x5000));
	ck_assert_ptr_eq(r.data, D(1));
	ck_assert_uint_eq(r.offset, 7);

	uffd_rmap_destroy(&m);
	ck_assert_int_eq(m.count, 0);
	ck_assert_ptr_null(m.chunks);
	ck_assert_ptr_null(m.first);
	/* A destroyed map is empty and usable again. */
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x1000, 0x2000, D(1), 0, 1), 0);
	uffd_rmap_destroy(&m);
	/* Destroying an empty map twice is fine. */
	uffd_rmap_destroy(&m);
}
END_TEST

START_TEST(rmap_cut_splits)
{
	struct uffd_rmap m;

	uffd_rmap_init(&m, 2);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x10000, 0x20000, D(1), 0x100, 3), 0);

	/* A hole in the middle: both sides keep data; the right one's offset moves on. */
	ck_assert_int_eq(uffd_rmap_cut(&m, 0x14000, 0x15000), 0);
	check_map(&m);
	ck_assert_int_eq(m.count, 2);
	expect_piece(uffd_rmap_find(&m, 0x13fff), 0x10000, 0x14000, D(1), 0x100);
	expect_piece(uffd_rmap_find(&m, 0x15000), 0x15000, 0x20000, D(1), 0x100 + 0x5000);
	ck_assert_uint_eq(uffd_rmap_find(&m, 0x15000)->modes, 3);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x14000));

	/* Across the hole, cutting the left piece's tail and the right piece's head. */
	ck_assert_int_eq(uffd_rmap_cut(&m, 0x12000, 0x17000), 0);
	check_map(&m);
	expect_piece(uffd_rmap_find(&m, 0x10000), 0x10000, 0x12000, D(1), 0x100);
	expect_piece(uffd_rmap_find(&m, 0x17000), 0x17000, 0x20000, D(1), 0x100 + 0x7000);

	/* Exactly a whole piece, then a range with nothing in it, then an empty range. */
	ck_assert_int_eq(uffd_rmap_cut(&m, 0x10000, 0x12000), 0);
	ck_assert_int_eq(m.count, 1);
	ck_assert_int_eq(uffd_rmap_cut(&m, 0x1000, 0x2000), 0);
	ck_assert_int_eq(uffd_rmap_cut(&m, 0x18000, 0x18000), 0);
	ck_assert_int_eq(m.count, 1);
	/* Over everything. */
	ck_assert_int_eq(uffd_rmap_cut(&m, 0, UINTPTR_MAX), 0);
	ck_assert_int_eq(m.count, 0);
	ck_assert_ptr_null(m.root);
	check_map(&m);
	uffd_rmap_destroy(&m);
}
END_TEST

START_TEST(rmap_insert_replaces)
{
	struct uffd_rmap m;

	uffd_rmap_init(&m, 3);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x1000, 0x4000, D(1), 0, 1), 0);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x5000, 0x8000, D(2), 0, 1), 0);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x9000, 0xa000, D(3), 0, 1), 0);
	/* Over the tail of 1, all of the gap and 2, and the head of nothing. */
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x3000, 0x8800, D(4), 0x40, 2), 0);
	check_map(&m);
	ck_assert_int_eq(m.count, 3);
	expect_piece(uffd_rmap_find(&m, 0x1000), 0x1000, 0x3000, D(1), 0);
	expect_piece(uffd_rmap_find(&m, 0x6000), 0x3000, 0x8800, D(4), 0x40);
	ck_assert_uint_eq(uffd_rmap_find(&m, 0x6000)->modes, 2);
	expect_piece(uffd_rmap_find(&m, 0x9000), 0x9000, 0xa000, D(3), 0);

	/* Inside a piece: three pieces where there was one. */
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x4000, 0x5000, D(5), 0, 1), 0);
	check_map(&m);
	ck_assert_int_eq(m.count, 5);
	expect_piece(uffd_rmap_find(&m, 0x3000), 0x3000, 0x4000, D(4), 0x40);
	expect_piece(uffd_rmap_find(&m, 0x4000), 0x4000, 0x5000, D(5), 0);
	expect_piece(uffd_rmap_find(&m, 0x5000), 0x5000, 0x8800, D(4), 0x40 + 0x2000);

	/* Exactly over a piece: replaced, not duplicated. */
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x4000, 0x5000, D(6), 1, 1), 0);
	ck_assert_int_eq(m.count, 5);
	expect_piece(uffd_rmap_find(&m, 0x4000), 0x4000, 0x5000, D(6), 1);

	/* Adjacent pieces with the same data are not merged. */
	ck_assert_int_eq(uffd_rmap_insert(&m, 0xa000, 0xb000, D(3), 0x1000, 1), 0);
	ck_assert_int_eq(m.count, 6);
	check_map(&m);
	uffd_rmap_destroy(&m);
}
END_TEST

START_TEST(rmap_move)
{
	struct uffd_rmap m;

	uffd_rmap_init(&m, 4);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x10000, 0x14000, D(1), 0, 1), 0);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x15000, 0x16000, D(2), 0x10, 2), 0);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x40000, 0x48000, D(3), 0, 1), 0);

	/* The middle of piece 1 and all of 2, into the middle of 3. */
	ck_assert_int_eq(uffd_rmap_move(&m, 0x12000, 0x42000, 0x4000), 0);
	check_map(&m);
	ck_assert_int_eq(m.count, 5);
	expect_piece(uffd_rmap_find(&m, 0x10000), 0x10000, 0x12000, D(1), 0);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x12000));
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x15000));
	expect_piece(uffd_rmap_find(&m, 0x40000), 0x40000, 0x42000, D(3), 0);
	expect_piece(uffd_rmap_find(&m, 0x42000), 0x42000, 0x44000, D(1), 0x2000);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x44000)); /* the gap moved too */
	expect_piece(uffd_rmap_find(&m, 0x45000), 0x45000, 0x46000, D(2), 0x10);
	ck_assert_uint_eq(uffd_rmap_find(&m, 0x45000)->modes, 2);
	expect_piece(uffd_rmap_find(&m, 0x46000), 0x46000, 0x48000, D(3), 0x6000);

	/* Overlapping, forwards then backwards, by less than the length. */
	ck_assert_int_eq(uffd_rmap_move(&m, 0x40000, 0x41000, 0x8000), 0);
	check_map(&m);
	expect_piece(uffd_rmap_find(&m, 0x41000), 0x41000, 0x43000, D(3), 0);
	expect_piece(uffd_rmap_find(&m, 0x43000), 0x43000, 0x45000, D(1), 0x2000);
	expect_piece(uffd_rmap_find(&m, 0x46000), 0x46000, 0x47000, D(2), 0x10);
	expect_piece(uffd_rmap_find(&m, 0x47000), 0x47000, 0x49000, D(3), 0x6000);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x40000));
	ck_assert_int_eq(uffd_rmap_move(&m, 0x41000, 0x40000, 0x8000), 0);
	check_map(&m);
	expect_piece(uffd_rmap_find(&m, 0x40000), 0x40000, 0x42000, D(3), 0);
	expect_piece(uffd_rmap_find(&m, 0x47000), 0x46000, 0x48000, D(3), 0x6000);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x48000));

	/* Nothing there to move: the destination is still cleared. */
	ck_assert_int_eq(uffd_rmap_move(&m, 0x90000, 0x40000, 0x1000), 0);
	ck_assert_ptr_null(uffd_rmap_find(&m, 0x40000));
	expect_piece(uffd_rmap_find(&m, 0x41000), 0x41000, 0x42000, D(3), 0x1000);

	/* Length 0 and from == to change nothing; wrapping is refused. */
	{
		struct piece *v;
		size_t n = snapshot(&m, &v);

		ck_assert_int_eq(uffd_rmap_move(&m, 0x10000, 0x90000, 0), 0);
		ck_assert_int_eq(uffd_rmap_move(&m, 0x10000, 0x10000, 0x1000), 0);
		ck_assert_int_eq(uffd_rmap_move(&m, UINTPTR_MAX - 0xfff, 0x0, 0x2000), -EINVAL);
		ck_assert_int_eq(uffd_rmap_move(&m, 0x10000, UINTPTR_MAX - 0xfff, 0x2000), -EINVAL);
		assert_same(&m, v, n);
		free(v);
	}
	uffd_rmap_destroy(&m);
}
END_TEST

START_TEST(rmap_clone)
{
	struct uffd_rmap a, b, c;
	struct piece *v;
	size_t n;

	uffd_rmap_init(&a, 5);
	uffd_rmap_init(&b, 6);
	uffd_rmap_init(&c, 7);
	for (uintptr_t i = 0; i < 3000; i++)
		ck_assert_int_eq(uffd_rmap_insert(&a, 0x100000 + i * 0x2000, 0x101000 + i * 0x2000,
						  D(i), i * 3, 1 + i % 7),
				 0);
	n = snapshot(&a, &v);
	ck_assert_int_eq(uffd_rmap_clone(&b, &a), 0);
	assert_same(&b, v, n);
	assert_same(&a, v, n); /* the source is untouched */

	/* Independent afterwards. */
	ck_assert_int_eq(uffd_rmap_cut(&b, 0, UINTPTR_MAX), 0);
	ck_assert_int_eq(b.count, 0);
	assert_same(&a, v, n);

	/* Only into an empty map, and not into itself. */
	ck_assert_int_eq(uffd_rmap_insert(&c, 0x1000, 0x2000, D(1), 0, 1), 0);
	ck_assert_int_eq(uffd_rmap_clone(&c, &a), -EINVAL);
	ck_assert_int_eq(c.count, 1);
	ck_assert_int_eq(uffd_rmap_clone(&a, &a), -EINVAL);
	assert_same(&a, v, n);

	/* An empty source gives an empty copy. */
	uffd_rmap_destroy(&c);
	ck_assert_int_eq(uffd_rmap_clone(&c, &b), 0);
	ck_assert_int_eq(c.count, 0);

	free(v);
	uffd_rmap_destroy(&a);
	uffd_rmap_destroy(&b);
	uffd_rmap_destroy(&c);
}
END_TEST

START_TEST(rmap_bad_args)
{
	struct uffd_rmap m;
	struct piece *v;
	size_t n;

	uffd_rmap_init(&m, 8);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x1000, 0x3000, D(1), 0, 1), 0);
	n = snapshot(&m, &v);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x2000, 0x2000, D(2), 0, 1), -EINVAL);
	ck_assert_int_eq(uffd_rmap_insert(&m, 0x3000, 0x2000, D(2), 0, 1), -EINVAL);
	ck_assert_int_eq(uffd_rmap_cut(&m, 0x3000, 0x2000), -EINVAL);
	assert_same(&m, v, n);
	free(v);
	uffd_rmap_destroy(&m);
}
END_TEST

/* ---- the map against a page model, under random operations ---- */

#define NPAGES 4096
#define UNIT ((uintptr_t)0x1000)
#define BASE ((uintptr_t)0x40000000)

struct mpage {
	uint64_t present, data, offset; /* offset of this page from its registration's start */
};

static struct mpage model[NPAGES], got[NPAGES], tmp[NPAGES];

static uintptr_t pg(size_t i)
{
	return BASE + i * UNIT;
}

static void model_insert(size_t s, size_t e, uint64_t data, uint64_t off)
{
	for (size_t i = s; i < e; i++)
		model[i] = (struct mpage){ 1, data, off + (i - s) * UNIT };
}

static void model_cut(size_t s, size_t e)
{
	memset(&model[s], 0, (e - s) * sizeof(model[0]));
}

static void model_move(size_t from, size_t to, size_t len)
{
	memcpy(tmp, &model[from], len * sizeof(model[0]));
	model_cut(from, from + len);
	memcpy(&model[to], tmp, len * sizeof(model[0]));
}

/* Expand the map page by page and compare with the model. */
static void compare_model(const struct uffd_rmap *m)
{
	memset(got, 0, sizeof(got));
	for (const struct uffd_node *p = m->first; p; p = p->next) {
		ck_assert_uint_ge(p->start, BASE);
		ck_assert_uint_le(p->end, pg(NPAGES));
		ck_assert_uint_eq((p->start - BASE) % UNIT, 0);
		ck_assert_uint_eq((p->end - BASE) % UNIT, 0);
		for (uintptr_t a = p->start; a < p->end; a += UNIT)
			got[(a - BASE) / UNIT] = (struct mpage){ 1, (uint64_t)(uintptr_t)p->data,
								 p->offset + (a - p->start) };
	}
	for (size_t i = 0; i < NPAGES; i++) {
		if (memcmp(&got[i], &model[i], sizeof(got[i])) != 0)
			ck_abort_msg("page %zu: map has %d/%llu/%#llx, model %d/%llu/%#llx", i,
				     (int)got[i].present, (unsigned long long)got[i].data,
				     (unsigned long long)got[i].offset, (int)model[i].present,
				     (unsigned long long)model[i].data,
				     (unsigned long long)model[i].offset);
	}
}

/* find() and next() at a few random addresses, answered from the model. */
static void probe_model(struct uffd_rmap *m)
{
	for (int k = 0; k < 4; k++) {
		size_t i = rnd() % NPAGES;
		uintptr_t a = pg(i) + rnd() % UNIT;
		const struct uffd_node *f = uffd_rmap_find(m, a), *nx = uffd_rmap_next(m, a);
		size_t j = i;

		if (model[i].present) {
			ck_assert_ptr_nonnull(f);
			ck_assert_uint_eq((uint64_t)(uintptr_t)f->data, model[i].data);
			ck_assert_uint_eq(f->offset + (pg(i) - f->start), model[i].offset);
			ck_assert_ptr_eq(nx, f);
		} else {
			ck_assert_ptr_null(f);
			while (j < NPAGES && !model[j].present)
				j++;
			if (j == NPAGES)
				ck_assert_ptr_null(nx);
			else
				ck_assert_uint_eq(nx->start, pg(j));
		}
	}
}

static size_t rnd_len(void)
{
	return rnd() % 8 ? 1 + rnd() % 32 : 1 + rnd() % 1024;
}

/* One random map operation on pages of the model. */
struct rop {
	int kind; /* 0 insert, 1 cut, 2 move */
	size_t s, e, from, to, len;
	uint64_t data, off, modes;
};

static int rop_apply(struct uffd_rmap *m, const struct rop *o)
{
	switch (o->kind) {
	case 0:
		return uffd_rmap_insert(m, pg(o->s), pg(o->e), D(o->data), o->off, o->modes);
	case 1:
		return uffd_rmap_cut(m, pg(o->s), pg(o->e));
	default:
		return uffd_rmap_move(m, pg(o->from), pg(o->to), o->len * UNIT);
	}
}

static void rop_model(const struct rop *o)
{
	switch (o->kind) {
	case 0:
		model_insert(o->s, o->e, o->data, o->off);
		break;
	case 1:
		model_cut(o->s, o->e);
		break;
	default:
		model_move(o->from, o->to, o->len);
		break;
	}
}

/*
 * Exact reservation check: leave the map exactly j free nodes and make mmap fail. An operation
 * that counts what it needs fails with -ENOMEM, unchanged, until j reaches its count; one that
 * under-counts takes a node from an empty free list and crashes the test.
 */
struct stash {
	struct uffd_node *rest;
	size_t nrest;
};

static void stash_take(struct uffd_rmap *m, size_t j, struct stash *st)
{
	struct uffd_node **link = &m->free;

	ck_assert_int_eq(uffd_rmap_reserve(m, j), 0);
	for (size_t k = 0; k < j; k++)
		link = &(*link)->next;
	st->rest = *link;
	st->nrest = m->nfree - j;
	*link = NULL;
	m->nfree = j;
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
}

static void stash_give_back(struct uffd_rmap *m, struct stash *st)
{
	struct uffd_node **link = &m->free;

	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	while (*link)
		link = &(*link)->next;
	*link = st->rest;
	m->nfree += st->nrest;
}

static void rop_apply_strict(struct uffd_rmap *m, const struct rop *o)
{
	for (size_t j = 0;; j++) {
		struct stash st;
		int rc;

		ck_assert_uint_le(j, 3); /* no operation needs more than three nodes */
		stash_take(m, j, &st);
		rc = rop_apply(m, o);
		stash_give_back(m, &st);
		if (rc == 0)
			return;
		ck_assert_int_eq(rc, -ENOMEM);
		compare_model(m); /* the model is not updated yet: the map must not be either */
	}
}

START_TEST(rmap_random_model)
{
	struct uffd_rmap m;
	long max_count = 0;
	unsigned strict = 0;

	rng_state = 12345;
	memset(model, 0, sizeof(model));
	uffd_rmap_init(&m, 99);
	for (int op = 0; op < 100000; op++) {
		unsigned kind = (unsigned)(rnd() % 100);
		size_t len = rnd_len();
		struct rop o = { 0 };

		if (len > NPAGES)
			len = NPAGES;
		if (kind < 45) {
			o.kind = 0;
			o.s = rnd() % (NPAGES - len + 1);
			o.e = o.s + len;
			o.data = 1 + rnd() % 8;
			o.off = (rnd() % 64) * UNIT;
			o.modes = 1 + rnd() % 7;
		} else if (kind < 70) {
			o.kind = 1;
			o.s = rnd() % (NPAGES - len + 1);
			o.e = o.s + len;
		} else if (kind < 98) {
			o.kind = 2;
			o.len = len;
			o.from = rnd() % (NPAGES - len + 1);
			o.to = rnd() % 4 ? rnd() % (NPAGES - len + 1) :
					   (size_t)((long)o.from +
						    ((long)(rnd() % (2 * len + 1)) - (long)len));
			if (o.to > NPAGES - len) /* also catches a negative overlap offset */
				o.to = NPAGES - len;
		} else {
			/* Continue on a clone, as a fork child's map would. */
			struct uffd_rmap c;

			uffd_rmap_init(&c, (uint32_t)rnd());
			ck_assert_int_eq(uffd_rmap_clone(&c, &m), 0);
			uffd_rmap_destroy(&m);
			m = c;
			o.kind = -1;
		}
		if (o.kind >= 0) {
			if (rnd() % 5 == 0) {
				rop_apply_strict(&m, &o);
				strict++;
			} else {
				ck_assert_int_eq(rop_apply(&m, &o), 0);
			}
			rop_model(&o);
		}
		compare_model(&m);
		probe_model(&m);
		if (op % 1000 == 0)
			check_map(&m);
		if (m.count > max_count)
			max_count = m.count;
	}
	check_map(&m);
	/* The mix must keep a busy map, or the test proves little. */
	ck_assert_int_gt(max_count, 100);
	ck_assert_uint_gt(strict, 10000);
	uffd_rmap_destroy(&m);
}
END_TEST

/* ---- -ENOMEM: nothing changes ---- */

/* Use up the free list with pieces far from anything the test touches. */
static void drain(struct uffd_rmap *m, uintptr_t far)
{
	while (m->nfree > 0) {
		ck_assert_int_eq(uffd_rmap_insert(m, far, far + UNIT, D(0xdead), 0, 1), 0);
		far += 2 * UNIT;
	}
}

START_TEST(rmap_enomem_atomic)
{
	struct uffd_rmap m, c;
	struct piece *v;
	size_t n;
	const uintptr_t far = (uintptr_t)1 << 40;

	uffd_rmap_init(&m, 10);
	for (size_t i = 0; i < 50; i++)
		ck_assert_int_eq(uffd_rmap_insert(&m, pg(i * 4), pg(i * 4 + 3), D(i + 1), i, 1), 0);

	ck_assert_int_eq(uffd_rmap_insert(&m, pg(300), pg(320), D(77), 0, 1), 0);

	for (int which = 0; which < 7; which++) {
		int rc = 0;

		drain(&m, far + (uintptr_t)which * ((uintptr_t)1 << 32));
		n = snapshot(&m, &v);
		uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
		switch (which) {
		case 0: /* insert into a gap: one node */
			rc = uffd_rmap_insert(&m, pg(3), pg(4), D(99), 0, 1);
			break;
		case 1: /* insert inside a piece: two nodes */
			rc = uffd_rmap_insert(&m, pg(9), pg(10), D(99), 0, 1);
			break;
		case 2: /* cut inside a piece */
			rc = uffd_rmap_cut(&m, pg(13), pg(14));
			break;
		case 3: /* move splitting the source */
			rc = uffd_rmap_move(&m, pg(17), pg(100), UNIT);
			break;
		case 4: /* move of a whole piece into the middle of another */
			rc = uffd_rmap_move(&m, pg(20), pg(305), 3 * UNIT);
			break;
		case 5: /* clone */
			uffd_rmap_init(&c, 1);
			rc = uffd_rmap_clone(&c, &m);
			ck_assert_int_eq(c.count, 0);
			ck_assert_ptr_null(c.first);
			uffd_rmap_destroy(&c);
			break;
		default: /* reserve itself */
			rc = uffd_rmap_reserve(&m, 1);
			break;
		}
		ck_assert_msg(rc == -ENOMEM, "op %d gave %d", which, rc);
		assert_same(&m, v, n);
		free(v);
		uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	}

	/* Operations that need no node still work with an empty free list and mmap failing. */
	drain(&m, far + ((uintptr_t)1 << 39));
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	ck_assert_int_eq(uffd_rmap_cut(&m, pg(0), pg(3)), 0);			 /* a whole piece */
	ck_assert_int_eq(uffd_rmap_cut(&m, pg(4), pg(5)), 0);			 /* a head */
	ck_assert_int_eq(uffd_rmap_move(&m, pg(8), pg(4), 3 * UNIT), 0);	 /* whole pieces */
	ck_assert_int_eq(uffd_rmap_insert(&m, pg(200), pg(201), D(1), 0, 1), 0); /* a freed node */
	check_map(&m);
	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);

	/* And once memory is back, the same operations succeed. */
	ck_assert_int_eq(uffd_rmap_insert(&m, pg(9), pg(10), D(99), 0, 1), 0);
	ck_assert_int_eq(uffd_rmap_move(&m, pg(17), pg(100), UNIT), 0);
	uffd_rmap_init(&c, 1);
	ck_assert_int_eq(uffd_rmap_clone(&c, &m), 0);
	ck_assert_int_eq(c.count, m.count);
	uffd_rmap_destroy(&c);
	check_map(&m);
	uffd_rmap_destroy(&m);
}
END_TEST

START_TEST(rmap_many_pieces)
{
	const size_t n = 100000;
	struct uffd_rmap m;
	const struct uffd_node *p;
	size_t i = 0;

	uffd_rmap_init(&m, 11);
	/* In a scrambled order, so the treap sees inserts everywhere. */
	for (size_t k = 0; k < n; k++) {
		size_t j = (k * 7919) % n;

		ck_assert_int_eq(uffd_rmap_insert(&m, pg(2 * j), pg(2 * j + 1), D(j + 1), j, 1), 0);
	}
	ck_assert_int_eq(m.count, (long)n);
	check_map(&m);
	for (size_t j = 0; j < n; j++) {
		expect_piece(uffd_rmap_find(&m, pg(2 * j) + 5), pg(2 * j), pg(2 * j + 1), D(j + 1),
			     j);
		ck_assert_ptr_null(uffd_rmap_find(&m, pg(2 * j + 1)));
		ck_assert_ptr_eq(uffd_rmap_next(&m, pg(2 * j + 1)),
				 j + 1 < n ? uffd_rmap_find(&m, pg(2 * j + 2)) : NULL);
	}
	for (p = uffd_rmap_next(&m, 0); p; p = uffd_rmap_next(&m, p->end), i++)
		ck_assert_ptr_eq(p->data, D(i + 1));
	ck_assert_uint_eq(i, n);
	/* Cut everything out piece by piece from the middle outwards, then reuse the nodes. */
	for (size_t k = 0; k < n; k++) {
		size_t j = (k * 7919 + 17) % n;

		ck_assert_int_eq(uffd_rmap_cut(&m, pg(2 * j), pg(2 * j + 1)), 0);
	}
	ck_assert_int_eq(m.count, 0);
	ck_assert_ptr_null(m.root);
	{
		size_t nfree = m.nfree;

		ck_assert_uint_ge(nfree, n);
		ck_assert_int_eq(uffd_rmap_insert(&m, pg(0), pg(1), D(1), 0, 1), 0);
		ck_assert_uint_eq(m.nfree, nfree - 1); /* no new chunk */
	}
	check_map(&m);
	uffd_rmap_destroy(&m);
}
END_TEST

/* ---- the lookup index ---- */

/* In-order recursion over the implicit tree (children 2k, 2k + 1): the list, in order. */
static void check_slots(const struct uffd_rmap *m, size_t k, const struct uffd_node **p,
			const struct uffd_node **prev)
{
	if (k > (size_t)m->count)
		return;
	check_slots(m, 2 * k, p, prev);
	ck_assert_ptr_nonnull(*p);
	ck_assert_uint_eq(m->ix[k].start, (*p)->start);
	ck_assert_ptr_eq(m->ix[k].floor, *prev);
	*prev = *p;
	*p = (*p)->next;
	check_slots(m, 2 * k + 1, p, prev);
}

/* The index's slots against the list: breadth-first order, each with its floor; slot 0. */
static void check_index(const struct uffd_rmap *m)
{
	const struct uffd_node *p = m->first, *prev = NULL;

	ck_assert(m->ix_fresh);
	ck_assert_ptr_nonnull(m->ix);
	ck_assert_uint_ge(m->ix_cap, (size_t)m->count + 1);
	check_slots(m, 1, &p, &prev);
	ck_assert_ptr_null(p);
	ck_assert_ptr_eq(m->ix[0].floor, prev);
}

/* find(), next() and overlaps() at @a, answered from the page model alone. */
static void probe_at(struct uffd_rmap *m, uintptr_t a)
{
	const struct uffd_node *f = uffd_rmap_find(m, a), *nx = uffd_rmap_next(m, a);
	size_t i, j;

	if (a < BASE) {
		i = 0;
		ck_assert_ptr_null(f);
		j = 0;
	} else {
		i = (a - BASE) / UNIT;
		if (i < NPAGES && model[i].present) {
			ck_assert_ptr_nonnull(f);
			ck_assert(f->start <= a && a < f->end);
			ck_assert_uint_eq((uint64_t)(uintptr_t)f->data, model[i].data);
			ck_assert_uint_eq(f->offset + (pg(i) - f->start), model[i].offset);
			ck_assert_ptr_eq(nx, f);
			return;
		}
		ck_assert_ptr_null(f);
		j = i + 1;
	}
	while (j < NPAGES && !model[j].present)
		j++;
	if (j >= NPAGES) {
		ck_assert_ptr_null(nx);
	} else {
		ck_assert_ptr_nonnull(nx);
		ck_assert_uint_eq(nx->start, pg(j));
	}
	/* overlaps() over [a, page j]: true exactly when page j exists. */
	ck_assert_int_eq(uffd_rmap_overlaps(m, a, j < NPAGES ? pg(j) + 1 : pg(NPAGES)), j < NPAGES);
	if (j < NPAGES && a < pg(j))
		ck_assert_int_eq(uffd_rmap_overlaps(m, a, pg(j)), 0);
}

/* An address near where the answers change: piece edges, their neighbours, outside the model. */
static uintptr_t rnd_addr(void)
{
	size_t i = rnd() % (NPAGES + 2);
	uintptr_t a = i == 0 ? BASE - UNIT : pg(i - 1);

	switch (rnd() % 4) {
	case 0:
		return a;
	case 1:
		return a + UNIT - 1;
	case 2:
		return a ? a - 1 : a;
	default:
		return a + rnd() % UNIT;
	}
}

/* How many lookups after a change rebuild the index (ranges.c: count / 8 + 8, then one more). */
static unsigned long ix_threshold(const struct uffd_rmap *m)
{
	return (unsigned long)m->count / 8 + 8;
}

/*
 * Bursts of lookups of every length around the rebuild threshold, between changes of every
 * kind (insert, cut, cuts that move a piece's start, move, clone as for a fork child), every
 * answer checked against the page model: a stale index must never answer, a rebuilt one must
 * answer like the tree.
 */
START_TEST(rmap_index_model)
{
	struct uffd_rmap m;
	unsigned long builds = 0, stale_bursts = 0, exact = 0;
	long max_count = 0;

	rng_state = 4242;
	memset(model, 0, sizeof(model));
	uffd_rmap_init(&m, 5);
	for (int op = 0; op < 3000; op++) {
		unsigned kind = (unsigned)(rnd() % 100);
		size_t len = rnd_len();
		struct rop o = { 0 };
		unsigned long t = ix_threshold(&m), burst;

		if (len > NPAGES)
			len = NPAGES;
		if (kind < 55 || m.count < 50) {
			if (rnd() % 3)
				len = 1 + rnd() % 3;
			o.kind = 0;
			o.s = rnd() % (NPAGES - len + 1);
			o.e = o.s + len;
			o.data = 1 + rnd() % 1000;
			o.off = (rnd() % 64) * UNIT;
			o.modes = 1;
		} else if (kind < 70) {
			/* Often one page at a piece's head: only its start moves. */
			const struct uffd_node *p = uffd_rmap_next(&m, pg(rnd() % NPAGES));

			o.kind = 1;
			if (p && rnd() % 2) {
				o.s = (p->start - BASE) / UNIT;
				o.e = o.s + 1;
			} else {
				o.s = rnd() % (NPAGES - len + 1);
				o.e = o.s + len;
			}
		} else if (kind < 95) {
			o.kind = 2;
			o.len = len;
			o.from = rnd() % (NPAGES - len + 1);
			o.to = rnd() % (NPAGES - len + 1);
		} else {
			/* A fork child's map: a clone starts stale and builds its own index. */
			struct uffd_rmap c;

			uffd_rmap_init(&c, (uint32_t)rnd());
			ck_assert_int_eq(uffd_rmap_clone(&c, &m), 0);
			ck_assert(!c.ix_fresh);
			for (unsigned long k = 0; k < 2 * ix_threshold(&c) + 2; k++)
				probe_at(&c, rnd_addr());
			ck_assert(c.ix_fresh);
			check_index(&c);
			if (rnd() % 2) {
				/* The parent dies; the child goes on. */
				uffd_rmap_destroy(&m);
				m = c;
			} else {
				uffd_rmap_destroy(&c);
				ck_assert_ptr_null(c.ix);
			}
			o.kind = -1;
		}
		if (o.kind >= 0) {
			ck_assert_int_eq(rop_apply(&m, &o), 0);
			rop_model(&o);
			ck_assert(!m.ix_fresh);
		}
		compare_model(&m);

		/*
		 * Exactly the threshold of lookups after a change still use the tree; the next
		 * one builds. (probe_at() makes several lookups: this counts single ones.)
		 */
		t = ix_threshold(&m);
		if (!m.ix_fresh && m.ix_misses == 0 && m.count > 0 && rnd() % 4 == 0) {
			for (unsigned long k = 0; k < t; k++) {
				uintptr_t a = rnd_addr();
				const struct uffd_node *f = uffd_rmap_find(&m, a);
				size_t i = (a - BASE) / UNIT;

				ck_assert_int_eq(f != NULL,
						 a >= BASE && i < NPAGES && model[i].present);
			}
			ck_assert(!m.ix_fresh);
			probe_at(&m, rnd_addr());
			ck_assert(m.ix_fresh);
			builds++;
			exact++;
		}

		/* Bursts of every length: none, a few, around the threshold, beyond it. */
		switch (rnd() % 4) {
		case 0:
			burst = rnd() % 4;
			break;
		case 1:
			burst = t / 4 + rnd() % 3;
			break;
		default:
			burst = rnd() % t;
			break;
		}
		for (unsigned long k = 0; k < burst; k++) {
			bool was = m.ix_fresh;

			probe_at(&m, rnd_addr());
			builds += !was && m.ix_fresh;
		}
		if (m.ix_fresh)
			check_index(&m);
		else
			stale_bursts++;
		if (m.count > max_count)
			max_count = m.count;
	}
	check_map(&m);
	ck_assert_int_gt(max_count, 200);
	ck_assert_uint_gt(builds, 500);
	ck_assert_uint_gt(stale_bursts, 500);
	ck_assert_uint_gt(exact, 100);
	uffd_rmap_destroy(&m);
	ck_assert_ptr_null(m.ix);
	ck_assert_uint_eq(m.ix_cap, 0);
}
END_TEST

/*
 * The index's mmap failing is no error: lookups answer from the tree, change nothing, and try
 * again only after as many lookups again; once memory is back the index is built. Also when a
 * grown map needs a larger index than the one it has, and when a shrunk one gets a smaller one.
 */
START_TEST(rmap_index_enomem)
{
	struct uffd_rmap m;
	struct piece *v;
	size_t n;
	unsigned long calls, t, cap;

	rng_state = 99;
	memset(model, 0, sizeof(model));
	uffd_rmap_init(&m, 3);
	for (size_t i = 0; i < 1000; i++) {
		ck_assert_int_eq(uffd_rmap_insert(&m, pg(2 * i), pg(2 * i + 1), D(i + 1), i, 1), 0);
		model_insert(2 * i, 2 * i + 1, i + 1, i);
	}
	n = snapshot(&m, &v);
	t = ix_threshold(&m);

	/* Every mmap fails: many thresholds' worth of lookups, all right, never an index. */
	calls = uffd_test_calls(UFFD_FAIL_MMAP);
	uffd_test_fail_from(UFFD_FAIL_MMAP, 1, ENOMEM);
	for (unsigned long k = 0; k < 20 * t; k++)
		probe_at(&m, rnd_addr());
	uffd_test_fail_from(UFFD_FAIL_MMAP, 0, 0);
	calls = uffd_test_calls(UFFD_FAIL_MMAP) - calls;
	ck_assert(!m.ix_fresh);
	ck_assert_ptr_null(m.ix);
	/* One try per threshold of lookups (probe_at makes up to four), not one per lookup. */
	ck_assert_uint_ge(calls, 10);
	ck_assert_uint_le(calls, 4 * 20 + 4);
	assert_same(&m, v, n);
	free(v);

	/* Memory back: built within one more threshold. */
	for (unsigned long k = 0; k <= t && !m.ix_fresh; k++)
		probe_at(&m, rnd_addr());
	ck_assert(m.ix_fresh);
	check_index(&m);

	/* A single failure on the first build of an empty index: the second try builds it. */
	{
		struct uffd_rmap c;

		uffd_rmap_init(&c, 4);
		ck_assert_int_eq(uffd_rmap_clone(&c, &m), 0);
		uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
		for (unsigned long k = 0; k <= ix_threshold(&c); k++)
			ck_assert_ptr_nonnull(uffd_rmap_find(&c, pg(2 * (k % 1000))));
		uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
		ck_assert(!c.ix_fresh);
		ck_assert_ptr_null(c.ix);
		for (unsigned long k = 0; k <= ix_threshold(&c); k++)
			probe_at(&c, rnd_addr());
		ck_assert(c.ix_fresh);
		check_index(&c);
		uffd_rmap_destroy(&c);
	}

	/* Grow past the index's room; its regrowth fails once: the tree answers meanwhile. */
	cap = m.ix_cap;
	for (size_t i = 1000; (size_t)m.count + 1 <= cap; i++) {
		ck_assert_uint_lt(2 * i + 1, NPAGES);
		ck_assert_int_eq(uffd_rmap_insert(&m, pg(2 * i), pg(2 * i + 1), D(i + 1), i, 1), 0);
		model_insert(2 * i, 2 * i + 1, i + 1, i);
	}
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	for (unsigned long k = 0; k <= ix_threshold(&m); k++)
		ck_assert_ptr_nonnull(uffd_rmap_find(&m, pg(2 * k)));
	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	ck_assert(!m.ix_fresh);
	ck_assert_uint_eq(m.ix_cap, cap); /* the old one is kept, not used */
	for (unsigned long k = 0; k <= ix_threshold(&m) && !m.ix_fresh; k++)
		probe_at(&m, rnd_addr());
	ck_assert(m.ix_fresh);
	ck_assert_uint_gt(m.ix_cap, cap);
	check_index(&m);

	/* Every page its own piece: an index of more than 64 KiB. */
	for (size_t i = 0; i < NPAGES; i++) {
		if (model[i].present)
			continue;
		ck_assert_int_eq(uffd_rmap_insert(&m, pg(i), pg(i + 1), D(i + 1), 0, 1), 0);
		model_insert(i, i + 1, i + 1, 0);
	}
	ck_assert_int_eq(m.count, NPAGES);
	for (unsigned long k = 0; k <= ix_threshold(&m); k++)
		ck_assert_ptr_nonnull(uffd_rmap_find(&m, pg(k)));
	ck_assert(m.ix_fresh);
	ck_assert_uint_gt(m.ix_cap * sizeof(struct uffd_ixent), 65536);
	check_index(&m);
	compare_model(&m);

	/* Shrink to a few pieces: a small index replaces the large one. */
	ck_assert_int_eq(uffd_rmap_cut(&m, pg(10), pg(NPAGES)), 0);
	model_cut(10, NPAGES);
	ck_assert_int_eq(m.count, 10);
	for (unsigned long k = 0; k <= ix_threshold(&m); k++)
		probe_at(&m, rnd_addr());
	ck_assert(m.ix_fresh);
	ck_assert_uint_le(m.ix_cap * sizeof(struct uffd_ixent), (size_t)tu_page());
	check_index(&m);

	/* An empty map needs no index; its lookups still answer. */
	ck_assert_int_eq(uffd_rmap_cut(&m, pg(0), pg(NPAGES)), 0);
	model_cut(0, NPAGES);
	for (unsigned long k = 0; k < 100; k++)
		probe_at(&m, rnd_addr());
	ck_assert(!m.ix_fresh);
	compare_model(&m);

	uffd_rmap_destroy(&m);
	ck_assert_ptr_null(m.ix);
	ck_assert(!m.ix_fresh);
	/* Still usable after destroy, index and all. */
	ck_assert_int_eq(uffd_rmap_insert(&m, pg(1), pg(3), D(1), 0, 1), 0);
	model_insert(1, 3, 1, 0);
	for (unsigned long k = 0; k < 100; k++)
		probe_at(&m, rnd_addr());
	ck_assert(m.ix_fresh);
	check_index(&m);
	uffd_rmap_destroy(&m);
}
END_TEST

/* ---- the public API against the real kernel ---- */

/*
 * A context made by hand: uffd_open() is written on another branch. The raw syscall plus
 * UFFDIO_API is what it will do for a default config.
 */
static struct uffd *ctx_open(void)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	struct uffd *u = NULL;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ioctl(fd, UFFDIO_API, &api), 0);
	ck_assert_int_eq(uffd_ctx_new(fd, 0, NULL, &u), 0);
	return u;
}

/* What the kernel says about the VMA holding addr: UFFDIO_REGISTER_MODE_* bits, or -1. */
static int kernel_modes(const void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0, modes = -1;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			modes = 0;
			if (strstr(line, " um"))
				modes |= UFFDIO_REGISTER_MODE_MISSING;
			if (strstr(line, " uw"))
				modes |= UFFDIO_REGISTER_MODE_WP;
			if (strstr(line, " ui"))
				modes |= UFFDIO_REGISTER_MODE_MINOR;
			break;
		}
	}
	fclose(f);
	return modes;
}

static void expect_range(const struct uffd *u, const void *addr, const void *start, const void *end,
			 const void *data, size_t offset)
{
	struct uffd_range r;

	ck_assert_int_eq(uffd_range_find(u, addr, &r), 0);
	ck_assert_ptr_eq(r.start, start);
	ck_assert_ptr_eq(r.end, end);
	ck_assert_ptr_eq(r.data, data);
	ck_assert_uint_eq(r.offset, offset);
}

static size_t snap_ctx(const struct uffd *u, struct piece **out)
{
	return snapshot(&u->map, out);
}

START_TEST(api_register_find_next)
{
	size_t ps = tu_page();
	char *p = tu_map_anon(16 * ps);
	struct uffd *u = ctx_open();
	struct uffd_range r;
	int a, b;

	ck_assert_int_eq(uffd_range_count(u), 0);
	ck_assert_int_eq(uffd_range_next(u, NULL, &r), -ENOENT);
	ck_assert_int_eq(uffd_range_find(u, p, &r), -ENOENT);

	ck_assert_int_eq(uffd_register(u, p + 4 * ps, 8 * ps, UFFDIO_REGISTER_MODE_MISSING, &a), 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	expect_range(u, p + 4 * ps, p + 4 * ps, p + 12 * ps, &a, 0);
	expect_range(u, p + 12 * ps - 1, p + 4 * ps, p + 12 * ps, &a, 0);
	ck_assert_int_eq(uffd_range_find(u, p + 4 * ps - 1, &r), -ENOENT);
	ck_assert_int_eq(uffd_range_find(u, p + 12 * ps, &r), -ENOENT);
	ck_assert_int_eq(uffd_range_find(u, NULL, &r), -ENOENT);
	ck_assert_int_eq(kernel_modes(p + 4 * ps), UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(kernel_modes(p + 11 * ps), UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(kernel_modes(p + 3 * ps), 0);
	ck_assert_int_eq(kernel_modes(p + 12 * ps), 0);

	ck_assert_int_eq(uffd_register(u, p + 14 * ps, 2 * ps, UFFDIO_REGISTER_MODE_WP, &b), 0);
	ck_assert_int_eq(uffd_range_count(u), 2);
	ck_assert_int_eq(uffd_range_next(u, NULL, &r), 0);
	ck_assert_ptr_eq(r.start, p + 4 * ps);
	ck_assert_int_eq(uffd_range_next(u, r.end, &r), 0);
	ck_assert_ptr_eq(r.start, p + 14 * ps);
	ck_assert_ptr_eq(r.data, &b);
	ck_assert_int_eq(uffd_range_next(u, r.end, &r), -ENOENT);
	ck_assert_int_eq(uffd_range_next(u, p + 13 * ps, &r), 0);
	ck_assert_ptr_eq(r.start, p + 14 * ps);
	ck_assert_int_eq(kernel_modes(p + 15 * ps), UFFDIO_REGISTER_MODE_WP);

	/* Unregistering wholly removes; unregistering what is not registered is 0. */
	ck_assert_int_eq(uffd_unregister(u, p + 14 * ps, 2 * ps), 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	ck_assert_int_eq(uffd_unregister(u, p + 14 * ps, 2 * ps), 0);
	ck_assert_int_eq(uffd_unregister(u, p, ps), 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	ck_assert_int_eq(kernel_modes(p + 15 * ps), 0);

	uffd_close(u);
	ck_assert_int_eq(kernel_modes(p + 4 * ps), 0);
	munmap(p, 16 * ps);
}
END_TEST

START_TEST(api_partial_unregister_and_reregister)
{
	size_t ps = tu_page();
	char *p = tu_map_anon(16 * ps);
	struct uffd *u = ctx_open();
	int a, b;

	ck_assert_int_eq(uffd_register(u, p + 4 * ps, 8 * ps, UFFDIO_REGISTER_MODE_MISSING, &a), 0);

	/* A hole in the middle: two pieces keeping data, the right one's offset moved on. */
	ck_assert_int_eq(uffd_unregister(u, p + 6 * ps, 2 * ps), 0);
	ck_assert_int_eq(uffd_range_count(u), 2);
	expect_range(u, p + 5 * ps, p + 4 * ps, p + 6 * ps, &a, 0);
	expect_range(u, p + 8 * ps, p + 8 * ps, p + 12 * ps, &a, 4 * ps);
	ck_assert_int_eq(kernel_modes(p + 6 * ps), 0);
	ck_assert_int_eq(kernel_modes(p + 8 * ps), UFFDIO_REGISTER_MODE_MISSING);

	/* Re-registering over parts of both replaces them, with a new mode in the kernel. */
	ck_assert_int_eq(uffd_register(u, p + 5 * ps, 5 * ps,
				       UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, &b),
			 0);
	ck_assert_int_eq(uffd_range_count(u), 3);
	expect_range(u, p + 4 * ps, p + 4 * ps, p + 5 * ps, &a, 0);
	expect_range(u, p + 7 * ps, p + 5 * ps, p + 10 * ps, &b, 0);
	expect_range(u, p + 10 * ps, p + 10 * ps, p + 12 * ps, &a, 6 * ps);
	ck_assert_int_eq(u->map.first->next->modes,
			 UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(kernel_modes(p + 6 * ps),
			 UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(kernel_modes(p + 4 * ps), UFFDIO_REGISTER_MODE_MISSING);

	/* The same range again with other data: replaced, not doubled. */
	ck_assert_int_eq(uffd_register(u, p + 5 * ps, 5 * ps,
				       UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, &a),
			 0);
	ck_assert_int_eq(uffd_range_count(u), 3);
	expect_range(u, p + 7 * ps, p + 5 * ps, p + 10 * ps, &a, 0);

	/*
	 * With fewer modes the kernel keeps the old ones (it skips a VMA that already has every
	 * requested mode), and the map says so: that part stays a piece of its own.
	 */
	ck_assert_int_eq(uffd_register(u, p + 2 * ps, 12 * ps, UFFDIO_REGISTER_MODE_MISSING, &b),
			 0);
	ck_assert_int_eq(kernel_modes(p + 6 * ps),
			 UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(kernel_modes(p + 4 * ps), UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(kernel_modes(p + 12 * ps), UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_range_count(u), 3);
	expect_range(u, p + 2 * ps, p + 2 * ps, p + 5 * ps, &b, 0);
	expect_range(u, p + 9 * ps, p + 5 * ps, p + 10 * ps, &b, 3 * ps);
	expect_range(u, p + 13 * ps, p + 10 * ps, p + 14 * ps, &b, 8 * ps);
	ck_assert_int_eq(uffd_rmap_find(&u->map, (uintptr_t)(p + 5 * ps))->modes,
			 UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(uffd_rmap_find(&u->map, (uintptr_t)(p + 4 * ps))->modes,
			 UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_rmap_find(&u->map, (uintptr_t)(p + 10 * ps))->modes,
			 UFFDIO_REGISTER_MODE_MISSING);

	/* Adding a mode replaces: one piece again, as in the kernel. */
	ck_assert_int_eq(uffd_register(u, p + 2 * ps, 12 * ps,
				       UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, &a),
			 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	expect_range(u, p + 9 * ps, p + 2 * ps, p + 14 * ps, &a, 0);
	ck_assert_int_eq(kernel_modes(p + 3 * ps),
			 UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	ck_assert_int_eq(u->map.first->modes,
			 UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);

	uffd_close(u);
	munmap(p, 16 * ps);
}
END_TEST

START_TEST(api_bad_inputs)
{
	size_t ps = tu_page();
	char *p = tu_map_anon(8 * ps);
	struct uffd *u = ctx_open();
	struct uffd_range r;
	struct piece *v;
	size_t n;
	char *top = (char *)(UINTPTR_MAX & ~(uintptr_t)(ps - 1));
	const uint64_t M = UFFDIO_REGISTER_MODE_MISSING;

	ck_assert_int_eq(uffd_register(u, p, 2 * ps, M, NULL), 0);
	n = snap_ctx(u, &v);

	ck_assert_int_eq(uffd_register(NULL, p, ps, M, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p + 1, ps, M, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, 0, M, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, ps + 1, M, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, ps - 1, M, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, top, ps, M, NULL), -EINVAL); /* wraps to 0 */
	ck_assert_int_eq(uffd_register(u, p, SIZE_MAX & ~(ps - 1), M, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, ps, 0, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, ps, 8, NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, ps, M | (1ull << 40), NULL), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p, ps, M | 0x10, NULL), -EINVAL);

	ck_assert_int_eq(uffd_unregister(NULL, p, ps), -EINVAL);
	ck_assert_int_eq(uffd_unregister(u, p + 1, ps), -EINVAL);
	ck_assert_int_eq(uffd_unregister(u, p, 0), -EINVAL);
	ck_assert_int_eq(uffd_unregister(u, p, ps / 2), -EINVAL);
	ck_assert_int_eq(uffd_unregister(u, top, ps), -EINVAL);

	ck_assert_int_eq(uffd_range_find(NULL, p, &r), -EINVAL);
	ck_assert_int_eq(uffd_range_find(u, p, NULL), -EINVAL);
	ck_assert_int_eq(uffd_range_next(NULL, p, &r), -EINVAL);
	ck_assert_int_eq(uffd_range_next(u, NULL, NULL), -EINVAL);
	ck_assert_int_eq(uffd_range_count(NULL), -EINVAL);

	assert_same(&u->map, v, n);
	ck_assert_int_eq(kernel_modes(p + 4 * ps), 0);
	ck_assert_int_eq(kernel_modes(p), UFFDIO_REGISTER_MODE_MISSING);
	free(v);
	uffd_close(u);
	munmap(p, 8 * ps);
}
END_TEST

START_TEST(api_kernel_errors)
{
	size_t ps = tu_page();
	char *p = tu_map_anon(8 * ps);
	char *gone = tu_map_anon(4 * ps);
	char *ro;
	struct uffd *u = ctx_open(), *u2 = ctx_open();
	struct piece *v;
	size_t n;
	int a;

	ck_assert_int_eq(munmap(gone, 4 * ps), 0);
	ck_assert_int_eq(uffd_register(u, p, 2 * ps, UFFDIO_REGISTER_MODE_MISSING, &a), 0);
	n = snap_ctx(u, &v);

	/* No mapping there at all: the kernel's -EINVAL, for both calls. */
	ck_assert_int_eq(uffd_register(u, gone, 4 * ps, UFFDIO_REGISTER_MODE_MISSING, &a), -EINVAL);
	ck_assert_int_eq(uffd_unregister(u, gone, 4 * ps), -EINVAL);
	assert_same(&u->map, v, n);

	/* MINOR needs shmem or hugetlbfs. */
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, ps, UFFDIO_REGISTER_MODE_MINOR, &a), -EINVAL);
	ck_assert_int_eq(uffd_register(u, p, 4 * ps, UFFDIO_REGISTER_MODE_MINOR, &a), -EINVAL);
	assert_same(&u->map, v, n);
	ck_assert_int_eq(kernel_modes(p), UFFDIO_REGISTER_MODE_MISSING);

	/* Owned by another userfaultfd: -EBUSY, and that context's map stays empty. */
	ck_assert_int_eq(uffd_register(u2, p, 2 * ps, UFFDIO_REGISTER_MODE_MISSING, &a), -EBUSY);
	ck_assert_int_eq(uffd_register(u2, p + ps, 4 * ps, UFFDIO_REGISTER_MODE_MISSING, &a),
			 -EBUSY);
	ck_assert_int_eq(uffd_range_count(u2), 0);
	assert_same(&u->map, v, n);

	/* Shared memory opened read-only can never be written (no VM_MAYWRITE): -EPERM. */
	{
		int memfd = memfd_create("ro", MFD_CLOEXEC), fd;
		char path[64];

		ck_assert_int_ge(memfd, 0);
		ck_assert_int_eq(ftruncate(memfd, (off_t)ps), 0);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ro = mmap(NULL, ps, PROT_READ, MAP_SHARED, fd, 0);
		ck_assert_ptr_ne(ro, MAP_FAILED);
		close(fd);
		close(memfd);
		ck_assert_int_eq(uffd_register(u, ro, ps, UFFDIO_REGISTER_MODE_MISSING, &a),
				 -EPERM);
		munmap(ro, ps);
	}
	assert_same(&u->map, v, n);

	/* An exited context refuses to register. */
	atomic_store(&u->exited, 1);
	ck_assert_int_eq(uffd_register(u, p + 4 * ps, ps, UFFDIO_REGISTER_MODE_MISSING, &a),
			 -ESRCH);
	assert_same(&u->map, v, n);
	ck_assert_int_eq(kernel_modes(p + 4 * ps), 0);

	free(v);
	uffd_close(u);
	uffd_close(u2);
	munmap(p, 8 * ps);
}
END_TEST

START_TEST(api_holes_kept)
{
	size_t ps = tu_page();
	char *p = tu_map_anon(8 * ps);
	struct uffd *u = ctx_open();
	int a;

	/* The kernel skips holes inside a registered span; the map keeps the span whole. */
	ck_assert_int_eq(munmap(p + 3 * ps, 2 * ps), 0);
	ck_assert_int_eq(uffd_register(u, p, 8 * ps, UFFDIO_REGISTER_MODE_MISSING, &a), 0);
	ck_assert_int_eq(uffd_range_count(u), 1);
	expect_range(u, p + 4 * ps, p, p + 8 * ps, &a, 0);
	ck_assert_int_eq(kernel_modes(p + 2 * ps), UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(kernel_modes(p + 5 * ps), UFFDIO_REGISTER_MODE_MISSING);
	ck_assert_int_eq(uffd_unregister(u, p, 8 * ps), 0);
	ck_assert_int_eq(uffd_range_count(u), 0);
	uffd_close(u);
	munmap(p, 8 * ps);
}
END_TEST

START_TEST(api_enomem_atomic)
{
	size_t ps = tu_page();
	char *p = tu_map_anon(8 * ps);
	struct uffd *u = ctx_open(), *u2 = ctx_open();
	struct piece *v;
	size_t n;
	int a;

	ck_assert_int_eq(uffd_register(u, p, 4 * ps, UFFDIO_REGISTER_MODE_MISSING, &a), 0);

	/* register needs a node, none is free and mmap fails: nothing reaches the kernel. */
	drain(&u->map, (uintptr_t)1 << 46);
	n = snap_ctx(u, &v);
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	ck_assert_int_eq(uffd_register(u, p + 5 * ps, ps, UFFDIO_REGISTER_MODE_MISSING, &a),
			 -ENOMEM);
	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	assert_same(&u->map, v, n);
	ck_assert_int_eq(kernel_modes(p + 5 * ps), 0);
	/* Proof the kernel holds no registration there: another context may take it. */
	ck_assert_int_eq(uffd_register(u2, p + 5 * ps, ps, UFFDIO_REGISTER_MODE_MISSING, &a), 0);
	ck_assert_int_eq(uffd_unregister(u2, p + 5 * ps, ps), 0);

	/* unregister that must split a piece, likewise. */
	uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
	ck_assert_int_eq(uffd_unregister(u, p + ps, ps), -ENOMEM);
	uffd_test_fail_at(UFFD_FAIL_MMAP, 0, 0);
	assert_same(&u->map, v, n);
	ck_assert_int_eq(kernel_modes(p + ps), UFFDIO_REGISTER_MODE_MISSING);

	/* With memory back, both succeed. */
	ck_assert_int_eq(uffd_unregister(u, p + ps, ps), 0);
	ck_assert_int_eq(uffd_register(u, p + 5 * ps, ps, UFFDIO_REGISTER_MODE_MISSING, &a), 0);
	ck_assert_int_eq(kernel_modes(p + ps), 0);
	ck_assert_int_eq(kernel_modes(p + 5 * ps), UFFDIO_REGISTER_MODE_MISSING);
	expect_range(u, p + 2 * ps, p + 2 * ps, p + 4 * ps, &a, 2 * ps);

	free(v);
	uffd_close(u);
	uffd_close(u2);
	munmap(p, 8 * ps);
}
END_TEST

START_TEST(api_ten_thousand)
{
	const size_t n = 10000;
	size_t ps = tu_page();
	char *p = tu_map_anon(n * ps);
	struct uffd *u = ctx_open();
	struct uffd_range r;
	size_t i = 0;

	for (size_t k = 0; k < n; k++)
		ck_assert_int_eq(uffd_register(u, p + k * ps, ps, UFFDIO_REGISTER_MODE_MISSING,
					       D(k + 1)),
				 0);
	ck_assert_int_eq(uffd_range_count(u), (long)n);
	for (size_t k = 0; k < n; k++)
		expect_range(u, p + k * ps + k % ps, p + k * ps, p + (k + 1) * ps, D(k + 1), 0);

	for (size_t k = 0; k < n; k += 2)
		ck_assert_int_eq(uffd_unregister(u, p + k * ps, ps), 0);
	ck_assert_int_eq(uffd_range_count(u), (long)(n / 2));
	for (size_t k = 0; k < n; k++) {
		if (k % 2 == 0)
			ck_assert_int_eq(uffd_range_find(u, p + k * ps, &r), -ENOENT);
		else
			expect_range(u, p + k * ps + ps - 1, p + k * ps, p + (k + 1) * ps, D(k + 1),
				     0);
	}
	for (int rc = uffd_range_next(u, NULL, &r); rc == 0; rc = uffd_range_next(u, r.end, &r)) {
		ck_assert_ptr_eq(r.start, p + (2 * i + 1) * ps);
		i++;
	}
	ck_assert_uint_eq(i, n / 2);
	ck_assert_int_eq(kernel_modes(p + 4 * ps), 0);
	ck_assert_int_eq(kernel_modes(p + 5 * ps), UFFDIO_REGISTER_MODE_MISSING);
	check_map(&u->map);

	/* One call over everything: the kernel and the map agree again. */
	ck_assert_int_eq(uffd_unregister(u, p, n * ps), 0);
	ck_assert_int_eq(uffd_range_count(u), 0);
	uffd_close(u);
	munmap(p, n * ps);
}
END_TEST

/* Every page's UFFDIO_REGISTER_MODE_* bits as the kernel reports them (/proc/self/smaps). */
static void kernel_modes_all(const char *base, size_t npages, int *out)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	uintptr_t lo = 0, hi = 0, b = (uintptr_t)base, ps = tu_page();

	ck_assert_ptr_nonnull(f);
	memset(out, 0, npages * sizeof(*out));
	while (fgets(line, sizeof(line), f)) {
		unsigned long l, h;
		int modes = 0;

		if (sscanf(line, "%lx-%lx ", &l, &h) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			lo = l;
			hi = h;
			continue;
		}
		if (strncmp(line, "VmFlags:", 8) != 0)
			continue;
		if (strstr(line, " um"))
			modes |= UFFDIO_REGISTER_MODE_MISSING;
		if (strstr(line, " uw"))
			modes |= UFFDIO_REGISTER_MODE_WP;
		if (strstr(line, " ui"))
			modes |= UFFDIO_REGISTER_MODE_MINOR;
		/* Only the part inside [base, base + npages): other VMAs may be huge. */
		for (uintptr_t a = lo > b ? lo : b; a < hi && a < b + npages * ps; a += ps)
			out[(a - b) / ps] = modes;
	}
	fclose(f);
}

/*
 * Random register / unregister over 64 pages, checked after every call against a page model
 * and against the kernel's own view of every page. Registering keeps a page's modes where they
 * include every requested mode and are more (the kernel skips such VMAs). A fifth of the calls
 * run with exactly j free nodes and mmap failing, for j = 0, 1, ...: until j is enough the call
 * must fail with -ENOMEM before reaching the kernel, changing nothing.
 */
START_TEST(api_random_model)
{
	enum { N = 64 };
	static const uint64_t mode_set[] = {
		UFFDIO_REGISTER_MODE_MISSING,
		UFFDIO_REGISTER_MODE_WP,
		UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
	};
	size_t ps = tu_page();
	char *p = tu_map_anon(N * ps);
	struct uffd *u = ctx_open();
	struct {
		int present;
		uint64_t data, offset, modes;
	} km[N];
	int kern[N];
	unsigned enomem = 0;

	rng_state = 777;
	memset(km, 0, sizeof(km));
	for (int op = 0; op < 1000; op++) {
		size_t s = rnd() % N;
		size_t len = 1 + (rnd() % 4 ? rnd() % 8 : rnd() % N);
		bool reg = rnd() % 3 != 0;
		uint64_t modes = mode_set[rnd() % 3], data = 1 + rnd() % 4;
		int rc = -ENOMEM;

		if (s + len > N)
			len = N - s;
		for (size_t j = 0; rc == -ENOMEM; j++) {
			struct stash st;
			bool strict = j > 0 || rnd() % 5 == 0;

			ck_assert_uint_le(j, N + 3); /* one node per kept piece, plus three */
			if (strict)
				stash_take(&u->map, j, &st);
			rc = reg ? uffd_register(u, p + s * ps, len * ps, modes, D(data)) :
				   uffd_unregister(u, p + s * ps, len * ps);
			if (strict)
				stash_give_back(&u->map, &st);
			if (rc == -ENOMEM) {
				enomem++;
				/* Unchanged: the checks below still hold for the old model. */
				for (size_t i = 0; i < N; i++) {
					const struct uffd_node *n =
						uffd_rmap_find(&u->map, (uintptr_t)(p + i * ps));

					ck_assert_int_eq(n != NULL, km[i].present);
				}
			}
		}
		ck_assert_int_eq(rc, 0);

		for (size_t i = s; i < s + len; i++) {
			if (!reg) {
				km[i].present = 0;
				continue;
			}
			if (!km[i].present || (km[i].modes & modes) != modes)
				km[i].modes = modes;
			km[i].present = 1;
			km[i].data = data;
			km[i].offset = (i - s) * ps;
		}

		check_map(&u->map);
		kernel_modes_all(p, N, kern);
		for (size_t i = 0; i < N; i++) {
			const struct uffd_node *n =
				uffd_rmap_find(&u->map, (uintptr_t)(p + i * ps));

			ck_assert_int_eq(kern[i], km[i].present ? (int)km[i].modes : 0);
			ck_assert_int_eq(n != NULL, km[i].present);
			if (!n)
				continue;
			ck_assert_uint_eq((uintptr_t)n->data, km[i].data);
			ck_assert_uint_eq(n->offset + ((uintptr_t)(p + i * ps) - n->start),
					  km[i].offset);
			ck_assert_uint_eq(n->modes, km[i].modes);
		}
	}
	ck_assert_uint_gt(enomem, 100);
	uffd_close(u);
	munmap(p, N * ps);
}
END_TEST

struct worker {
	struct uffd *u;
	char *base;
	size_t pages;
	int rc;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	size_t ps = tu_page();

	for (size_t k = 0; k < w->pages && !w->rc; k++)
		w->rc = uffd_register(w->u, w->base + k * ps, ps, UFFDIO_REGISTER_MODE_MISSING,
				      w->base + k);
	for (size_t k = 0; k < w->pages && !w->rc; k += 2)
		w->rc = uffd_unregister(w->u, w->base + k * ps, ps);
	return NULL;
}

START_TEST(api_threads)
{
	enum { T = 4, PAGES = 500 };
	size_t ps = tu_page();
	char *p = tu_map_anon((size_t)T * PAGES * ps);
	struct uffd *u = ctx_open();
	struct worker w[T];
	pthread_t t[T];
	struct uffd_range r;

	for (int i = 0; i < T; i++) {
		w[i] = (struct worker){ u, p + (size_t)i * PAGES * ps, PAGES, 0 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(w[i].rc, 0);
	}
	ck_assert_int_eq(uffd_range_count(u), T * PAGES / 2);
	check_map(&u->map);
	for (int i = 0; i < T; i++)
		for (size_t k = 1; k < PAGES; k += 2) {
			ck_assert_int_eq(uffd_range_find(u, w[i].base + k * ps, &r), 0);
			ck_assert_ptr_eq(r.data, w[i].base + k);
		}
	uffd_close(u);
	munmap(p, (size_t)T * PAGES * ps);
}
END_TEST

/*
 * The public lookups across the index's rebuild threshold, between registrations and
 * unregistrations the kernel really makes, every answer checked against a page model.
 */
START_TEST(api_index_lookups)
{
	enum { N = 2048 };
	size_t ps = tu_page();
	char *p = tu_map_anon(N * ps);
	struct uffd *u = ctx_open();
	static struct kpage {
		int present;
		uint64_t data, offset;
	} km[N];
	unsigned long fresh = 0;

	rng_state = 31337;
	memset(km, 0, sizeof(km));
	for (size_t i = 0; i < N; i += 2) {
		ck_assert_int_eq(uffd_register(u, p + i * ps, ps, UFFDIO_REGISTER_MODE_MISSING,
					       D(i + 1)),
				 0);
		km[i] = (struct kpage){ 1, i + 1, 0 };
	}
	for (int op = 0; op < 400; op++) {
		size_t s = rnd() % N, len = 1 + rnd() % 16;
		unsigned long burst = rnd() % (3 * ix_threshold(&u->map));
		uint64_t data = 1 + rnd() % 1000;

		if (s + len > N)
			len = N - s;
		if (rnd() % 3) {
			ck_assert_int_eq(uffd_register(u, p + s * ps, len * ps,
						       UFFDIO_REGISTER_MODE_MISSING, D(data)),
					 0);
			for (size_t i = s; i < s + len; i++)
				km[i] = (struct kpage){ 1, data, (i - s) * ps };
		} else {
			ck_assert_int_eq(uffd_unregister(u, p + s * ps, len * ps), 0);
			for (size_t i = s; i < s + len; i++)
				km[i].present = 0;
		}
		for (unsigned long k = 0; k < burst; k++) {
			size_t i = rnd() % N, j;
			char *a = p + i * ps + rnd() % ps;
			struct uffd_range r;
			int rc = uffd_range_find(u, a, &r);

			if (km[i].present) {
				ck_assert_int_eq(rc, 0);
				ck_assert((char *)r.start <= a && a < (char *)r.end);
				ck_assert_uint_eq((uintptr_t)r.data, km[i].data);
				ck_assert_uint_eq(r.offset + (size_t)(p + i * ps - (char *)r.start),
						  km[i].offset);
			} else {
				ck_assert_int_eq(rc, -ENOENT);
			}
			rc = uffd_range_next(u, a, &r);
			for (j = i; j < N && !km[j].present; j++)
				;
			if (j == N) {
				ck_assert_int_eq(rc, -ENOENT);
			} else {
				ck_assert_int_eq(rc, 0);
				ck_assert((char *)r.end > a);
				if (j > i)
					ck_assert_ptr_eq(r.start, p + j * ps);
			}
		}
		fresh += u->map.ix_fresh;
	}
	ck_assert_uint_gt(fresh, 50);
	check_map(&u->map);
	uffd_close(u);
	munmap(p, N * ps);
}
END_TEST

/*
 * Lookups from several threads while another registers and unregisters: the rebuilds happen
 * inside uffd_range_find() under the context's lock, and the pages nobody changes always
 * answer the same.
 */
struct looker {
	struct uffd *u;
	char *base;
	size_t pages;
	atomic_int *stop;
	long bad, done;
};

static void *looker_run(void *arg)
{
	struct looker *l = arg;
	size_t ps = tu_page();
	uint64_t x = (uintptr_t)l | 1;

	while (!atomic_load(l->stop)) {
		struct uffd_range r;
		size_t i;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		i = (size_t)(x % l->pages);
		/* Odd pages are registered for good, even ones never. */
		if (i % 2) {
			if (uffd_range_find(l->u, l->base + i * ps, &r) != 0 ||
			    r.data != l->base + i || r.start != l->base + i * ps)
				l->bad++;
		} else if (uffd_range_find(l->u, l->base + i * ps, &r) != -ENOENT ||
			   uffd_range_next(l->u, l->base + i * ps, &r) != 0 ||
			   r.start != l->base + (i + 1) * ps) {
			l->bad++;
		}
		l->done++;
	}
	return NULL;
}

START_TEST(api_index_threads)
{
	enum { T = 2, PAGES = 2000, CHURN = 512 };
	size_t ps = tu_page();
	char *p = tu_map_anon((size_t)(PAGES + CHURN) * ps), *q = p + (size_t)PAGES * ps;
	struct uffd *u = ctx_open();
	struct looker l[T];
	pthread_t t[T];
	atomic_int stop = 0;
	int fresh = 0;

	for (size_t k = 1; k < PAGES; k += 2)
		ck_assert_int_eq(
			uffd_register(u, p + k * ps, ps, UFFDIO_REGISTER_MODE_MISSING, p + k), 0);
	for (int i = 0; i < T; i++) {
		l[i] = (struct looker){ u, p, PAGES - 1, &stop, 0, 0 };
		ck_assert_int_eq(pthread_create(&t[i], NULL, looker_run, &l[i]), 0);
	}
	/* Changes far from the lookers' pages, with pauses long enough for rebuilds. */
	for (int round = 0; round < 2000; round++) {
		size_t k = (size_t)round % CHURN;

		ck_assert_int_eq(uffd_register(u, q + k * ps, ps, UFFDIO_REGISTER_MODE_MISSING, q),
				 0);
		if (round % 3 == 0)
			ck_assert_int_eq(uffd_unregister(u, q + k * ps, ps), 0);
		if (round % 64 == 0) {
			usleep(2000);
			pthread_mutex_lock(&u->lock);
			fresh += u->map.ix_fresh;
			pthread_mutex_unlock(&u->lock);
		}
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < T; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(l[i].bad, 0);
		ck_assert_int_gt(l[i].done, 1000);
	}
	ck_assert_int_gt(fresh, 0); /* the lookers did rebuild the index between changes */
	check_map(&u->map);
	uffd_close(u);
	munmap(p, (size_t)(PAGES + CHURN) * ps);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ranges");
	TCase *map = tcase_create("rmap");
	TCase *api = tcase_create("api");
	int fd, err;

	tcase_set_timeout(map, 120);
	tcase_add_test(map, rmap_basic);
	tcase_add_test(map, rmap_cut_splits);
	tcase_add_test(map, rmap_insert_replaces);
	tcase_add_test(map, rmap_move);
	tcase_add_test(map, rmap_clone);
	tcase_add_test(map, rmap_bad_args);
	tcase_add_test(map, rmap_random_model);
	tcase_add_test(map, rmap_enomem_atomic);
	tcase_add_test(map, rmap_many_pieces);
	tcase_add_test(map, rmap_index_model);
	tcase_add_test(map, rmap_index_enomem);
	suite_add_tcase(s, map);

	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	err = errno;
	if (fd >= 0) {
		close(fd);
		tcase_set_timeout(api, 120);
		tcase_add_test(api, api_register_find_next);
		tcase_add_test(api, api_partial_unregister_and_reregister);
		tcase_add_test(api, api_bad_inputs);
		tcase_add_test(api, api_kernel_errors);
		tcase_add_test(api, api_holes_kept);
		tcase_add_test(api, api_enomem_atomic);
		tcase_add_test(api, api_ten_thousand);
		tcase_add_test(api, api_random_model);
		tcase_add_test(api, api_threads);
		tcase_add_test(api, api_index_lookups);
		tcase_add_test(api, api_index_threads);
		suite_add_tcase(s, api);
	}
	if (tu_run(s) != 0)
		return 1;
	if (fd < 0)
		tu_skip("userfaultfd(UFFD_USER_MODE_ONLY) failed (%s): only the map tests ran",
			strerror(err));
	return 0;
}
