/* SPDX-License-Identifier: MIT */
/* Fuzz target: random register / unregister / unmap / remap / fork sequences on the range map
 * (the hidden uffd_rmap_* API), compared after every step with a page-by-page model, with bursts
 * of lookups long enough to build the lookup index between changes. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "fuzz.h"

/* The library's fault-injection hook (src/sys.c), for allocations that fail mid-sequence. */
void uffd_test_fail_at(int site, int nth, int err);
void uffd_test_fail_from(int site, int nth, int err);

#define NPAGES 2048 /* enough pieces to need more than one chunk of nodes */
#define NMAPS 4	    /* a parent and the children it forks */

struct mpage {
	bool reg;
	uintptr_t data;
	size_t off; /* offset of this page from the start of its registration */
	uint64_t modes;
};

struct model {
	struct mpage pg[NPAGES];
};

static struct uffd_rmap maps[NMAPS];
static struct model models[NMAPS];
static bool live[NMAPS];
static uintptr_t PS, BASE;

struct input {
	const uint8_t *p, *end;
};

static unsigned take8(struct input *in)
{
	return in->p < in->end ? *in->p++ : 0;
}

static unsigned take16(struct input *in)
{
	return take8(in) | take8(in) << 8;
}

static uintptr_t addr_of(unsigned page)
{
	return BASE + (uintptr_t)page * PS;
}

/* ---- checking the map against the model ---- */

/* Treap order (by start) and heap order (by priority); returns the number of nodes. */
static long check_tree(const struct uffd_node *n, uintptr_t lo, uintptr_t hi, uint32_t maxprio)
{
	if (!n)
		return 0;
	FUZZ_CHECK(n->start >= lo && n->start < hi);
	FUZZ_CHECK(n->prio <= maxprio);
	return 1 + check_tree(n->left, lo, n->start, n->prio) +
	       check_tree(n->right, n->start + 1, hi, n->prio);
}

/* A fresh lookup index against the list: in-order over slots k, 2k, 2k + 1, with floors. */
static void check_slots(const struct uffd_rmap *m, size_t k, const struct uffd_node **p,
			const struct uffd_node **prev)
{
	if (k > (size_t)m->count)
		return;
	check_slots(m, 2 * k, p, prev);
	FUZZ_CHECK(*p && m->ix[k].start == (*p)->start && m->ix[k].floor == *prev);
	*prev = *p;
	*p = (*p)->next;
	check_slots(m, 2 * k + 1, p, prev);
}

static void verify(int i)
{
	const struct uffd_rmap *m = &maps[i];
	const struct model *md = &models[i];
	const struct uffd_node *n, *prev = NULL;
	long count = 0;
	size_t nfree = 0;
	unsigned p;

	for (n = m->first; n; prev = n, n = n->next) {
		FUZZ_CHECK(n->prev == prev);
		FUZZ_CHECK(n->start < n->end);
		FUZZ_CHECK(n->start % PS == 0 && n->end % PS == 0);
		FUZZ_CHECK(n->start >= BASE && n->end <= addr_of(NPAGES));
		FUZZ_CHECK(!prev || prev->end <= n->start);
		count++;
	}
	FUZZ_CHECK(count == m->count);
	FUZZ_CHECK(check_tree(m->root, 0, UINTPTR_MAX, UINT32_MAX) == count);
	for (n = m->free; n; n = n->next)
		nfree++;
	FUZZ_CHECK(nfree == m->nfree);
	if (m->ix_fresh) {
		const struct uffd_node *w = m->first, *wp = NULL;

		FUZZ_CHECK(m->ix && m->ix_cap >= (size_t)count + 1);
		check_slots(m, 1, &w, &wp);
		FUZZ_CHECK(w == NULL && m->ix[0].floor == wp);
	}

	/* Page by page, walking the pieces alongside. */
	n = m->first;
	for (p = 0; p < NPAGES; p++) {
		uintptr_t a = addr_of(p);
		bool covered;

		while (n && n->end <= a)
			n = n->next;
		covered = n && n->start <= a;
		FUZZ_CHECK(covered == md->pg[p].reg);
		if (!covered)
			continue;
		FUZZ_CHECK((uintptr_t)n->data == md->pg[p].data);
		FUZZ_CHECK(n->offset + (a - n->start) == md->pg[p].off);
		FUZZ_CHECK(n->modes == md->pg[p].modes);
	}
}

