/* SPDX-License-Identifier: MIT */
/**
 * @file uffd.h
 * @brief libuffd: a C library for Linux userfaultfd monitors.
 *
 * One header for the whole library. It is organised in sections: contexts, ranges, resolving
 * faults, events, callbacks and dispatch, many contexts (the monitor), introspection.
 *
 * Conventions that hold for every function below:
 * - A function that can fail returns 0 (or a count) on success and a **negative errno** on
 *   failure; errno is never the channel. uffd_strerror() turns a code into a sentence.
 * - Bad arguments (NULL handle, unaligned address, zero or overflowing length, unknown flag or
 *   mode bits) return -EINVAL and change nothing. A required feature the kernel does not offer
 *   is -EOPNOTSUPP.
 * - Nothing in the library aborts, exits or prints.
 * - Addresses are `void *`. For a monitor serving another process they are addresses in that
 *   process and must never be dereferenced locally.
 * - Mode and flag arguments take the kernel's own bits (`UFFDIO_REGISTER_MODE_*`,
 *   `UFFDIO_COPY_MODE_*`, `UFFD_FEATURE_*`, `UFFD_PAGEFAULT_FLAG_*`); this header makes every one
 *   of them up to Linux 6.18 visible even on older kernel headers.
 *
 * The guide explains the model behind these calls (@ref concepts, @ref prep_complete), shows
 * them at work (@ref cookbook) and what to do when they fail (@ref troubleshooting).
 *
 * Threads: uffd_dispatch() may be called by any number of threads at once on one context, and
 * uffd_monitor_run() by any number of threads at once on one monitor (or a pool of library
 * threads serves it: uffd_monitor_start()). Reading and prep stay in the kernel's order per
 * context; fault callbacks run concurrently; notifications (unmap, remove, remap, fork) of one
 * context run one at a time in kernel order, and a fault is delivered only after the
 * notifications read before it; `on_exit` is a context's last callback. uffd_read_events() is
 * for one thread at a time, and not to be mixed with uffd_dispatch() on one context. The
 * resolving calls (uffd_copy() and its siblings), uffd_register(), uffd_unregister(),
 * uffd_range_find(), uffd_range_add(), uffd_fault_finish(), uffd_monitor_add(),
 * uffd_monitor_stop() and uffd_monitor_probe() are safe from any thread, also while the context
 * is being dispatched or the monitor runs. The guide's @ref parallel page has the rules and a
 * worked example.
 *
 * No libuffd call is a pthread cancellation point: the library waits and reads with raw
 * syscalls, because a thread cancelled inside read() after the kernel handed it a message would
 * lose that message and leave the thread that faulted blocked for good. Stop a dispatching
 * thread with a timeout and a flag, an eventfd of your own, or uffd_monitor_stop().
 */
#ifndef UFFD_H
#define UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "uffd_kernel.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @cond INTERNAL */
#if defined(__GNUC__) && !defined(UFFD_NO_VISIBILITY)
#define UFFD_API_EXPORT __attribute__((visibility("default")))
#else
#define UFFD_API_EXPORT
#endif
/** @endcond */

/**
 * @defgroup contexts Contexts
 * @brief Opening a userfaultfd with feature negotiation, adopting one, closing it.
 * @{
 */

/** One userfaultfd context: the fd, what it was granted, its range map and callbacks. Opaque. */
struct uffd;

/**
 * Options for uffd_open() and uffd_adopt(). Zero-initialise; every field is optional.
 *
 * From 0.2 on the struct has a fixed size of 64 bytes (a static assertion holds it there):
 * fields added later take their room from `reserved`, and zero keeps meaning what it means
 * today. uffd_open() and uffd_adopt() refuse a non-zero `reserved` word with
 * -EINVAL, so that a program built against a later header that sets a new field fails cleanly
 * on this library instead of being silently ignored.
 */
struct uffd_config {
	/** `UFFD_FEATURE_*` bits that must be granted, else the open fails with -EOPNOTSUPP.
	 *
	 *  `UFFD_FEATURE_PAGEFAULT_FLAG_WP` grants nothing: it is a probe bit, and requesting it
	 *  changes nothing on the fd. Linux 5.7 and later offer it where they support write-protect
	 *  mode (UFFDIO_REGISTER_MODE_WP, UFFDIO_WRITEPROTECT, `UFFD_PAGEFAULT_FLAG_WP` in fault
	 *  messages), and all of that works on a context that did not request it (seen on 6.18).
	 *  Linux 4.11 to 5.6 define the bit but do not offer it (their UFFDIO_API refuses it) and
	 *  have no write-protect mode (their UFFDIO_REGISTER refuses MODE_WP). So as a required
	 *  bit it means "fail with -EOPNOTSUPP unless this kernel has write-protect mode"; as an
	 *  optional bit uffd_features() tells whether it has. */
	uint64_t required;
	/** `UFFD_FEATURE_*` bits granted where the kernel offers them and this caller may have
	 *  them (EVENT_FORK needs CAP_SYS_PTRACE: as an optional bit it is dropped, not fatal).
	 *  A bit the kernel does not offer, known to the library or not (a newer kernel may offer
	 *  it), is dropped: never an error. */
	uint64_t optional;
	/** `UFFD_OPEN_*` flags. */
	unsigned flags;
	/** Messages read per read() when dispatching; 0 means the default (64). At most 4096. */
	unsigned batch;
	/** Latency mode: before sleeping in poll(), uffd_dispatch() re-reads the fd without blocking
	 *  for up to this many microseconds. It trades CPU time for the ~20-50 us cost of waking a
	 *  sleeping handler on another CPU, so it helps only when the handler thread has a CPU of its
	 *  own (measured: 2.2x faster per fault); sharing a CPU with the faulting threads it gains
	 *  nothing. 0 (the default) turns it off. At most 1000000. */
	unsigned spin_us;
	/** Room for later fields; must be zero. */
	uint32_t reserved[9];
};

/** @cond INTERNAL */
#ifdef __cplusplus
#define UFFD_STATIC_ASSERT static_assert
#else
#define UFFD_STATIC_ASSERT _Static_assert
#endif
UFFD_STATIC_ASSERT(sizeof(struct uffd_config) == 64, "struct uffd_config is 64 bytes");
/** @endcond */

/** Also trap faults raised in kernel mode (a read(2) into a registered page). Needs privilege:
 *  CAP_SYS_PTRACE, `vm.unprivileged_userfaultfd=1`, or access to `/dev/userfaultfd`. Without it
 *  the context is opened with `UFFD_USER_MODE_ONLY`, which every user may do. */
#define UFFD_OPEN_KERNEL_FAULTS 0x1u
/** Open through the userfaultfd(2) syscall only, never `/dev/userfaultfd`. */
#define UFFD_OPEN_SYSCALL_ONLY 0x2u
/** Open through `/dev/userfaultfd` only, never the syscall. */
#define UFFD_OPEN_DEVICE_ONLY 0x4u

/**
 * uffd_open - create a userfaultfd and negotiate its features.
 *
 * The fd is created non-blocking and close-on-exec (a blocking userfaultfd always polls
 * EPOLLERR). Without `UFFD_OPEN_KERNEL_FAULTS` it is user-mode-only. The library tries the doors
 * the caller may use, in this order: the userfaultfd(2) syscall, then `/dev/userfaultfd`. It then
 * grants `required | (optional & offered)` in a single UFFDIO_API handshake, where "offered" is
 * what the running kernel supports (probed once per process and cached, see uffd_probe()).
 *
 * \param out receives the new context; untouched on failure.
 * \param cfg options; NULL means all defaults.
 * \return 0 on success, or a negative errno; no fd or memory is left behind on failure:
 * - -EINVAL: @p out is NULL, unknown bits in `flags`, both `_SYSCALL_ONLY` and
 *   `_DEVICE_ONLY`, `batch`/`spin_us` out of range, or a non-zero `reserved` word.
 * - -EOPNOTSUPP: a `required` feature bit is not offered by this kernel (known bit or not).
 * - -EPERM: no door may be used by this caller (uffd_strerror() names the fixes; see
 *   @ref trouble_eperm), or a required feature needs a privilege the caller lacks (EVENT_FORK
 *   needs CAP_SYS_PTRACE).
 * - -ENOSYS: the kernel has no userfaultfd at all.
 * - -EMFILE, -ENFILE, -ENOMEM: out of fds or memory.
 */
UFFD_API_EXPORT int uffd_open(struct uffd **out, const struct uffd_config *cfg);

