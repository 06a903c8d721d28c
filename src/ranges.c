/* SPDX-License-Identifier: MIT */
/* The range map (ordered pieces with data and offset: split, cut, move, clone) and the
 * register / unregister / lookup calls built on it. */
#include <errno.h>
#include <string.h>

#include "internal.h"

/*
 * The map is a treap keyed by piece start (random priorities keep it balanced without
 * rebalancing code), threaded with a doubly linked list in address order for walks. Pieces
 * never overlap and are never empty, so starts are unique and ends are ordered like starts.
 *
 * No malloc here: the dispatcher changes the map in prep, possibly while another thread of
 * this process sits in glibc's fork() holding the malloc locks, blocked until the FORK event
 * is read. Nodes come from a free list refilled with mmap'd chunks. Every mutating operation
 * first works out how many nodes it can need and reserves them; only then does it touch the
 * map, so it either fails with -ENOMEM having changed nothing or cannot fail at all.
 *
 * Lookups have an index of their own. The treap's depth grows as log n, but at 100,000 pieces
 * its 8 MB of nodes miss the caches on most levels of a descent. The index is a compact array
 * of the piece starts in Eytzinger (breadth-first) order: slot k's children are slots 2k and
 * 2k + 1, so a descent reads one 16-byte slot per level, the top levels stay cached, and the
 * slots three levels down can be prefetched while the comparison runs. Each slot also holds
 * the piece just before its own (slot 0: the last piece): the search finds the first start
 * above an address, so that pointer is the piece that may hold it, read from a cache line the
 * descent already touched. The index is built lazily and read-only: any change to the map only
 * marks it stale, in O(1), so changes stay O(log n); lookups on a stale index descend the tree
 * and count themselves, and once they exceed count / 8 + IX_MIN_MISSES the next one rebuilds
 * the index in O(n), which is thus paid for by at least n / 8 lookups. (A rebuild walks the
 * list, a cache miss per node when the nodes are scattered: about as long as n / 8 tree
 * lookups at 100,000 pieces, so even lookups that alternate with changes in the worst way cost
 * about twice a tree lookup.) Its memory is mmap'd like the nodes; when it cannot be had,
 * lookups keep using the tree and try again after as many lookups again.
 *
 * So lookups write to the map: they need the same exclusion as changes (u->lock for a
 * context's map), and a rebuild inside a lookup holds that lock for O(n) (~2-8 ms at 100,000
 * pieces here).
 */

#define CHUNK_SIZE ((size_t)64 * 1024)
/* Each chunk starts with a pointer to the next chunk; nodes follow, suitably aligned. */
#define CHUNK_HDR \
	((sizeof(void *) + _Alignof(struct uffd_node) - 1) & ~(_Alignof(struct uffd_node) - 1))
#define NODES_PER_CHUNK ((CHUNK_SIZE - CHUNK_HDR) / sizeof(struct uffd_node))

/* Lookups through a stale index, beyond count / 8, before it is rebuilt. */
#define IX_MIN_MISSES 8
/* Pieces from which a lookup prefetches the index (4096 slots: 64 KiB, twice a usual L1d). */
#define IX_PREFETCH_MIN 4096

#define KNOWN_MODES                                                          \
	((uint64_t)(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | \
		    UFFDIO_REGISTER_MODE_MINOR))

/* ---- node storage ---- */

void uffd_rmap_init(struct uffd_rmap *m, uint32_t seed)
{
	memset(m, 0, sizeof(*m));
	/* xorshift32 never leaves 0, so 0 cannot be the state. */
	m->seed = seed ? seed : 0x9e3779b9u;
}

static size_t ix_bytes(size_t slots)
{
	return slots * sizeof(struct uffd_ixent);
}

void uffd_rmap_destroy(struct uffd_rmap *m)
{
	void *c = m->chunks;
	uint32_t seed = m->seed;

	uffd_sys_munmap(m->ix, ix_bytes(m->ix_cap));

	while (c) {
		void *next;

		memcpy(&next, c, sizeof(next));
		uffd_sys_munmap(c, CHUNK_SIZE);
		c = next;
	}
	/* Leave an empty, usable map behind. */
	uffd_rmap_init(m, seed);
}