/* find() and next() at address @a in page @p, against the model. */
static void check_lookup(struct uffd_rmap *m, const struct model *md, unsigned p, uintptr_t a)
{
	const struct uffd_node *f = uffd_rmap_find(m, a), *nx = uffd_rmap_next(m, a);
	unsigned j;

	FUZZ_CHECK((f != NULL) == md->pg[p].reg);
	if (f) {
		FUZZ_CHECK(f->start <= a && a < f->end && nx == f);
		FUZZ_CHECK((uintptr_t)f->data == md->pg[p].data);
		FUZZ_CHECK(f->offset + (addr_of(p) - f->start) == md->pg[p].off);
		return;
	}
	for (j = p + 1; j < NPAGES && !md->pg[j].reg; j++)
		;
	FUZZ_CHECK(j == NPAGES ? nx == NULL : nx && nx->start == addr_of(j));
}

/*
 * A burst of lookups, as many as the input says (enough to cross the index's rebuild threshold,
 * count / 8 + 8), at pseudo-random addresses seeded by the input: piece edges and insides.
 */
static void lookup_burst(int i, struct input *in)
{
	unsigned n = take16(in) % 1024, k;
	uint32_t x = take16(in) << 8 | 1;

	for (k = 0; k < n; k++) {
		unsigned p;
		uintptr_t a;

		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p = x % NPAGES;
		a = addr_of(p) + ((x >> 16) % 3 == 0 ? PS - 1 : (x >> 16) % 2 ? 0 : (x >> 8) % PS);
		check_lookup(&maps[i], &models[i], p, a);
	}
}

/* Lookups at a few addresses the input chooses, against the model. */
static void verify_lookups(int i, struct input *in)
{
	struct uffd_rmap *m = &maps[i];
	const struct model *md = &models[i];
	int k;

	for (k = 0; k < 4; k++) {
		unsigned p = take16(in) % NPAGES, q = p + take8(in) % 64, j;
		uintptr_t a = addr_of(p) + take8(in) * (PS / 256);
		const struct uffd_node *f = uffd_rmap_find(m, a), *nx = uffd_rmap_next(m, a);
		bool any = false;
		struct uffd_range r;

		FUZZ_CHECK((f != NULL) == md->pg[p].reg);
		if (f) {
			FUZZ_CHECK(f->start <= a && a < f->end);
			FUZZ_CHECK(nx == f);
			uffd_rmap_fill(f, &r);
			FUZZ_CHECK((uintptr_t)r.start == f->start && (uintptr_t)r.end == f->end);
			FUZZ_CHECK(r.data == f->data && r.offset == f->offset);
		} else {
			/* next: the first piece above the address, or none. */
			for (j = p + 1; j < NPAGES && !md->pg[j].reg; j++)
				;
			if (j == NPAGES)
				FUZZ_CHECK(nx == NULL);
			else
				FUZZ_CHECK(nx && nx->start == addr_of(j));
		}
		if (q > NPAGES)
			q = NPAGES;
		for (j = p; j < q; j++)
			any |= md->pg[j].reg;
		FUZZ_CHECK(uffd_rmap_overlaps(m, addr_of(p), addr_of(q)) == any);
	}
}

/* ---- the model's operations ---- */

static void model_insert(struct model *md, unsigned s, unsigned e, uintptr_t data, size_t off,
			 uint64_t modes)
{
	unsigned p;

	for (p = s; p < e; p++)
		md->pg[p] = (struct mpage){ true, data, off + (size_t)(p - s) * PS, modes };
}

static void model_cut(struct model *md, unsigned s, unsigned e)
{
	unsigned p;

	for (p = s; p < e; p++)
		md->pg[p] = (struct mpage){ 0 };
}