/**
 * uffd_adopt - take ownership of a userfaultfd made elsewhere.
 *
 * For an fd received over a unix socket (SCM_RIGHTS) or a fork child's fd. If the fd's UFFDIO_API
 * handshake is not done yet, it is negotiated as uffd_open() does, from @p cfg. If it is done,
 * the granted features are read from `/proc/self/fdinfo/<fd>` and @p cfg's `required` bits must
 * be among them. The fd is switched to non-blocking and close-on-exec. On success the context
 * owns the fd (uffd_close() closes it); on failure the fd is left open and unchanged in its
 * handshake, for the caller to close.
 *
 * O_NONBLOCK belongs to the open file description, which every copy of the fd shares: adopting
 * makes the sender's copy (and any dup() of it) non-blocking too, so a sender that still reads
 * the fd gets EAGAIN where it used to block. Close-on-exec is per descriptor and changes only
 * this copy.
 *
 * The new context's range map is empty: ranges the sender registered are unknown to it, so
 * faults in them arrive with `pf->range` zeroed (`pf->range.data` is NULL) and uffd_range_find()
 * answers -ENOENT there. Ranges registered through this context with uffd_register() are
 * recorded as usual; uffd_range_add() (new in 0.2) records a range the sender registered,
 * without registering it again.
 *
 * \param out receives the new context.
 * \param fd a userfaultfd.
 * \param cfg options as for uffd_open(); `flags` are ignored for an fd whose handshake is done.
 * \return 0 on success, or a negative errno:
 * - -EINVAL: @p out is NULL, @p fd is negative or not a userfaultfd, or bad @p cfg (as for
 *   uffd_open(): a non-zero `reserved` word too).
 * - -EBADF: @p fd is not an open file descriptor.
 * - -EOPNOTSUPP: a required feature was not granted on this fd or is not offered.
 * - -EPERM: a required feature needs a privilege the caller lacks, or, as below, the probe
 *   may not open a userfaultfd.
 * - -ENOMEM: out of memory.
 * - -ENOSYS, -EMFILE, -ENFILE: for an fd whose handshake is not done, as uffd_probe():
 *   negotiating needs the kernel's offer, probed once per process on a throwaway fd.
 */
UFFD_API_EXPORT int uffd_adopt(struct uffd **out, int fd, const struct uffd_config *cfg);

/**
 * uffd_close - close a context and its fd.
 *
 * Closes the context's copy of the fd. When that is the last copy of the userfaultfd, the kernel
 * clears every registration of it: threads blocked on a fault wake and retry as plain memory
 * (they get zero pages), and event senders return. While another copy stays open (the sender's
 * copy of an adopted fd, a dup(), a forked child until it execs or exits) nothing of that
 * happens: the registrations stay, and a thread that faults in them blocks until that copy
 * reads its fault or closes. Contexts a monitor owns are closed by uffd_monitor_free(); do not
 * close them yourself. NULL is a no-op.
 *
 * \param u the context, or NULL.
 */
UFFD_API_EXPORT void uffd_close(struct uffd *u);

/**
 * uffd_fd - the context's file descriptor, for poll/epoll.
 *
 * The fd stays owned by the context: do not close it, read from it or change its flags.
 *
 * \param u the context.
 * \return the fd (>= 0), or -EINVAL if @p u is NULL.
 */
UFFD_API_EXPORT int uffd_fd(const struct uffd *u);

/**
 * uffd_features - the `UFFD_FEATURE_*` bits this context was granted.
 *
 * \param u the context.
 * \return the granted bits (0 for NULL). Note: requesting WP_ASYNC makes the kernel add
 *         WP_UNPOPULATED, and this reports both.
 */
UFFD_API_EXPORT uint64_t uffd_features(const struct uffd *u);

/**
 * uffd_probe - what the running kernel offers.
 *
 * Probes once per process on a throwaway fd (features 0), then answers from a cache; safe from
 * any thread. No side effect beyond that short-lived fd.
 *
 * \param features receives every `UFFD_FEATURE_*` bit the kernel supports; may be NULL.
 * \param ioctls receives the `1 << _UFFDIO_*` bits of the ioctls the kernel supports on a
 *        registered range (REGISTER, UNREGISTER, API, WAKE, COPY, ZEROPAGE, and WRITEPROTECT,
 *        CONTINUE, POISON, MOVE where the features say so); may be NULL.
 * \return 0 on success, or a negative errno: -EPERM (no door may be used by this caller),
 *         -ENOSYS (no userfaultfd in this kernel), -EMFILE, -ENFILE, -ENOMEM.
 */
UFFD_API_EXPORT int uffd_probe(uint64_t *features, uint64_t *ioctls);

/**
 * uffd_feature_name - the name of one feature bit.
 *
 * \param bit exactly one `UFFD_FEATURE_*` bit.
 * \return its name without prefix ("EVENT_UNMAP"), or NULL for an unknown bit or not exactly one.
 */
UFFD_API_EXPORT const char *uffd_feature_name(uint64_t bit);

/**
 * uffd_feature_since - the Linux release that added one feature bit.
 *
 * \param bit exactly one `UFFD_FEATURE_*` bit.
 * \return a string such as "4.11", or NULL for an unknown bit.
 */
UFFD_API_EXPORT const char *uffd_feature_since(uint64_t bit);

/**
 * uffd_ioctl_name - the name of one ioctl by its number.
 *
 * \param nr the ioctl's `_UFFDIO_*` number (0x00 REGISTER ... 0x08 POISON, 0x3F API).
 * \return its name without prefix ("COPY"), or NULL for an unknown number.
 */
UFFD_API_EXPORT const char *uffd_ioctl_name(unsigned nr);

/**
 * uffd_strerror - a sentence for an error code the library returned.
 *
 * In the library's terms: for -EPERM it names what to change (run as root or with
 * CAP_SYS_PTRACE, set `vm.unprivileged_userfaultfd=1`, give access to `/dev/userfaultfd`, or drop
 * `UFFD_OPEN_KERNEL_FAULTS`).
 *
 * Every errno this header documents for any function has a sentence of its own (a test reads
 * the header to hold it to that); any other code gets one catch-all sentence.
 *
 * \param err a code as returned (negative) or its positive value.
 * \return a static string; never NULL.
 */
UFFD_API_EXPORT const char *uffd_strerror(int err);

/** @} */

/**
 * @defgroup ranges Ranges
 * @brief The map of registered ranges, kept true as the address space changes.
 *
 * The context keeps a map of what it registered. UNMAP events and uffd_unregister() cut pieces
 * out (splitting where needed), REMAP moves them, FORK copies them into the child. `data` and
 * `offset` survive splits and moves, so a fault anywhere maps back to "byte N of what I
 * registered". Lookups are O(log n). The guide shows it at work: @ref concepts_map.
 *
 * Limits of what the kernel says: REMAP carries the old length, so after an mremap that grows
 * and moves a range the kernel has registered the grown tail but the event does not say how far
 * it reaches; faults in that tail arrive with `range` zeroed. Holes inside a registered span (no
 * VMA at register time) are skipped by the kernel but kept in the map.
 *
 * Address reuse: a uffd_register() that runs after the dispatcher has read an UNMAP waits until
 * prep has applied it, so a thread that registers its range again the moment its munmap returns
 * keeps the new registration. But if another thread maps and registers the same addresses while
 * the munmap is still waiting for its UNMAP to be read, that UNMAP cuts the new registration out
 * of the map too: the kernel's message does not say which mapping it was about.
 * @{
 */

/** One registered piece, as the map holds it. */
struct uffd_range {
	void *start;   /**< first byte */
	void *end;     /**< one past the last byte: the piece is [start, end) */
	void *data;    /**< what uffd_register() was given */
	size_t offset; /**< offset of start from the start of its registration */
};

/**
 * uffd_register - register a range with the kernel and record it in the map.
 *
 * Registering a range that overlaps earlier registrations of this context takes them over: the
 * map records the new @p data, with offsets counted from @p addr. As the kernel does, a part
 * whose modes already include every requested mode keeps its modes (registering MISSING over
 * MISSING|WP leaves MISSING|WP); every other part gets @p modes. Returned ioctl bits the
 * library does not know are accepted.
 *
 * \param u the context.
 * \param addr page-aligned start.
 * \param len non-zero multiple of the page size.
 * \param modes `UFFDIO_REGISTER_MODE_MISSING | _WP | _MINOR`, at least one.
 * \param data any pointer, returned with every fault and lookup in this range.
 * \return 0 on success, or a negative errno; on failure the map is unchanged:
 * - -EINVAL: NULL @p u, unaligned @p addr, bad @p len, no or unknown mode bits, no VMA in the
 *   range, or a mode the memory type does not support (MINOR on anonymous memory).
 * - -EPERM: a VMA in the range cannot be written (no VM_MAYWRITE).
 * - -EBUSY: another userfaultfd has registered part of the range.
 * - -ENOMEM: out of memory, or the process that owns the fd has exited.
 * - -ESRCH: the context has exited.
 */
UFFD_API_EXPORT int uffd_register(struct uffd *u, void *addr, size_t len, uint64_t modes,
				  void *data);

/**
 * uffd_unregister - unregister a range and cut it out of the map.
 *
 * Unregistering wakes threads blocked on missing faults in the range (they retry as plain
 * memory) and clears write-protection. Unregistering an unregistered range is 0.
 *
 * \param u the context.
 * \param addr page-aligned start.
 * \param len non-zero multiple of the page size.
 * \return 0 on success, or a negative errno; on failure the map is unchanged:
 * - -EINVAL: NULL @p u, bad @p addr or @p len, or no VMA in the range.
 * - -ENOMEM: out of memory, or the process that owns the fd has exited.
 */
UFFD_API_EXPORT int uffd_unregister(struct uffd *u, void *addr, size_t len);

/**
 * uffd_range_find - the registered piece that holds an address.
 *
 * \param u the context.
 * \param addr any address.
 * \param out receives the piece.
 * \return 0 if found, -ENOENT if @p addr is not in a registered piece (NULL is an address like
 *         any other), -EINVAL for NULL @p u or @p out.
 */
UFFD_API_EXPORT int uffd_range_find(const struct uffd *u, const void *addr, struct uffd_range *out);