int uffd_rmap_reserve(struct uffd_rmap *m, size_t n)
{
	while (m->nfree < n) {
		char *c = uffd_sys_mmap(CHUNK_SIZE);

		if (!c)
			return -ENOMEM;
		memcpy(c, &m->chunks, sizeof(m->chunks));
		m->chunks = c;
		for (size_t i = 0; i < NODES_PER_CHUNK; i++) {
			struct uffd_node *x = (struct uffd_node *)(c + CHUNK_HDR) + i;

			x->next = m->free;
			m->free = x;
		}
		m->nfree += NODES_PER_CHUNK;
	}
	return 0;
}

/* Only after a successful reserve: the free list cannot be empty here. */
static struct uffd_node *node_get(struct uffd_rmap *m)
{
	struct uffd_node *x = m->free;

	m->free = x->next;
	m->nfree--;
	memset(x, 0, sizeof(*x));
	return x;
}

static void node_put(struct uffd_rmap *m, struct uffd_node *x)
{
	x->next = m->free;
	m->free = x;
	m->nfree++;
}

static uint32_t next_prio(struct uffd_rmap *m)
{
	uint32_t s = m->seed;

	s ^= s << 13;
	s ^= s >> 17;
	s ^= s << 5;
	m->seed = s;
	return s;
}

/* ---- treap and list ---- */

/* Every change of the tree or of a piece's start goes through here first. */
static void ix_stale(struct uffd_rmap *m)
{
	m->ix_fresh = false;
	m->ix_misses = 0;
}

/* The piece with the greatest start <= addr, or NULL. */
static struct uffd_node *floor_node(const struct uffd_rmap *m, uintptr_t addr)
{
	struct uffd_node *n = m->root, *best = NULL;

	while (n) {
		if (n->start <= addr) {
			best = n;
			n = n->right;
		} else {
			n = n->left;
		}
	}
	return best;
}

/* The first piece starting at or after addr, once nothing straddles addr. */
static struct uffd_node *first_from(const struct uffd_rmap *m, uintptr_t addr)
{
	struct uffd_node *p = floor_node(m, addr);

	if (!p)
		return m->first;
	return p->start < addr ? p->next : p;
}

/* Split tree t into the nodes with start < key (*l) and the rest (*r). */
static void tsplit(struct uffd_node *t, uintptr_t key, struct uffd_node **l, struct uffd_node **r)
{
	while (t) {
		if (t->start < key) {
			*l = t;
			l = &t->right;
			t = t->right;
		} else {
			*r = t;
			r = &t->left;
			t = t->left;
		}
	}
	*l = NULL;
	*r = NULL;
}

/* Join two trees where every start in a is below every start in b. */
static struct uffd_node *tmerge(struct uffd_node *a, struct uffd_node *b)
{
	struct uffd_node *res = NULL, **link = &res;

	while (a && b) {
		if (a->prio > b->prio) {
			*link = a;
			link = &a->right;
			a = a->right;
		} else {
			*link = b;
			link = &b->left;
			b = b->left;
		}
	}
	*link = a ? a : b;
	return res;
}

/* Link x (start, end set; not in the map) into the tree and the list. */
static void link_node(struct uffd_rmap *m, struct uffd_node *x)
{
	struct uffd_node *pred = floor_node(m, x->start);
	struct uffd_node **link = &m->root;

	ix_stale(m);
	x->prio = next_prio(m);
	while (*link && (*link)->prio >= x->prio)
		link = x->start < (*link)->start ? &(*link)->left : &(*link)->right;
	tsplit(*link, x->start, &x->left, &x->right);
	*link = x;

	x->prev = pred;
	x->next = pred ? pred->next : m->first;
	if (x->next)
		x->next->prev = x;
	if (pred)
		pred->next = x;
	else
		m->first = x;
	m->count++;
}

/* Take x out of the tree and the list; the node itself is left to the caller. */
static void unlink_node(struct uffd_rmap *m, struct uffd_node *x)
{
	struct uffd_node **link = &m->root;

	ix_stale(m);
	while (*link != x)
		link = x->start < (*link)->start ? &(*link)->left : &(*link)->right;
	*link = tmerge(x->left, x->right);

	if (x->prev)
		x->prev->next = x->next;
	else
		m->first = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->left = x->right = x->prev = x->next = NULL;
	m->count--;
}

/* 1 if a piece strictly contains [start, end) on both sides, so cutting it needs a node. */
static size_t cut_need(const struct uffd_rmap *m, uintptr_t start, uintptr_t end)
{
	const struct uffd_node *p = floor_node(m, start);

	return p && p->start < start && p->end > end;
}