static void model_move(struct model *md, unsigned from, unsigned to, unsigned len)
{
	static struct mpage tmp[NPAGES];
	unsigned p;

	memcpy(tmp, &md->pg[from], len * sizeof(tmp[0]));
	model_cut(md, from, from + len);
	model_cut(md, to, to + len);
	for (p = 0; p < len; p++)
		if (tmp[p].reg)
			md->pg[to + p] = tmp[p];
}

static void ensure_live(int i)
{
	if (!live[i]) {
		uffd_rmap_init(&maps[i], 0x1234u + (uint32_t)i);
		memset(&models[i], 0, sizeof(models[i]));
		live[i] = true;
	}
}

/* A span [s, e) of pages chosen by the input, never empty. */
static void take_span(struct input *in, unsigned *s, unsigned *e, unsigned maxlen)
{
	*s = take16(in) % NPAGES;
	*e = *s + 1 + take16(in) % maxlen;
	if (*e > NPAGES)
		*e = NPAGES;
}

enum {
	OP_REGISTER,
	OP_UNREGISTER,
	OP_REMAP,
	OP_FORK,
	OP_EXIT,
	OP_FAIL,
	OP_BAD,
	OP_RESERVE,
	OP_FRAGMENT,
	OP_LOOKUPS,
	OP__COUNT
};

static bool model_empty(const struct model *md)
{
	unsigned p;

	for (p = 0; p < NPAGES; p++)
		if (md->pg[p].reg)
			return false;
	return true;
}