/**
 * uffd_range_next - walk the map in address order.
 *
 * \param u the context.
 * \param addr where to start: the first piece that ends after @p addr is returned. Pass NULL
 *        for the first piece, then the previous piece's `end`.
 * \param out receives the piece.
 * \return 0 if a piece was found, -ENOENT at the end of the map, -EINVAL for NULL @p u or @p out.
 */
UFFD_API_EXPORT int uffd_range_next(const struct uffd *u, const void *addr, struct uffd_range *out);

/**
 * uffd_range_count - how many pieces the map holds.
 *
 * \param u the context.
 * \return the count (>= 0), or -EINVAL for NULL.
 */
UFFD_API_EXPORT long uffd_range_count(const struct uffd *u);

/**
 * uffd_range_add - record a range someone else registered, without registering it.
 *
 * For an adopted fd whose sender registered its memory itself (a VMM hands its guest memory to a
 * page-fault handler this way): the kernel already has the registration, and this records it in
 * the map, so that faults there carry `range` with @p data and offsets, and the events keep it
 * true from then on like any other piece. The kernel is not asked: the call cannot tell whether
 * the range really is registered. Overlapping pieces are taken over as uffd_register() does.
 *
 * \param u the context.
 * \param addr page-aligned start (an address in the process the fd belongs to).
 * \param len non-zero multiple of the page size.
 * \param modes the `UFFDIO_REGISTER_MODE_*` bits the range was registered with, at least one.
 * \param data any pointer, returned with every fault and lookup in this range.
 * \return 0 on success, or a negative errno; on failure the map is unchanged:
 * - -EINVAL: NULL @p u, unaligned @p addr, bad @p len, no or unknown mode bits.
 * - -ENOMEM: out of memory.
 * - -ESRCH: the context has exited.
 */
UFFD_API_EXPORT int uffd_range_add(struct uffd *u, void *addr, size_t len, uint64_t modes,
				   void *data);

/** @} */

/**
 * @defgroup resolving Resolving faults
 * @brief copy, zeropage, continue, poison, move, writeprotect, wake.
 *
 * Each returns 0 when all of `len` is done. Where the kernel did only part of the range (it
 * answers EAGAIN with the bytes done), the library carries on from where it stopped; what it
 * cannot finish it reports as a negative errno with the kernel's meaning. How much was done
 * before a failure is returned by uffd_last_done(), per calling thread. All are safe from any
 * thread.
 *
 * The errno set, for all of them:
 * - -EINVAL: NULL @p u, unaligned address, zero or overflowing length, unknown mode bits, or a
 *   mode the range was not registered with (ZEROPAGE on hugetlbfs, CONTINUE on anonymous
 *   memory, the WP mode of COPY or CONTINUE on a range not registered WP).
 * - -EEXIST: a page is already present.
 * - -ENOENT: no VMA there, or a VMA no userfaultfd registered (the kernel checks only that
 *   some context registered it, not that this one did); for uffd_writeprotect(), a part of the
 *   range not registered WP (holes too).
 * - -EAGAIN: a layout change is pending (an event is waiting to be read), even after retries
 *   (see @ref trouble_eagain).
 * - -ESRCH: the process that owns the fd has exited.
 * - -EFAULT: the source cannot be read.
 * - -EBUSY: (move) a source page is pinned.
 * - -ENOMEM, -EINTR: as the kernel says.
 * - -EOPNOTSUPP: the context was not granted the feature the call needs (POISON, MOVE).
 * @{
 */

/**
 * uffd_copy - fill missing pages atomically from a buffer (UFFDIO_COPY).
 *
 * \param u the context.
 * \param dst page-aligned destination in the monitored address space.
 * \param src source in this process (may be unaligned).
 * \param len non-zero multiple of the page size.
 * \param mode `UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP`.
 * \return 0 when all of @p len is copied, or a negative errno (see the group).
 */
UFFD_API_EXPORT int uffd_copy(struct uffd *u, void *dst, const void *src, size_t len,
			      uint64_t mode);

/**
 * uffd_zeropage - fill missing pages with zeros (UFFDIO_ZEROPAGE).
 *
 * \param u the context.
 * \param dst page-aligned destination.
 * \param len non-zero multiple of the page size.
 * \param mode `UFFDIO_ZEROPAGE_MODE_DONTWAKE`.
 * \return 0 when all of @p len is done, or a negative errno (see the group).
 */
UFFD_API_EXPORT int uffd_zeropage(struct uffd *u, void *dst, size_t len, uint64_t mode);

/**
 * uffd_continue - map pages already in the page cache for minor faults (UFFDIO_CONTINUE).
 *
 * \param u the context.
 * \param dst page-aligned destination.
 * \param len non-zero multiple of the page size.
 * \param mode `UFFDIO_CONTINUE_MODE_DONTWAKE | UFFDIO_CONTINUE_MODE_WP`.
 * \return 0 when all of @p len is done, or a negative errno (see the group).
 */
UFFD_API_EXPORT int uffd_continue(struct uffd *u, void *dst, size_t len, uint64_t mode);

/**
 * uffd_poison - mark pages poisoned: touching them raises SIGBUS (UFFDIO_POISON, Linux 6.6).
 *
 * \param u the context (granted UFFD_FEATURE_POISON).
 * \param dst page-aligned destination.
 * \param len non-zero multiple of the page size.
 * \param mode `UFFDIO_POISON_MODE_DONTWAKE`.
 * \return 0 when all of @p len is done, or a negative errno (see the group).
 */
UFFD_API_EXPORT int uffd_poison(struct uffd *u, void *dst, size_t len, uint64_t mode);

/**
 * uffd_move - move pages from @p src to missing pages at @p dst (UFFDIO_MOVE, Linux 6.8).
 *
 * Only for a context whose fd belongs to this process (the kernel refuses a foreign mm).
 *
 * \param u the context (granted UFFD_FEATURE_MOVE).
 * \param dst page-aligned destination.
 * \param src page-aligned source in the same address space.
 * \param len non-zero multiple of the page size.
 * \param mode `UFFDIO_MOVE_MODE_DONTWAKE | UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES`.
 * \return 0 when all of @p len is moved, or a negative errno (see the group).
 */
UFFD_API_EXPORT int uffd_move(struct uffd *u, void *dst, void *src, size_t len, uint64_t mode);

/**
 * uffd_writeprotect - write-protect or un-protect a range (UFFDIO_WRITEPROTECT).
 *
 * Un-protecting wakes threads blocked on write-protect faults in the range (unless DONTWAKE).
 * Without UFFD_FEATURE_WP_UNPOPULATED the kernel silently skips pages never populated.
 *
 * \param u the context.
 * \param addr page-aligned start, in a range registered with UFFDIO_REGISTER_MODE_WP.
 * \param len non-zero multiple of the page size.
 * \param protect true to protect, false to un-protect.
 * \param mode `UFFDIO_WRITEPROTECT_MODE_DONTWAKE` (only when un-protecting; with @p protect it is
 *        -EINVAL, as the kernel says). The WP bit itself comes from @p protect.
 * \return 0 on success, or a negative errno (see the group).
 */
UFFD_API_EXPORT int uffd_writeprotect(struct uffd *u, void *addr, size_t len, bool protect,
				      uint64_t mode);

/**
 * uffd_wake - wake threads blocked on faults in a range without resolving them (UFFDIO_WAKE).
 *
 * A woken thread faults again: where the range is gone it gets SIGSEGV, as without a monitor;
 * where it is still registered the fault comes back. Works on unmapped ranges.
 *
 * \param u the context.
 * \param addr page-aligned start.
 * \param len non-zero multiple of the page size.
 * \return 0 on success, -EINVAL for bad arguments.
 */
UFFD_API_EXPORT int uffd_wake(struct uffd *u, void *addr, size_t len);

/**
 * uffd_last_done - bytes done by the calling thread's last resolving call.
 *
 * Set by every uffd_copy(), uffd_zeropage(), uffd_continue(), uffd_poison(), uffd_move(),
 * uffd_writeprotect() and uffd_wake() on the calling thread, success or failure: on success it is
 * the whole length; on failure the bytes the kernel completed (from the start of the range)
 * before the error. It is thread-local, so it is exact however many threads resolve at once.
 *
 * \return the byte count.
 */
UFFD_API_EXPORT size_t uffd_last_done(void);

/** @} */

/**
 * @defgroup events Events
 * @brief Typed events decoded from the kernel's 32-byte messages.
 *
 * What each of the five events means, and why each but the fault stops the process until it is
 * read: @ref concepts_events.
 * @{
 */

/** The kind of an event. The values equal the kernel's UFFD_EVENT_* codes. */
enum uffd_event_kind {
	UFFD_EVT_PAGEFAULT = 0x12, /**< a thread faulted in a registered range */
	UFFD_EVT_FORK = 0x13,	   /**< the process forked; the child has its own context */
	UFFD_EVT_REMAP = 0x14,	   /**< mremap moved a registered range */
	UFFD_EVT_REMOVE = 0x15,	   /**< madvise(DONTNEED/REMOVE/FREE) dropped pages */
	UFFD_EVT_UNMAP = 0x16,	   /**< munmap (or MAP_FIXED, mremap shrink/move) unmapped */
	UFFD_EVT_UNKNOWN = 0xff,   /**< a code this library does not know; see `raw` */
};

/**
 * A page fault. The one a fault callback is given lives in the library's batch storage and is
 * valid only until the callback returns: copy the struct (by value) to keep it.
 */