/* 1 if addr lies strictly inside a piece, so splitting there needs a node. */
static size_t split_need(const struct uffd_rmap *m, uintptr_t addr)
{
	const struct uffd_node *p = floor_node(m, addr);

	return p && p->start < addr && p->end > addr;
}

/* The part [at, p->end) of p as a new piece; p keeps [p->start, at). Needs one reserved node. */
static void split_piece(struct uffd_rmap *m, struct uffd_node *p, uintptr_t at)
{
	struct uffd_node *q = node_get(m);

	q->start = at;
	q->end = p->end;
	q->data = p->data;
	q->offset = p->offset + (at - p->start);
	q->modes = p->modes;
	p->end = at;
	link_node(m, q);
}

static void split_at(struct uffd_rmap *m, uintptr_t addr)
{
	struct uffd_node *p = floor_node(m, addr);

	if (p && p->start < addr && p->end > addr)
		split_piece(m, p, addr);
}

/* Remove [start, end) from every piece (start < end). Needs cut_need() reserved nodes. */
static void do_cut(struct uffd_rmap *m, uintptr_t start, uintptr_t end)
{
	struct uffd_node *p = floor_node(m, start);

	ix_stale(m); /* a start may move up, below */
	if (!p) {
		p = m->first;
	} else if (p->end <= start) {
		p = p->next;
	} else if (p->start < start) {
		if (p->end > end) {
			/* [start, end) is inside p: keep both sides. */
			split_piece(m, p, end);
			p->end = start;
			return;
		}
		p->end = start;
		p = p->next;
	}
	while (p && p->start < end) {
		struct uffd_node *nx = p->next;

		if (p->end <= end) {
			unlink_node(m, p);
			node_put(m, p);
		} else {
			/*
			 * p straddles the right edge. Moving its start up to end keeps the tree
			 * ordered: every piece that started between them was removed above.
			 */
			p->offset += end - p->start;
			p->start = end;
		}
		p = nx;
	}
}

/* ---- the lookup index ---- */

/*
 * Build the index from the list, mapping a larger one first if it has too few slots: true if
 * it is fresh. Without memory the index stays stale and the count of misses starts again, so
 * the mmap is retried only after as many lookups again.
 */
static bool ix_build(struct uffd_rmap *m)
{
	size_t n = (size_t)m->count, k = 1, i;
	struct uffd_node *p = m->first, *prev = NULL;
	struct uffd_ixent *ix;

	m->ix_misses = 0;
	if (n == 0)
		return false; /* an empty map needs no index: the tree answers at once */
	/* Slot 0 and n more. Regrow with room for a quarter more; shrink below a quarter used. */
	if (m->ix_cap < n + 1 || (m->ix_cap > 4 * (n + 1) && ix_bytes(m->ix_cap) > 65536)) {
		long ps = uffd_page_size();
		size_t want = n + 1 + n / 4;
		size_t bytes = (ix_bytes(want) + (size_t)ps - 1) & ~((size_t)ps - 1);

		ix = uffd_sys_mmap(bytes);
		if (!ix)
			return false;
		uffd_sys_munmap(m->ix, ix_bytes(m->ix_cap));
		m->ix = ix;
		m->ix_cap = bytes / sizeof(*ix);
	}
	ix = m->ix;

	/* In-order walk of the implicit tree (children 2k, 2k + 1), from its leftmost slot. */
	while (2 * k <= n)
		k *= 2;
	for (i = 0; i < n; i++) {
		ix[k].start = p->start;
		ix[k].floor = prev;
		prev = p;
		p = p->next;
		if (2 * k + 1 <= n) {
			k = 2 * k + 1;
			while (2 * k <= n)
				k *= 2;
		} else {
			/* Up past every right-child link, then up once more. */
			while (k & 1)
				k >>= 1;
			k >>= 1;
		}
	}
	ix[0].start = 0;
	ix[0].floor = prev;
	m->ix_fresh = true;
	return true;
}

/*
 * Descend to the first start above addr without a branch on the comparison, and return the
 * slot index just past the path. When the index is larger than the first-level cache, the
 * eight slots three levels below k (128 aligned bytes) are prefetched: that hides most of the
 * memory latency of the levels that miss, for ~20% less time per lookup at 100,000 pieces.
 * In a small index they are cached already and the prefetches only cost (~2 ns at 1,000).
 * A prefetch beyond the mapping is harmless: it never faults.
 */