static bool model_same(const struct model *a, const struct model *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

/*
 * One step on map @cur. With an allocation failure armed, an operation either fails with
 * -ENOMEM and changes nothing, or did not need to allocate and succeeds: both are checked.
 */
static void step(struct input *in, unsigned op, int cur, bool failing)
{
	static struct model before;
	struct model *md = &models[cur];
	unsigned s, e, t, len;
	int other, r = 0;

	before = *md;
	switch (op) {
	case OP_REGISTER: {
		uintptr_t d = 1 + take8(in);
		size_t off = (size_t)take8(in) * PS;
		uint64_t modes = 1 + take8(in) % 7;

		take_span(in, &s, &e, 64);
		r = uffd_rmap_insert(&maps[cur], addr_of(s), addr_of(e), (void *)d, off, modes);
		if (r == 0)
			model_insert(md, s, e, d, off, modes);
		break;
	}
	case OP_UNREGISTER: /* uffd_unregister and an UNMAP event both cut */
		take_span(in, &s, &e, 128);
		r = uffd_rmap_cut(&maps[cur], addr_of(s), addr_of(e));
		if (r == 0)
			model_cut(md, s, e);
		break;
	case OP_REMAP:
		take_span(in, &s, &e, 128);
		len = e - s;
		t = take16(in) % (NPAGES - len + 1);
		if (take8(in) % 8 == 0)
			len = 0; /* what the kernel sends for a duplicated shared mapping */
		r = uffd_rmap_move(&maps[cur], addr_of(s), addr_of(t), (size_t)len * PS);
		if (r == 0 && len)
			model_move(md, s, t, len);
		break;
	case OP_FORK: {
		bool refused;

		other = (int)(take8(in) % NMAPS);
		ensure_live(other);
		refused = other == cur || !model_empty(&models[other]);
		r = uffd_rmap_clone(&maps[other], &maps[cur]);
		if (refused) {
			/* Only into an empty map, never onto itself. */
			FUZZ_CHECK(r == -EINVAL);
			break;
		}
		FUZZ_CHECK(r == 0 || (failing && r == -ENOMEM));
		if (r == 0)
			models[other] = *md;
		else
			FUZZ_CHECK(maps[other].count == 0);
		FUZZ_CHECK(!maps[other].ix_fresh || maps[other].count == 0);
		verify(other);
		lookup_burst(other, in); /* the child's own index */
		verify(other);
		break;
	}
	case OP_EXIT: /* the process is gone: its context's map is torn down, and reusable */
		uffd_rmap_destroy(&maps[cur]);
		memset(md, 0, sizeof(*md));
		FUZZ_CHECK(maps[cur].count == 0 && maps[cur].first == NULL &&
			   maps[cur].root == NULL);
		break;
	case OP_BAD:
		/* Malformed requests change nothing. */
		take_span(in, &s, &e, 64);
		FUZZ_CHECK(uffd_rmap_insert(&maps[cur], addr_of(e), addr_of(s), NULL, 0, 1) ==
			   -EINVAL);
		FUZZ_CHECK(uffd_rmap_insert(&maps[cur], addr_of(s), addr_of(s), NULL, 0, 1) ==
			   -EINVAL);
		FUZZ_CHECK(uffd_rmap_cut(&maps[cur], addr_of(e), addr_of(s)) == -EINVAL);
		FUZZ_CHECK(uffd_rmap_cut(&maps[cur], addr_of(s), addr_of(s)) == 0);
		FUZZ_CHECK(uffd_rmap_move(&maps[cur], addr_of(s), UINTPTR_MAX - PS + 1,
					  (size_t)(e - s) * PS + PS) == -EINVAL);
		FUZZ_CHECK(uffd_rmap_move(&maps[cur], UINTPTR_MAX - PS + 1, addr_of(s),
					  (size_t)(e - s) * PS + PS) == -EINVAL);
		FUZZ_CHECK(uffd_rmap_move(&maps[cur], addr_of(s), addr_of(s),
					  (size_t)(e - s) * PS) == 0);
		FUZZ_CHECK(uffd_rmap_clone(&maps[cur], &maps[cur]) == -EINVAL);
		FUZZ_CHECK(uffd_rmap_clone(NULL, &maps[cur]) == -EINVAL);
		break;
	case OP_RESERVE:
		r = uffd_rmap_reserve(&maps[cur], take16(in) % 2048);
		break;
	case OP_FRAGMENT: {
		/* Every other page of a span gets its own piece: many pieces, many nodes. */
		uintptr_t d = 1 + take8(in);

		take_span(in, &s, &e, 1024);
		for (t = s; t < e && r == 0; t += 2) {
			r = uffd_rmap_insert(&maps[cur], addr_of(t), addr_of(t + 1),
					     (void *)(d + t), 0, 1);
			if (r == 0)
				model_insert(md, t, t + 1, d + t, 0, 1);
			before = *md; /* the pieces made before a failure stay */
		}
		break;
	}
	case OP_LOOKUPS: /* with an allocation failure armed, the index's mmap fails: no error */
		lookup_burst(cur, in);
		break;
	default:
		break;
	}
	if (op != OP_FORK && op != OP_BAD) {
		FUZZ_CHECK(r == 0 || (failing && r == -ENOMEM));
		if (r)
			FUZZ_CHECK(model_same(md, &before));
	}
	verify(cur);
	verify_lookups(cur, in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, data + size };
	int steps = 0, i;

	PS = (uintptr_t)sysconf(_SC_PAGESIZE);
	BASE = (uintptr_t)1 << 32;
	memset(live, 0, sizeof(live));
	ensure_live(0);

	while (in.p < in.end && steps++ < 256) {
		unsigned op = take8(&in);
		int cur = (int)(take8(&in) % NMAPS);
		unsigned fail = op >> 5; /* 1: the next allocation fails; 2: all of them */

		ensure_live(cur);
		if (fail == 1)
			uffd_test_fail_at(UFFD_FAIL_MMAP, 1, ENOMEM);
		else if (fail == 2)
			uffd_test_fail_from(UFFD_FAIL_MMAP, 1, ENOMEM);
		step(&in, (op & 0x1f) % OP__COUNT, cur, fail == 1 || fail == 2);
		uffd_test_fail_from(UFFD_FAIL_MMAP, 0, 0);
	}
	for (i = 0; i < NMAPS; i++)
		if (live[i])
			uffd_rmap_destroy(&maps[i]);
	return 0;
}