struct uffd_pagefault {
	/** Faulting address: page-aligned unless UFFD_FEATURE_EXACT_ADDRESS was granted. */
	void *address;
	/** `UFFD_PAGEFAULT_FLAG_WRITE | _WP | _MINOR`; neither WP nor MINOR means missing. */
	uint64_t flags;
	/** Faulting thread (in the reader's pid namespace); 0 without UFFD_FEATURE_THREAD_ID. */
	pid_t tid;
	/** The registered piece it hit, or all zero if none (see the ranges group). */
	struct uffd_range range;
};

/** An mremap: [from, from + len) moved to [to, to + len). `len` is the old length. */
struct uffd_remap {
	void *from; /**< old start */
	void *to;   /**< new start */
	size_t len; /**< old length */
};

/** A span of addresses, [start, end): REMOVE and UNMAP. */
struct uffd_span {
	void *start; /**< first byte */
	void *end;   /**< one past the last byte */
};

/** A fork: the child process's context. */
struct uffd_fork {
	/** The child's context; NULL from uffd_event_decode(). */
	struct uffd *child;
	/** The child's userfaultfd, installed in this (the reader's) process. */
	int fd;
};

/** One decoded event. */
struct uffd_event {
	enum uffd_event_kind kind; /**< which member of the union is valid */
	struct uffd *ctx;	   /**< the context it came from; NULL from uffd_event_decode() */
	union {
		struct uffd_pagefault pagefault; /**< UFFD_EVT_PAGEFAULT */
		struct uffd_fork fork;		 /**< UFFD_EVT_FORK */
		struct uffd_remap remap;	 /**< UFFD_EVT_REMAP */
		struct uffd_span remove;	 /**< UFFD_EVT_REMOVE */
		struct uffd_span unmap;		 /**< UFFD_EVT_UNMAP */
	};
	uint8_t raw[32]; /**< the message as read, for UNKNOWN and for logging */
};

/**
 * uffd_event_decode - decode one 32-byte `struct uffd_msg`.
 *
 * A pure function of the bytes: no syscalls, no context, no allocation. `ctx` and
 * `fork.child` are NULL; `pagefault.range` is zeroed. An unknown event code decodes to
 * UFFD_EVT_UNKNOWN with `raw` kept, so newer kernels don't break old monitors.
 *
 * \param msg the message bytes.
 * \param len their length: at least 32 (only the first 32 are read).
 * \param ev receives the event; on error its content is unspecified.
 * \return 0 on success, or a negative errno:
 * - -EINVAL: NULL @p msg or @p ev, or @p len < 32.
 * - -EPROTO: a malformed known event: a span with start >= end, an unaligned span, a
 *   zero-length remap, an unaligned remap or one whose ranges wrap around the address space, a
 *   fork fd or thread id above INT_MAX. @p ev still holds the kind and the fields as read.
 *
 * Note: Linux sends a zero-length REMAP when mremap(addr, 0, len, MREMAP_MAYMOVE) duplicates a
 * shared mapping. This function calls it malformed, as the library's contract says; the
 * dispatcher (uffd_dispatch(), uffd_read_events()) delivers it as a REMAP with `len` 0.
 */
UFFD_API_EXPORT int uffd_event_decode(const void *msg, size_t len, struct uffd_event *ev);

/**
 * uffd_event_name - the name of an event kind.
 *
 * \param kind an event kind.
 * \return "pagefault", "fork", "remap", "remove", "unmap" or "unknown"; never NULL.
 */
UFFD_API_EXPORT const char *uffd_event_name(enum uffd_event_kind kind);

/**
 * uffd_read_events - the pull interface: read one batch and run prep on it.
 *
 * Waits up to @p timeout_ms for the fd, reads one batch (up to min(@p max, the context's batch)
 * messages in one read()), and runs prep: the range map is brought up to date (UNMAP cuts, REMAP
 * moves, FORK makes the child context), exact duplicate UNMAP spans are dropped, and faults inside
 * spans this batch unmapped or moved away are woken (UFFDIO_WAKE), not returned. No callback is
 * called. Fork children returned belong to the caller: uffd_close() them (their threads then run
 * unmonitored) or serve them.
 *
 * \param u the context.
 * \param evs where to put the events.
 * \param max room in @p evs (> 0).
 * \param timeout_ms -1 to wait for ever, 0 not to wait.
 * \return the number of events placed (0 on timeout, or when every message of the batch was
 *         a fault woken in prep), or a negative errno:
 * - -EINVAL: NULL @p u or @p evs, @p max 0, @p timeout_ms < -1.
 * - -ESRCH: the context has exited.
 * - -EMFILE, -ENFILE: a fork child's fd could not be installed; the event stays with the kernel
 *   and comes back once fds are free.
 * - -ENOMEM: a fork child's context could not be made; the event is kept and returned by the
 *   next call.
 * - -EINTR: interrupted by a signal before anything was read.
 */
UFFD_API_EXPORT int uffd_read_events(struct uffd *u, struct uffd_event *evs, size_t max,
				     int timeout_ms);

/** @} */

/**
 * @defgroup dispatch Callbacks and dispatch
 * @brief Two-phase dispatch to user callbacks: prep (no user code) then complete (no lock).
 *
 * uffd_dispatch() reads one batch and handles it in two phases that mirror the kernel's
 * `userfaultfd_unmap_prep()` / `userfaultfd_unmap_complete()`:
 *
 * **prep**, with the context's state locked and no user code running: decode every message;
 * apply UNMAP, REMAP and FORK to the range map in order; build the notifications, one UNMAP per
 * (context, start, end) as the kernel's has_unmap_ctx() does (a REMOVE repeated within a batch is
 * a separate madvise() and is delivered each time); wake faults that fall in a span this batch
 * unmapped or moved away. Reading the batch has already released every thread blocked in munmap, mremap,
 * madvise or fork on these events, so a slow callback never stalls the monitored process. No
 * memory is allocated with malloc before or during prep (glibc's fork() holds the malloc locks
 * until the FORK event is read): batch storage is made when a context is created, and a fork
 * child's context comes from mmap.
 *
 * **complete**, with no internal lock held: the notifications are delivered, in the order the
 * kernel sent them, to the `uffd_on_*` callbacks. Callbacks may call any libuffd function on any
 * context, including uffd_dispatch() on another context (on their own context, or
 * uffd_monitor_run() on the monitor serving them, they get -EDEADLK). **Callbacks may allocate,
 * lock and print, except in one case:** a process that monitors itself with a single
 * dispatching thread while another of its threads may fork. Its next `fork()` holds glibc's
 * malloc and stdio locks until its FORK event is read, and a callback blocked in `malloc()`
 * keeps the only reader from reading it: a deadlock (@ref trouble_fork_malloc). Serve such a
 * process with a pool (uffd_monitor_start()), whose reader thread never runs user code. **A callback must not unmap, remap,
 * madvise away or fork memory registered on the context it is called for**: that blocks it on an
 * event only it could read.
 *
 * Fault callbacks return 0 when resolved, or the negative errno of the resolving call:
 * - -EAGAIN: the pending events are read and applied, the notifications read so far are
 *   delivered (so a REMOVE of the fault's page reaches on_remove before the fault's callback runs
 *   again), then the fault is delivered again if its address is still registered, else woken; a
 *   bounded number of times, first with a yield and
 *   then with short sleeps (about 5 ms in all: the kernel lowers its layout-changing state only
 *   when the blocked sender runs again), after which it is woken (the thread faults again and
 *   the fault comes back).
 * - -EEXIST, -ENOENT: woken and counted (`faults_woken`); dispatch goes on.
 * - -ESRCH: the context is marked exited and `on_exit` runs once.
 * - anything else: the fault is woken, dispatch stops and returns the error; the rest of the
 *   batch is delivered by the next call.
 *
 * Other callbacks return 0, or a negative errno that stops dispatch the same way.
 *
 * Defaults when no fault callback is set: a missing fault is resolved with a zero page, a minor
 * fault with UFFDIO_CONTINUE, a write-protect fault by un-protecting the page, each on the whole
 * page of the mapping's own size (hugetlbfs too); see uffd_default_pagefault(), which a callback
 * may also call for the faults it leaves to the defaults. Without `on_fork`
 * (and outside a monitor) a child context is closed, which lets the child run unmonitored.
 * Setting a callback to NULL restores the default.
 *
 * @ref prep_complete walks through one batch, with sequence diagrams.
 * @{
 */

/** A fault callback: resolve @p pf (uffd_copy() etc.) and return 0, or the negative errno.
 *  @p pf is valid only during the call: copy `*pf` to keep it. */
typedef int (*uffd_pagefault_fn)(struct uffd *u, const struct uffd_pagefault *pf, void *arg);
/** An UNMAP or REMOVE callback: the range map is already updated. Return 0 or a negative errno. */
typedef int (*uffd_span_fn)(struct uffd *u, const struct uffd_span *span, void *arg);
/** A REMAP callback: the range map already shows the move. Return 0 or a negative errno. */
typedef int (*uffd_remap_fn)(struct uffd *u, const struct uffd_remap *remap, void *arg);
/** A FORK callback: return 0 to keep @p child, or a negative errno to close it (the child
 *  process then runs unmonitored). A kept child is the caller's when the parent is served by
 *  uffd_dispatch() alone (close it when done, even at once: the library is done with it once the
 *  callback returns), and the monitor's when the parent is in one (it joins that monitor: do not
 *  close it yourself). A child that the callback itself adds to a monitor (uffd_monitor_add())
 *  is served there. */