static inline __attribute__((always_inline)) size_t
ix_descend(const struct uffd_ixent *ix, size_t n, uintptr_t addr, bool prefetch)
{
	size_t k = 1;

	while (k <= n) {
		if (prefetch) {
			uintptr_t below = (uintptr_t)ix + 8 * k * sizeof(*ix);

			__builtin_prefetch((const void *)below);
			__builtin_prefetch((const void *)(below + 64));
		}
		k = 2 * k + (ix[k].start <= addr);
	}
	return k;
}

/* floor_node() through a fresh index. */
static struct uffd_node *ix_floor(const struct uffd_rmap *m, uintptr_t addr)
{
	size_t n = (size_t)m->count, k;

	if (n < IX_PREFETCH_MIN)
		k = ix_descend(m->ix, n, addr, false);
	else
		k = ix_descend(m->ix, n, addr, true);
	/* The path's bits: drop the trailing right turns and the last left one. */
	k >>= __builtin_ctzl(~k) + 1;
	return m->ix[k].floor;
}

/* The piece with the greatest start <= addr, or NULL, for the lookups that change nothing. */
static struct uffd_node *lookup_floor(struct uffd_rmap *m, uintptr_t addr)
{
	if (__builtin_expect(m->ix_fresh, 1))
		return ix_floor(m, addr);
	if (++m->ix_misses > (unsigned long)m->count / 8 + IX_MIN_MISSES && ix_build(m))
		return ix_floor(m, addr);
	return floor_node(m, addr);
}

/* ---- the hidden map API ---- */

const struct uffd_node *uffd_rmap_find(struct uffd_rmap *m, uintptr_t addr)
{
	const struct uffd_node *p = lookup_floor(m, addr);

	return p && addr < p->end ? p : NULL;
}

/* The first piece that ends above addr, given the floor of addr. */
static const struct uffd_node *next_of(const struct uffd_rmap *m, const struct uffd_node *p,
				       uintptr_t addr)
{
	if (!p)
		return m->first;
	/* The piece after the floor starts above addr, so it also ends above it. */
	return p->end > addr ? p : p->next;
}

const struct uffd_node *uffd_rmap_next(struct uffd_rmap *m, uintptr_t addr)
{
	return next_of(m, lookup_floor(m, addr), addr);
}

bool uffd_rmap_overlaps(struct uffd_rmap *m, uintptr_t start, uintptr_t end)
{
	const struct uffd_node *p;

	if (start >= end)
		return false;
	p = uffd_rmap_next(m, start);
	return p && p->start < end;
}

void uffd_rmap_fill(const struct uffd_node *n, struct uffd_range *out)
{
	if (!n) {
		memset(out, 0, sizeof(*out));
		return;
	}
	out->start = (void *)n->start;
	out->end = (void *)n->end;
	out->data = n->data;
	out->offset = n->offset;
}

int uffd_rmap_insert(struct uffd_rmap *m, uintptr_t start, uintptr_t end, void *data, size_t offset,
		     uint64_t modes)
{
	struct uffd_node *x;

	if (start >= end)
		return -EINVAL;
	if (uffd_rmap_reserve(m, cut_need(m, start, end) + 1))
		return -ENOMEM;
	do_cut(m, start, end);
	x = node_get(m);
	x->start = start;
	x->end = end;
	x->data = data;
	x->offset = offset;
	x->modes = modes;
	link_node(m, x);
	return 0;
}

int uffd_rmap_cut(struct uffd_rmap *m, uintptr_t start, uintptr_t end)
{
	if (start > end)
		return -EINVAL;
	if (start == end)
		return 0;
	if (uffd_rmap_reserve(m, cut_need(m, start, end)))
		return -ENOMEM;
	do_cut(m, start, end);
	return 0;
}