typedef int (*uffd_fork_fn)(struct uffd *parent, struct uffd *child, void *arg);
/** An exit callback: the process behind @p u is gone; runs once per context. */
typedef void (*uffd_exit_fn)(struct uffd *u, void *arg);

/**
 * uffd_on_pagefault - set the page-fault callback.
 * \param u the context. \param fn the callback, or NULL for the default. \param arg its argument.
 * \return 0, or -EINVAL for NULL @p u.
 */
UFFD_API_EXPORT int uffd_on_pagefault(struct uffd *u, uffd_pagefault_fn fn, void *arg);

/**
 * uffd_default_pagefault - resolve a fault the way a context without a fault callback does.
 *
 * The fault callback that uffd_on_pagefault() installs for NULL, exported (since 0.2) so that a
 * callback can handle some faults itself and leave the rest to it: for instance, serve minor
 * faults from its own source and `return uffd_default_pagefault(u, pf, NULL);` for the others.
 *
 * What it does, on the page around `pf->address` (the whole page, at the mapping's page size):
 * - a missing fault (neither `UFFD_PAGEFAULT_FLAG_WP` nor `_MINOR`): maps a page of zeros, with
 *   UFFDIO_ZEROPAGE, or on hugetlbfs (which has no zero page) with UFFDIO_COPY from a read-only
 *   zero mapping the library makes once per page size and keeps;
 * - a minor fault: maps the page already in the page cache (UFFDIO_CONTINUE);
 * - a write-protect fault: un-protects the page (UFFDIO_WRITEPROTECT), which wakes the thread.
 *
 * hugetlbfs: the kernel accepts only whole huge pages. The page size is never assumed: when
 * the base-page call is refused with -EINVAL, the handler asks the kernel for the mapping's page
 * size (PROCMAP_QUERY on /proc/self/maps, Linux 6.11) if the context serves the process that
 * opened it (uffd_open()), and otherwise (an adopted fd, a fork child's context, an older kernel)
 * tries each huge page size the machine offers (/sys/kernel/mm/hugepages), smallest first; the
 * kernel refuses every wrong size before it changes anything. So 2 MiB and 1 GiB pages (x86-64),
 * 512 MiB (arm64 with 64 KiB pages) and 16 MiB (ppc64) are all served.
 *
 * It allocates nothing with malloc, takes no lock and makes no cancellation point, so it is safe
 * in a monitor that shares its process with threads that fork, and in a fork child. The first
 * missing fault on a huge page size maps (and keeps) a zero source of that size.
 * uffd_last_done() afterwards tells how much the last resolving call did.
 *
 * \param u the context the fault came from.
 * \param pf the fault, as given to a fault callback.
 * \param arg ignored (the callback's argument).
 * \return 0 when the fault is resolved, or the negative errno of the resolving call, which a
 * fault callback may return as it is (the dispatcher then acts on it, see the group):
 * - -EINVAL: NULL @p u or @p pf, or no page size fits the mapping (the range is not registered
 *   for this kind of fault, e.g. a minor fault's range on anonymous memory).
 * - -EEXIST: the page is already present (another thread resolved it).
 * - -ENOENT: the range is gone, or no longer registered (write-protect: not registered WP).
 * - -EAGAIN: a layout change is pending (an event waits to be read).
 * - -ESRCH: the process that owns the fd has exited.
 * - -ENOMEM: the zero source for a huge page size could not be mapped, or the kernel is out of
 *   memory (on hugetlbfs: no free huge page in the pool).
 * - -EINTR: as the kernel says.
 */
UFFD_API_EXPORT int uffd_default_pagefault(struct uffd *u, const struct uffd_pagefault *pf,
					   void *arg);
/**
 * uffd_on_unmap - set the UNMAP callback.
 * \param u the context. \param fn the callback, or NULL for none. \param arg its argument.
 * \return 0, or -EINVAL for NULL @p u.
 */
UFFD_API_EXPORT int uffd_on_unmap(struct uffd *u, uffd_span_fn fn, void *arg);
/**
 * uffd_on_remove - set the REMOVE callback.
 * \param u the context. \param fn the callback, or NULL for none. \param arg its argument.
 * \return 0, or -EINVAL for NULL @p u.
 */
UFFD_API_EXPORT int uffd_on_remove(struct uffd *u, uffd_span_fn fn, void *arg);
/**
 * uffd_on_remap - set the REMAP callback.
 * \param u the context. \param fn the callback, or NULL for none. \param arg its argument.
 * \return 0, or -EINVAL for NULL @p u.
 */
UFFD_API_EXPORT int uffd_on_remap(struct uffd *u, uffd_remap_fn fn, void *arg);
/**
 * uffd_on_fork - set the FORK callback (inherited by children).
 * \param u the context. \param fn the callback, or NULL for the default. \param arg its argument.
 * \return 0, or -EINVAL for NULL @p u.
 */
UFFD_API_EXPORT int uffd_on_fork(struct uffd *u, uffd_fork_fn fn, void *arg);
/**
 * uffd_on_exit - set the exit callback.
 * \param u the context. \param fn the callback, or NULL for none. \param arg its argument.
 * \return 0, or -EINVAL for NULL @p u.
 */
UFFD_API_EXPORT int uffd_on_exit(struct uffd *u, uffd_exit_fn fn, void *arg);

/**
 * uffd_dispatch - wait for, read and handle one batch.
 *
 * \param u the context.
 * \param timeout_ms how long to wait for the fd: -1 for ever, 0 not at all.
 * \return the number of events handled (0 on timeout), or a negative errno:
 * - -EINVAL: NULL @p u or @p timeout_ms < -1.
 * - -ESRCH: the context had already exited (`on_exit` has run).
 * - -EMFILE, -ENFILE, -ENOMEM: as uffd_read_events(); nothing is lost.
 * - -ENOMEM, -ENOSPC: a fork child, which `on_fork` kept, could not join the parent's monitor
 *   (uffd_monitor_add()); the FORK event is kept and the next call tries again.
 * - -EINTR: interrupted before anything was read.
 * - a callback's error (see the group).
 */
UFFD_API_EXPORT int uffd_dispatch(struct uffd *u, int timeout_ms);

/** A fault callback's "I will finish it later": see uffd_fault_finish(). */
#define UFFD_FAULT_DEFERRED 1

/**
 * uffd_fault_finish - finish a fault whose callback returned UFFD_FAULT_DEFERRED.
 *
 * A fault callback may return UFFD_FAULT_DEFERRED and resolve the fault later, from any thread
 * (a source that answers asynchronously keeps many faults in flight this way). Resolve it as the
 * callback would have (uffd_copy() and its siblings), then call this with what the callback
 * would have returned; the rules of the dispatch group apply:
 * - 0: resolved; nothing more is done.
 * - -EAGAIN: the fault is woken, so its thread faults again and the fault comes back to whichever
 *   thread dispatches next, after the pending events (`eagain_retries` counts it).
 * - -EEXIST, -ENOENT: woken and counted in `faults_woken`.
 * - -ESRCH: the context is marked exited.
 * - any other error: the fault is woken and the error returned.
 *
 * A context stays allocated until each of its deferred faults is finished, even after
 * uffd_close() or its process's exit; `on_exit` runs after the last one is finished. Once the
 * process has exited (or the context was closed), this does nothing and returns -ESRCH.
 *
 * Call it exactly once per deferred fault, and only for one: the library counts deferred faults
 * per context, not per fault, so a call for a fault that was not deferred takes another
 * fault's place (-EINVAL only when none is deferred at all), and on_exit may then never run.
 *
 * \param u the context the fault came from.
 * \param pf the callback's fault, copied by value (the callback's pointer is not valid after it
 *        returns); only its address is used.
 * \param err what a callback would have returned: 0 or a negative errno.
 * \return 0 when the fault is dealt with, or a negative errno:
 * - -EINVAL: NULL @p u or @p pf, @p err > 0, or no fault of @p u is deferred.
 * - -ESRCH: the process has exited, or the context was closed.
 * - @p err itself for an error the rules do not absorb (the fault was woken).
 */
UFFD_API_EXPORT int uffd_fault_finish(struct uffd *u, const struct uffd_pagefault *pf, int err);

/** @} */

/**
 * @defgroup monitor Many contexts
 * @brief A monitor: one loop serving many contexts and their fork children, noticing exits.
 *
 * The kernel sends no event when a process exits. The monitor learns it from -ESRCH, from a
 * pidfd where the pid is known (uffd_monitor_watch_pid()), and from a liveness probe every
 * 250 ms of every context that does not belong to the monitor's own process (fork children,
 * whose pid is unknown, and watched processes too: after an exec() the pid lives on but the
 * address space the context served is gone, and only the probe sees it). The probe is a
 * UFFDIO_COPY of one page, with DONTWAKE, from a PROT_NONE page of the monitor, which can never
 * change a live process's memory or registrations. An exit is reported within one second:
 * `on_exit` runs once and the context is closed.
 *
 * The guide has a monitor following forks (@ref cookbook_fork), one inside an existing epoll
 * loop (@ref cookbook_epoll) and one serving another process (@ref cookbook_adopt).
 * @{
 */

/** A set of contexts served together. Opaque. */
struct uffd_monitor;

/**
 * uffd_monitor_new - make an empty monitor.
 * \param out receives it.
 * \return 0, or -EINVAL (NULL @p out), -ENOMEM, -EMFILE, -ENFILE.
 */
UFFD_API_EXPORT int uffd_monitor_new(struct uffd_monitor **out);

/**
 * uffd_monitor_free - free a monitor and close every context it owns. NULL is a no-op.
 * \param m the monitor.
 */
UFFD_API_EXPORT void uffd_monitor_free(struct uffd_monitor *m);

/**
 * uffd_monitor_add - add a context; the monitor takes ownership of it.
 * \param m the monitor.
 * \param u the context; it must not belong to another monitor.
 * \return 0, or -EINVAL (NULL argument), -EBUSY (@p u already belongs to a monitor), -ENOMEM,
 *         -ENOSPC (the user's limit of epoll watches, `fs.epoll.max_user_watches`). On failure
 *         ownership stays with the caller.
 */
UFFD_API_EXPORT int uffd_monitor_add(struct uffd_monitor *m, struct uffd *u);

/**
 * uffd_monitor_watch_pid - tell the monitor which process a context serves.
 *
 * The monitor then learns of the exit through a pidfd at once, instead of at the next probe
 * (the probe still runs: it is what notices an exec()).
 * \param m the monitor.
 * \param u a context added to @p m.
 * \param pid the process behind @p u.
 * \return 0, or -EINVAL (NULL argument, @p pid <= 0, @p u not in @p m), -ESRCH (no such process),
 *         -EMFILE, -ENFILE, -ENOMEM, -ENOSPC (the limit of epoll watches, as
 *         uffd_monitor_add()), -ENOSYS (no pidfd_open).
 */
UFFD_API_EXPORT int uffd_monitor_watch_pid(struct uffd_monitor *m, struct uffd *u, pid_t pid);

/**
 * uffd_monitor_run - serve every context until stopped, all are gone, or a timeout.
 * \param m the monitor.
 * \param timeout_ms -1 for ever, 0 for one pass without waiting.
 * \return the number of events handled, or a negative errno; what was left is served by the
 *         next run:
 * - -EINVAL: NULL @p m or @p timeout_ms < -1.
 * - -EBUSY: the monitor is running already (in another thread, or in a callback it called).
 * - -EMFILE, -ENFILE, -ENOMEM: as uffd_dispatch().
 * - -ENOSPC: a fork child could not be watched (the limit of epoll watches, as
 *   uffd_monitor_add()); the FORK event is kept and retried by the next run.
 * - a callback's error, as uffd_dispatch() returns it.
 */
UFFD_API_EXPORT int uffd_monitor_run(struct uffd_monitor *m, int timeout_ms);

/**
 * uffd_monitor_stop - make uffd_monitor_run() return. Safe from any thread and from a signal
 * handler (it only writes to an eventfd). A stop with no run in progress makes the next run
 * return at once.
 * \param m the monitor.
 * \return 0, or -EINVAL for NULL.
 */
UFFD_API_EXPORT int uffd_monitor_stop(struct uffd_monitor *m);

/**
 * uffd_monitor_probe - check every context's process now, not at the next 250 ms probe.
 *
 * The kernel sends no event when a process exits or execs, so the monitor probes the contexts
 * whose exit it cannot otherwise hear of (no pidfd: fork children, adopted fds) every 250 ms.
 * A caller that knows processes have just ended (it reaped a child, a pipeline finished) calls
 * this so that the running (or next) uffd_monitor_run() probes at once: the `on_exit`
 * callbacks of the processes that are gone run, and their contexts are closed, without
 * waiting for the tick. The probe cannot change a live process's memory. Safe from any thread
 * and from a signal handler (it only re-arms a timerfd).
 * \param m the monitor.
 * \return 0, or -EINVAL for NULL.
 */
UFFD_API_EXPORT int uffd_monitor_probe(struct uffd_monitor *m);

/**
 * uffd_monitor_fd - an fd that polls readable when uffd_monitor_run() has work.
 *
 * Embed the monitor in an existing event loop: poll this fd, and call uffd_monitor_run(m, 0)
 * when it is readable.
 * \param m the monitor.
 * \return the fd, or -EINVAL for NULL.
 */
UFFD_API_EXPORT int uffd_monitor_fd(const struct uffd_monitor *m);

/**
 * uffd_monitor_count - how many contexts the monitor serves now.
 * \param m the monitor.
 * \return the count, or -EINVAL for NULL.
 */
UFFD_API_EXPORT int uffd_monitor_count(const struct uffd_monitor *m);

/**
 * uffd_monitor_remove - take a context back from a monitor without closing it.
 *
 * For a process that no longer needs serving (fully restored), or to move a context to another
 * monitor. The monitor's threads finish what they were doing with the context first: the call
 * returns once none is in one of its callbacks, and the context is then the caller's, with
 * whatever it had read and not yet delivered (the next uffd_dispatch() delivers it).
 * \param m the monitor.
 * \param u a context added to @p m.
 * \return 0, or a negative errno:
 * - -EINVAL: NULL argument.
 * - -ENOENT: @p u does not belong to @p m.
 * - -ESRCH: @p u's process has exited; the monitor closes it after `on_exit`.
 * - -EDEADLK: called from a callback of @p u, or of any context @p m serves.
 */
UFFD_API_EXPORT int uffd_monitor_remove(struct uffd_monitor *m, struct uffd *u);

/**
 * uffd_monitor_start - serve the monitor from a pool of library threads.
 *
 * Starts one reader thread (`uffd-read`), which waits on every context, reads and preps each
 * batch and never runs user code or allocates, and @p nthreads workers (`uffd-work/N`), which
 * run the callbacks: the faults of one context concurrently, its notifications one at a time in
 * kernel order. Because the reader never waits for a callback, callbacks may allocate, lock and
 * print even when the process they serve is the monitor's own and forks from several threads at
 * once (see @ref trouble_fork_malloc for the deadlock this avoids). Every batch and queue slot
 * the reader may need is made here and when contexts join.
 *
 * The threads block every signal. uffd_monitor_stop() then uffd_monitor_join() end them. An
 * error that would make uffd_dispatch() return stops the pool, and uffd_monitor_join() returns
 * it. A fork() while the pool runs leaves the child without the pool's threads: the child must
 * not use the monitor, except to uffd_monitor_free() it, which closes its copies of the fds and
 * frees the memory without taking any lock.
 * \param m the monitor.
 * \param nthreads worker threads, 1 to 1024.
 * \return 0 (returns at once), or a negative errno:
 * - -EINVAL: NULL @p m, @p nthreads 0 or above 1024.
 * - -EBUSY: a pool runs already, or a thread is in uffd_monitor_run().
 * - -EDEADLK: called from a callback of a context @p m serves.
 * - -ENOMEM, -EAGAIN: memory or threads could not be had; nothing was started.
 */
UFFD_API_EXPORT int uffd_monitor_start(struct uffd_monitor *m, unsigned nthreads);

/**
 * uffd_monitor_join - wait for a pool to end, after uffd_monitor_stop() or an error.
 *
 * Every batch the reader handed to the workers is delivered before they end; what is read and
 * not yet delivered then stays with its context for the next run or pool.
 * \param m the monitor.
 * \return the number of events the pool handled, or the first error that stopped it:
 * - -EINVAL: NULL @p m, or no pool was started.
 * - -EDEADLK: called from a callback of a context @p m serves.
 * - a callback's error, or one of uffd_dispatch()'s.
 */
UFFD_API_EXPORT int uffd_monitor_join(struct uffd_monitor *m);

/** @} */

/**
 * @defgroup sources Page sources and serving
 * @brief Where pages come from, serving a registration from them, recorded prefetch.
 *
 * The other half of a lazy restore: a source answers "the bytes at this offset of the image",
 * and uffd_serve() makes a registration fault its pages in from one, a chunk around each fault
 * at a time, with discards answered as the registration says. uffd_prefetch() installs a
 * recorded working set in bulk before it is touched. The guide walks through a restore:
 * @ref sources_guide.
 * @{
 */

/**
 * uffd_fault_offset - byte N of the registration for a fault.
 *
 * `pf->range.offset + (pf->address - pf->range.start)`, as one call.
 * \param pf a fault as a callback got it.
 * \param out receives the offset of the fault's address from the start of its registration.
 * \return 0, -EINVAL (NULL argument), or -ENOENT (`pf->range` is zeroed: the address was in no
 *         piece of the map).
 */
UFFD_API_EXPORT int uffd_fault_offset(const struct uffd_pagefault *pf, uint64_t *out);

/** Who sent an fd (uffd_fd_recv()). */
struct uffd_peer {
	pid_t pid; /**< the sender's process */
	uid_t uid; /**< its user */
	gid_t gid; /**< its group */
};

/**
 * uffd_fd_send - send a userfaultfd (or any fd) over a unix socket, with one message.
 * \param sock a connected unix socket.
 * \param fd the fd to pass (SCM_RIGHTS); the caller keeps its own copy.
 * \param msg the message sent with it; at least one byte.
 * \param len its length.
 * \return 0, or a negative errno: -EINVAL (bad argument), -EPIPE, -ECONNRESET, -ENOTSOCK,
 *         -EBADF, -EMSGSIZE, -ENOBUFS, -EAGAIN (a non-blocking socket is full), -EINTR.
 */
UFFD_API_EXPORT int uffd_fd_send(int sock, int fd, const void *msg, size_t len);