int uffd_rmap_move(struct uffd_rmap *m, uintptr_t from, uintptr_t to, size_t len)
{
	uintptr_t from_end = from + len, to_end = to + len;
	struct uffd_node *p, *moved = NULL, **tail = &moved;
	size_t need;

	if (from_end < from || to_end < to)
		return -EINVAL;
	/* Nothing moves. (The kernel sends len 0 when mremap duplicates a shared mapping.) */
	if (len == 0 || from == to)
		return 0;

	/*
	 * Splitting at both source edges takes up to two nodes; cutting the destination out of
	 * what remains takes one more if a piece strictly contains it. What remains after the
	 * source is taken out are parts of today's pieces, so checking today's map is enough.
	 */
	need = split_need(m, from) + split_need(m, from_end) + cut_need(m, to, to_end);
	if (uffd_rmap_reserve(m, need))
		return -ENOMEM;

	split_at(m, from);
	split_at(m, from_end);
	/* Every piece starting in [from, from_end) now ends by from_end: take them out. */
	for (p = first_from(m, from); p && p->start < from_end;) {
		struct uffd_node *nx = p->next;

		unlink_node(m, p);
		*tail = p;
		tail = &p->next;
		p = nx;
	}
	*tail = NULL;

	/* Then clear the destination, which may overlap the source, and put them back there. */
	do_cut(m, to, to_end);
	while (moved) {
		struct uffd_node *nx = moved->next;

		moved->start = moved->start - from + to;
		moved->end = moved->end - from + to;
		link_node(m, moved);
		moved = nx;
	}
	return 0;
}

int uffd_rmap_clone(struct uffd_rmap *dst, const struct uffd_rmap *src)
{
	const struct uffd_node *p;

	if (!dst || !src || dst == src || dst->count != 0)
		return -EINVAL;
	if (uffd_rmap_reserve(dst, (size_t)src->count))
		return -ENOMEM;
	for (p = src->first; p; p = p->next) {
		struct uffd_node *x = node_get(dst);

		x->start = p->start;
		x->end = p->end;
		x->data = p->data;
		x->offset = p->offset;
		x->modes = p->modes;
		link_node(dst, x);
	}
	return 0;
}

/* ---- public calls ---- */

/*
 * What UFFDIO_REGISTER does to a VMA this context already registered: if the VMA's modes
 * include every requested mode it is skipped and keeps its modes ("(vma->vm_flags & vm_flags)
 * == vm_flags" in userfaultfd_register_range()); otherwise its modes are replaced. So
 * registering MISSING over a MISSING|WP range leaves it MISSING|WP. The map records that: an
 * old piece whose modes are a strict superset keeps them (as its own piece, with the new data
 * and offset), everything else in the range becomes one piece with the requested modes.
 */
static bool keeps_modes(const struct uffd_node *p, uint64_t modes)
{
	return (p->modes & modes) == modes && p->modes != modes;
}

static size_t register_need(const struct uffd_rmap *m, uintptr_t start, uintptr_t end,
			    uint64_t modes)
{
	const struct uffd_node *p = next_of(m, floor_node(m, start), start);
	size_t kept = 0;

	for (; p && p->start < end; p = p->next)
		kept += keeps_modes(p, modes);
	/* Splits at both edges, and one new piece per gap between kept pieces. */
	return split_need(m, start) + split_need(m, end) + kept + 1;
}

/* Needs register_need() reserved nodes; cannot fail. */
static void register_apply(struct uffd_rmap *m, uintptr_t start, uintptr_t end, void *data,
			   uint64_t modes)
{
	struct uffd_node *p, *q;
	uintptr_t cur = start;

	split_at(m, start);
	split_at(m, end);
	for (p = first_from(m, start); p && p->start < end; p = q) {
		q = p->next;
		if (keeps_modes(p, modes)) {
			p->data = data;
			p->offset = p->start - start;
		} else {
			unlink_node(m, p);
			node_put(m, p);
		}
	}
	/* Fill the gaps between kept pieces with the requested modes. */
	for (p = first_from(m, start);; p = p->next) {
		uintptr_t stop = p && p->start < end ? p->start : end;

		if (cur < stop) {
			q = node_get(m);
			q->start = cur;
			q->end = stop;
			q->data = data;
			q->offset = cur - start;
			q->modes = modes;
			link_node(m, q);
		}
		if (stop == end)
			break;
		cur = p->end;
	}
}