/**
 * uffd_fd_recv - receive one message and exactly one fd from a unix socket.
 *
 * Never leaks an fd: on every error, each fd that arrived is closed. A stream socket keeps no
 * message boundary: this returns what one recvmsg(2) got (the fd comes with the first byte of
 * the sender's message), and the bytes past @p len stay for the next read; a datagram or
 * seqpacket message longer than @p len is -EMSGSIZE.
 * \param sock a unix socket.
 * \param fd receives the fd (close-on-exec).
 * \param buf receives the message.
 * \param len room in @p buf.
 * \param peer receives the sender's credentials (SO_PEERCRED: the process that connected, or
 *        that made a socketpair); pid 0 and uid/gid -1 where the socket has none. May be NULL.
 * \return the message's length, or a negative errno:
 * - -EINVAL: bad argument.
 * - -EBADMSG: no fd came with the message, or more than one.
 * - -EMSGSIZE: a datagram or seqpacket message, or the control data (more than 16 fds), did
 *   not fit.
 * - -ECONNRESET: the peer closed the connection before sending.
 * - -EAGAIN, -EINTR, -ENOTSOCK, -EBADF: as recvmsg(2) says.
 */
UFFD_API_EXPORT ssize_t uffd_fd_recv(int sock, int *fd, void *buf, size_t len,
				     struct uffd_peer *peer);

/** A source of pages: a file, a buffer, an HTTP server, or your own. Opaque. */
struct uffd_source;

/** One asynchronous read (uffd_source_ops::read_async). */
struct uffd_source_io {
	void *buf;	 /**< where the bytes go */
	size_t len;	 /**< how many */
	uint64_t offset; /**< from where in the source */
	/** Called once, from any thread, when the read is over: 0, or a negative errno. */
	void (*done)(struct uffd_source_io *io, int err);
	void *user; /**< the caller's */
};

/**
 * What a source implements. Every member may be called from several threads at once. `size` is
 * sizeof(struct uffd_source_ops) as the implementer compiled it: later versions add members at
 * the end (a write-back member is planned) and use only what `size` covers.
 */
struct uffd_source_ops {
	size_t size; /**< sizeof(struct uffd_source_ops) */
	/** Read exactly @p len bytes at @p offset into @p buf: 0, or a negative errno (-ENXIO for a
	 *  range past the end: short data is never installed as if whole). Required. */
	int (*read)(void *impl, void *buf, size_t len, uint64_t offset);
	/** Start a read: 0 (io->done runs later) or a negative errno (it never runs). Optional. */
	int (*read_async)(void *impl, struct uffd_source_io *io);
	/** The source's length in bytes, or a negative errno. Optional. */
	int64_t (*length)(void *impl);
	/** Called once by uffd_source_close(). Optional. */
	void (*close)(void *impl);
};

/**
 * uffd_source_new - make a source from your own implementation.
 * \param out receives the source.
 * \param ops its operations (copied; `read` required).
 * \param impl handed to each operation.
 * \return 0, or -EINVAL (NULL @p out or @p ops, no `read`, `size` too small), -ENOMEM.
 */
UFFD_API_EXPORT int uffd_source_new(struct uffd_source **out, const struct uffd_source_ops *ops,
				    void *impl);

/** uffd_source_file(), uffd_source_fd(): read with O_DIRECT (through an aligned buffer). */
#define UFFD_SOURCE_DIRECT 0x1u

/**
 * uffd_source_file - a source that reads a file with pread(2).
 * \param out receives the source.
 * \param path the file.
 * \param flags `UFFD_SOURCE_DIRECT` or 0.
 * \return 0, or a negative errno: -EINVAL (bad argument), or what open(2) returns (-ENOENT,
 *         -EACCES, ...), -ENOMEM.
 */
UFFD_API_EXPORT int uffd_source_file(struct uffd_source **out, const char *path, unsigned flags);

/**
 * uffd_source_fd - a source that reads an open file with pread(2); the fd is duplicated.
 * \param out receives the source.
 * \param fd a readable, seekable fd.
 * \param flags `UFFD_SOURCE_DIRECT` or 0.
 * \return 0, or a negative errno: -EINVAL (bad argument), -EBADF, -EMFILE, -ENOMEM.
 */
UFFD_API_EXPORT int uffd_source_fd(struct uffd_source **out, int fd, unsigned flags);

/**
 * uffd_source_memory - a source over a buffer of this process (not copied: keep it alive).
 * \param out receives the source.
 * \param buf the bytes.
 * \param len their length.
 * \return 0, or -EINVAL (NULL argument), -ENOMEM.
 */
UFFD_API_EXPORT int uffd_source_memory(struct uffd_source **out, const void *buf, size_t len);

/**
 * uffd_source_read - read from a source, synchronously.
 * \param s the source.
 * \param buf where the bytes go.
 * \param len how many.
 * \param offset from where.
 * \return 0, or a negative errno: -EINVAL (bad argument), -ENXIO (past the end), or the
 *         source's own (-EIO, -ETIMEDOUT, ...).
 */
UFFD_API_EXPORT int uffd_source_read(struct uffd_source *s, void *buf, size_t len, uint64_t offset);

/**
 * uffd_source_length - a source's length.
 * \param s the source.
 * \return the length in bytes, or -EINVAL (NULL), -EOPNOTSUPP (the source does not know), or
 *         the source's own error.
 */
UFFD_API_EXPORT int64_t uffd_source_length(struct uffd_source *s);

/**
 * uffd_source_close - close a source (and its implementation's state). NULL is a no-op.
 * Registrations served from it must be gone first (uffd_close() their context). An asynchronous
 * source's `close` must finish every read in flight (call its `done`) before it returns.
 * \param s the source.
 */
UFFD_API_EXPORT void uffd_source_close(struct uffd_source *s);

/**
 * A recorded first-touch order: runs of pages in the order a run first touched them. Saved
 * and loaded as text (version 1):
 *
 *     uffd-order 1
 *     # comments and blank lines anywhere
 *     <offset> <length> [<region>]
 *
 * one line per run; offset and length in bytes (decimal or 0x-hex), page-aligned. Offsets are
 * positions in the source (restorers); with the region column (uffd-trace `--order`, which has
 * no source) they count from the start of the named region. Opaque.
 */
struct uffd_order;

/**
 * uffd_order_new - an empty order.
 * \param out receives it.
 * \return 0, -EINVAL (NULL), -ENOMEM.
 */
UFFD_API_EXPORT int uffd_order_new(struct uffd_order **out);

/**
 * uffd_order_add - append a run; it merges with the last one when contiguous in one region.
 * Safe from several threads at once.
 * \param o the order.
 * \param offset where the run starts.
 * \param len its length (> 0).
 * \param region its region's name (no white space), or NULL.
 * \return 0, or -EINVAL (bad argument), -ENOMEM.
 */
UFFD_API_EXPORT int uffd_order_add(struct uffd_order *o, uint64_t offset, uint64_t len,
				   const char *region);

/**
 * uffd_order_save - write an order as text.
 * \param o the order.
 * \param fd where to write.
 * \return 0, or -EINVAL, or write(2)'s errno.
 */
UFFD_API_EXPORT int uffd_order_save(struct uffd_order *o, int fd);

/**
 * uffd_order_load - read an order written by uffd_order_save() or uffd-trace `--order`.
 * \param out receives it.
 * \param fd where to read.
 * \return 0, or a negative errno: -EINVAL (NULL), -EBADMSG (not the format, or a bad line),
 *         -ENOMEM, or read(2)'s errno.
 */
UFFD_API_EXPORT int uffd_order_load(struct uffd_order **out, int fd);

/**
 * uffd_order_count - how many runs an order holds.
 * \param o the order.
 * \return the count, or -EINVAL for NULL.
 */
UFFD_API_EXPORT long uffd_order_count(const struct uffd_order *o);

/**
 * uffd_order_get - one run of an order.
 * \param o the order.
 * \param i its index, 0 .. uffd_order_count() - 1.
 * \param offset receives its start.
 * \param len receives its length.
 * \param region receives its region's name, or NULL; may itself be NULL.
 * \return 0, or -EINVAL (bad argument), -ENOENT (@p i out of range).
 */
UFFD_API_EXPORT int uffd_order_get(const struct uffd_order *o, long i, uint64_t *offset,
				   uint64_t *len, const char **region);

/**
 * uffd_order_save_pages - write the bytes of an order's runs back to back, read from a source:
 * the compacted working set, read back sequentially by uffd_prefetch().
 * \param o the order (offsets into @p src; no region names).
 * \param src where the bytes are.
 * \param fd where to write them.
 * \return 0, or a negative errno: -EINVAL (bad argument, or an order with regions), the
 *         source's errors, write(2)'s.
 */
UFFD_API_EXPORT int uffd_order_save_pages(struct uffd_order *o, struct uffd_source *src, int fd);

/**
 * uffd_order_free - free an order. NULL is a no-op.
 * \param o the order.
 */
UFFD_API_EXPORT void uffd_order_free(struct uffd_order *o);

/** uffd_serve_config::discard: a discarded page (REMOVE) reads as zero, as anonymous memory does. */
#define UFFD_DISCARD_ZERO 0u
/** uffd_serve_config::discard: a discarded page is served from the source again (file-like). */
#define UFFD_DISCARD_SOURCE 1u
/** uffd_serve_config::flags: the range is registered already (an adopted fd): uffd_range_add(). */
#define UFFD_SERVE_MAP_ONLY 0x1u
/** The largest uffd_serve_config::ahead. */
#define UFFD_SERVE_MAX_AHEAD 64u

/** How uffd_serve() serves a registration. Zero-initialise; `source` is required. */
struct uffd_serve_config {
	struct uffd_source *source; /**< where the pages come from */
	uint64_t offset; /**< the source offset of the registration's first byte; page-aligned */
	/** Bytes fetched per fault, an aligned chunk around it: a power of two from the page size
	 *  up to 64 MiB; 0 means one page. */
	uint64_t chunk;
	uint64_t page_size; /**< 0: base pages; the huge page size for hugetlbfs memory */
	uint32_t discard;   /**< `UFFD_DISCARD_*`: what a discarded page reads as afterwards */
	uint32_t flags;	    /**< `UFFD_SERVE_*` */
	/** `UFFDIO_REGISTER_MODE_MISSING`, with `_WP` or not (write-protect faults get the
	 *  default handler); 0 means MISSING */
	uint64_t modes;
	/** Each on-demand first touch is appended here (source offsets), or NULL: the pages of
	 *  the chunk that fault fetched, so a chunk of one page records exactly what was touched. */
	struct uffd_order *record;
	/** SHA-256 (32 bytes) of each `manifest_chunk` bytes of the source, in order, or NULL. A
	 *  fetched chunk that does not match is never installed: its pages are poisoned. */
	const uint8_t *manifest;
	uint64_t manifest_chunk; /**< the manifest's chunk size */
	uint32_t max_inflight;	 /**< fetches in flight per context (async sources); 0 means 64 */
	/** Chunks fetched ahead: after each fault that fetches its chunk, the next `ahead`
	 *  chunks of its piece that still miss a page are fetched too, in parallel, from sources
	 *  with `read_async` (others ignore it), within half of `max_inflight`. Up to
	 *  `UFFD_SERVE_MAX_AHEAD`; 0 (the default) fetches on demand only. Not with
	 *  `record`. */
	uint32_t ahead;
	/** Called after a fetch failed for good or a chunk failed its check (err -EBADMSG), once
	 *  its pages were poisoned (touching them raises SIGBUS); without UFFD_FEATURE_POISON,
	 *  before the fault callback returns the error. @p offset and @p len are the source bytes
	 *  the fetch was to install. May be NULL. */
	void (*on_error)(struct uffd *u, uint64_t offset, uint64_t len, int err, void *arg);
	void *arg;	      /**< for on_error */
	uint64_t reserved[6]; /**< zero */
};

/**
 * uffd_serve - register a range and serve its faults from a source.
 *
 * Sets the context's fault and remove callbacks to uffd_serve_pagefault() and
 * uffd_serve_remove(); a program with callbacks of its own calls those from its own. Several
 * registrations of one context may be served, from different sources.
 * \param u the context.
 * \param addr page-aligned start.
 * \param len its length, a multiple of the page size.
 * \param cfg how to serve it.
 * \return 0, or a negative errno:
 * - -EINVAL: bad argument, a reserved field set, `ahead` above UFFD_SERVE_MAX_AHEAD or
 *   together with `record` (pages fetched ahead are never faulted on: the order would miss them),
 *   @p addr, @p len or `offset` not aligned to the
 *   page size, a chunk or manifest chunk that is no power of two or out of range, modes without
 *   MISSING or with MINOR, a manifest for a source that does not know its length.
 * - -EOPNOTSUPP: `UFFD_DISCARD_ZERO` on a context without `UFFD_FEATURE_EVENT_REMOVE` (the
 *   discards would go unseen and read the source's bytes).
 * - -ENXIO: the registration reaches past the source's end (its last page must hold at least
 *   one byte of it; the rest of that page reads zero).
 * - uffd_register()'s and uffd_range_add()'s errors, the source's length errors, -ENOMEM.
 */
UFFD_API_EXPORT int uffd_serve(struct uffd *u, void *addr, size_t len,
			       const struct uffd_serve_config *cfg);

/**
 * uffd_serve_pagefault - the fault callback of a served registration.
 * \param u the context.
 * \param pf the fault.
 * \param arg unused.
 * Write-protect faults go to uffd_default_pagefault().
 * A fault whose chunk is being fetched for another fault joins that fetch and returns 0 at
 * once: the fetch's copy (or a wake when it ends) finishes it.
 * \return as a fault callback: 0, UFFD_FAULT_DEFERRED (an asynchronous source), or a negative
 *         errno: -EINVAL (NULL), -ENOENT (a fault outside every served registration), -EEXIST
 *         (the page was present already: woken), -ENOMEM (no fetch buffer), the resolving
 *         calls' errors, or the source's error when the page could not be poisoned.
 */
UFFD_API_EXPORT int uffd_serve_pagefault(struct uffd *u, const struct uffd_pagefault *pf,
					 void *arg);

/**
 * uffd_serve_remove - the REMOVE callback of served registrations: records discarded pages.
 *
 * Through uffd_dispatch() and the monitor the library has marked them already, when the REMOVE
 * was read (so that a chunk in flight cannot refill them), and this call only repeats it; it
 * matters to programs that read the fd themselves.
 * \param u the context.
 * \param span what was discarded.
 * \param arg unused.
 * \return 0.
 */
UFFD_API_EXPORT int uffd_serve_remove(struct uffd *u, const struct uffd_span *span, void *arg);

/** Counters of the registrations of a context served from sources (uffd_serve_get_stats()). */
struct uffd_serve_stats {
	uint64_t faults;	  /**< faults served on demand */
	uint64_t fetches;	  /**< reads from sources */
	uint64_t bytes_fetched;	  /**< bytes read from sources */
	uint64_t pages_installed; /**< pages copied in */
	uint64_t pages_zeroed;	  /**< discarded pages served as zero */
	uint64_t eexist_skipped;  /**< pages of a chunk found present already, skipped */
	uint64_t prefetched;	  /**< pages installed by uffd_prefetch() */
	uint64_t poisoned;	  /**< pages poisoned after a failed or bad fetch */
	uint64_t errors;	  /**< fetches that failed for good */
	/** faults that fetched nothing of their own: their chunk was being fetched for another
	 *  fault (they were finished by that fetch), or it had just been installed */
	uint64_t joined;
	uint64_t ahead;	       /**< fetches started ahead of a fault (`ahead` of the config) */
	uint64_t reserved[21]; /**< zero; later counters go here */
};

/**
 * uffd_serve_get_stats - the counters of every served registration of a context, summed.
 * \param u the context.
 * \param out receives them.
 * \return 0, or -EINVAL for NULL.
 */
UFFD_API_EXPORT int uffd_serve_get_stats(struct uffd *u, struct uffd_serve_stats *out);

/**
 * uffd_prefetch - install a recorded working set before it is touched.
 *
 * The pages @p order names are read in order, in bulk (from @p compact when not NULL: the
 * order's pages back to back, as uffd_order_save_pages() wrote them, read sequentially; else
 * from the registration's source) and installed with DONTWAKE, skipping pages already present,
 * with one wake at the end. Faults meanwhile are served on demand by the dispatching threads
 * and jump the queue. It runs in the calling thread: run it in one of its own.
 * \param u the context.
 * \param addr the start of a registration served with uffd_serve().
 * \param order the working set (source offsets).
 * \param compact its pages back to back, or NULL.
 * \return the pages installed, or a negative errno: -EINVAL (bad argument, @p addr not the
 *         start of a served registration, an order with region names, @p compact with a
 *         manifest, which covers the source only), -ENOMEM, the source's errors, the resolving
 *         calls' (-ESRCH: the process is gone). Runs of a manifest-checked source that do not
 *         match are left to the faults, which poison them.
 */
UFFD_API_EXPORT long uffd_prefetch(struct uffd *u, void *addr, const struct uffd_order *order,
				   struct uffd_source *compact);

/** @} */

/**
 * @defgroup introspection Introspection
 * @brief Counters and the version.
 * @{
 */

/**
 * Exact counters of one context, since it was made.
 *
 * From 0.2 on the struct has a fixed size of 256 bytes, 32 counters (a static assertion holds
 * it there): counters added later take their room from `reserved`, which uffd_get_stats() fills
 * with zeros until then.
 */
struct uffd_stats {
	uint64_t reads;		 /**< read() calls that returned messages */
	uint64_t messages;	 /**< messages read */
	uint64_t faults;	 /**< PAGEFAULT messages read */
	uint64_t faults_woken;	 /**< faults woken instead of resolved (range gone, EEXIST, ...) */
	uint64_t eagain_retries; /**< fault redeliveries after -EAGAIN */
	uint64_t forks;		 /**< FORK messages read */
	uint64_t remaps;	 /**< REMAP messages read */
	uint64_t removes;	 /**< REMOVE messages read */
	uint64_t unmaps;	 /**< UNMAP messages read */
	uint64_t unknown;	 /**< messages of an unknown kind */
	uint64_t reserved[22];	 /**< room for later counters; zero */
};

/** @cond INTERNAL */
UFFD_STATIC_ASSERT(sizeof(struct uffd_stats) == 256, "struct uffd_stats is 256 bytes");
/** @endcond */

/**
 * uffd_get_stats - read a context's counters.
 * \param u the context.
 * \param out receives the counters; its `reserved` space is zeroed.
 * \return 0, or -EINVAL for NULL.
 */
UFFD_API_EXPORT int uffd_get_stats(const struct uffd *u, struct uffd_stats *out);

/**
 * uffd_version - the library's version.
 * \return "MAJOR.MINOR.PATCH"; never NULL.
 */
UFFD_API_EXPORT const char *uffd_version(void);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* UFFD_H */