int uffd_register(struct uffd *u, void *addr, size_t len, uint64_t modes, void *data)
{
	uintptr_t start = (uintptr_t)addr;
	struct uffdio_register reg;
	int ret;

	if (!u || !uffd_span_ok(u, start, len) || !modes || (modes & ~KNOWN_MODES))
		return -EINVAL;
	if (atomic_load(&u->exited))
		return -ESRCH;

	memset(&reg, 0, sizeof(reg));
	reg.range.start = start;
	reg.range.len = len;
	reg.mode = modes;

	/*
	 * The lock is held across the ioctl so that the map changes in the same order as the
	 * kernel's registrations when several threads register at once. The nodes are reserved
	 * first, so that once the kernel has said yes the map update cannot fail. The ioctls
	 * the kernel returns in reg.ioctls are not checked: newer kernels add bits.
	 */
	pthread_mutex_lock(&u->lock);
	ret = uffd_rmap_reserve(&u->map, register_need(&u->map, start, start + len, modes));
	if (!ret)
		ret = uffd_sys_ioctl(u->fd, UFFDIO_REGISTER, &reg);
	if (!ret) {
		register_apply(&u->map, start, start + len, data, modes);
		uffd_stat_add(&u->map_gen, 1);
	}
	pthread_mutex_unlock(&u->lock);
	return ret;
}

/*
 * The map side of uffd_register() alone: for ranges someone else registered on this fd (the
 * sender of an adopted fd). The kernel is not asked; the range is kept true by the events from
 * now on like any other.
 */
int uffd_range_add(struct uffd *u, void *addr, size_t len, uint64_t modes, void *data)
{
	uintptr_t start = (uintptr_t)addr;
	int ret;

	if (!u || !uffd_span_ok(u, start, len) || !modes || (modes & ~KNOWN_MODES))
		return -EINVAL;
	if (atomic_load(&u->exited))
		return -ESRCH;
	pthread_mutex_lock(&u->lock);
	ret = uffd_rmap_reserve(&u->map, register_need(&u->map, start, start + len, modes));
	if (!ret) {
		register_apply(&u->map, start, start + len, data, modes);
		uffd_stat_add(&u->map_gen, 1);
	}
	pthread_mutex_unlock(&u->lock);
	return ret;
}

int uffd_unregister(struct uffd *u, void *addr, size_t len)
{
	uintptr_t start = (uintptr_t)addr;
	struct uffdio_range range;
	int ret;

	if (!u || !uffd_span_ok(u, start, len))
		return -EINVAL;

	range.start = start;
	range.len = len;
	pthread_mutex_lock(&u->lock);
	ret = uffd_rmap_reserve(&u->map, cut_need(&u->map, start, start + len));
	if (!ret)
		ret = uffd_sys_ioctl(u->fd, UFFDIO_UNREGISTER, &range);
	if (!ret)
		ret = uffd_rmap_cut(&u->map, start, start + len);
	uffd_stat_add(&u->map_gen, 1);
	pthread_mutex_unlock(&u->lock);
	return ret;
}

int uffd_range_find(const struct uffd *u, const void *addr, struct uffd_range *out)
{
	/*
	 * A lookup changes no piece, but it may rebuild the map's lookup index, which the lock
	 * guards like the pieces. Contexts are always made by uffd_ctx_new(), never const
	 * objects, so writing through the cast is defined.
	 */
	struct uffd *mu = (struct uffd *)u;
	const struct uffd_node *n;

	if (!u || !out)
		return -EINVAL;
	pthread_mutex_lock(&mu->lock);
	n = uffd_rmap_find(&mu->map, (uintptr_t)addr);
	if (n)
		uffd_rmap_fill(n, out);
	pthread_mutex_unlock(&mu->lock);
	return n ? 0 : -ENOENT;
}

int uffd_range_next(const struct uffd *u, const void *addr, struct uffd_range *out)
{
	struct uffd *mu = (struct uffd *)u; /* as in uffd_range_find() */
	const struct uffd_node *n;

	if (!u || !out)
		return -EINVAL;
	pthread_mutex_lock(&mu->lock);
	n = uffd_rmap_next(&mu->map, (uintptr_t)addr);
	if (n)
		uffd_rmap_fill(n, out);
	pthread_mutex_unlock(&mu->lock);
	return n ? 0 : -ENOENT;
}

long uffd_range_count(const struct uffd *u)
{
	struct uffd *mu = (struct uffd *)u;
	long n;

	if (!u)
		return -EINVAL;
	pthread_mutex_lock(&mu->lock);
	n = u->map.count;
	pthread_mutex_unlock(&mu->lock);
	return n;
}
