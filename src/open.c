/* SPDX-License-Identifier: MIT */
/* Opening a userfaultfd: kernel probe, doors, feature negotiation, adoption, names, strerror. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* The kernel marks a context whose UFFDIO_API is done with this internal bit; /proc shows it. */
#define KERNEL_FEATURE_INITIALIZED ((uint64_t)1 << 31)

/* ---- the doors ---- */

static bool denied(int err)
{
	return err == -EPERM || err == -EACCES;
}

/*
 * Create a userfaultfd through the doors @flags allow: the syscall first (it needs no file
 * permission), then /dev/userfaultfd (it needs no capability or sysctl). A door that refuses this
 * caller falls through to the next; a resource error (EMFILE, ENOMEM) ends the search at once.
 * Returns the fd, or -EPERM when some door exists but none lets this caller in, or -ENOSYS when
 * there is no door at all.
 */
static int make_fd(unsigned flags, int kflags)
{
	bool refused = false;
	int fd;

	if (!(flags & UFFD_OPEN_DEVICE_ONLY)) {
		fd = uffd_sys_userfaultfd(kflags);
		if (fd >= 0)
			return fd;
		if (denied(fd))
			refused = true;
		else if (fd != -ENOSYS)
			return fd;
	}
	if (!(flags & UFFD_OPEN_SYSCALL_ONLY)) {
		fd = uffd_sys_dev_new(kflags);
		if (fd >= 0)
			return fd;
		if (denied(fd))
			refused = true;
		/* No device node (ENOENT, ENODEV, ENXIO) or an ioctl it lacks (ENOTTY, pre-6.1). */
		else if (fd != -ENOENT && fd != -ENODEV && fd != -ENXIO && fd != -ENOTTY &&
			 fd != -ENOSYS)
			return fd;
	}
	return refused ? -EPERM : -ENOSYS;
}

/*
 * Kernels before 5.11 do not know UFFD_USER_MODE_ONLY and answer EINVAL; they also let every user
 * trap kernel faults (vm.unprivileged_userfaultfd defaulted to 1), so there the flag is dropped
 * and the context records that it traps kernel faults too.
 */
static int make_fd_user(unsigned *flags)
{
	int base = O_NONBLOCK | O_CLOEXEC;
	int fd;

	if (*flags & UFFD_OPEN_KERNEL_FAULTS)
		return make_fd(*flags, base);
	fd = make_fd(*flags, base | UFFD_USER_MODE_ONLY);
	if (fd == -EINVAL) {
		fd = make_fd(*flags, base);
		if (fd >= 0)
			*flags |= UFFD_OPEN_KERNEL_FAULTS;
	}
	return fd;
}

/* ---- the probe ---- */

static uint64_t ioctls_for(uint64_t features)
{
	uint64_t io = (1ULL << _UFFDIO_API) | (1ULL << _UFFDIO_REGISTER) |
		      (1ULL << _UFFDIO_UNREGISTER) | (1ULL << _UFFDIO_WAKE) |
		      (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE);

	if (features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)
		io |= 1ULL << _UFFDIO_WRITEPROTECT;
	if (features & (UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS))
		io |= 1ULL << _UFFDIO_CONTINUE;
	if (features & UFFD_FEATURE_POISON)
		io |= 1ULL << _UFFDIO_POISON;
	if (features & UFFD_FEATURE_MOVE)
		io |= 1ULL << _UFFDIO_MOVE;
	return io;
}

/*
 * No lock: a fork() while another thread held one left the child unable to probe, and so to open
 * a context (review finding 12). Threads that race to the first probe each ask the kernel and
 * store the same answer; the release store of probe_done publishes it.
 */
static _Atomic bool probe_done;
static _Atomic uint64_t probe_features, probe_ioctls;

static int probe_kernel(uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	unsigned flags = 0;
	int fd = make_fd_user(&flags);
	int ret;

	if (fd < 0)
		return fd;
	ret = uffd_sys_ioctl(fd, UFFDIO_API, &api);
	uffd_sys_close(fd);
	if (ret < 0)
		return ret;
	*features = api.features;
	return 0;
}

/*
 * Only a success is cached: a failure may be passing (EMFILE), and an EPERM caller that is then
 * given access should not keep seeing the old answer.
 */
int uffd_probe_cached(uint64_t *features, uint64_t *ioctls)
{
	uint64_t f;
	int ret = 0;

	if (!atomic_load_explicit(&probe_done, memory_order_acquire)) {
		ret = probe_kernel(&f);
		if (ret < 0)
			return ret;
		atomic_store_explicit(&probe_features, f, memory_order_relaxed);
		atomic_store_explicit(&probe_ioctls, ioctls_for(f), memory_order_relaxed);
		atomic_store_explicit(&probe_done, true, memory_order_release);
	}
	if (features)
		*features = atomic_load_explicit(&probe_features, memory_order_relaxed);
	if (ioctls)
		*ioctls = atomic_load_explicit(&probe_ioctls, memory_order_relaxed);
	return 0;
}

int uffd_probe(uint64_t *features, uint64_t *ioctls)
{
	return uffd_probe_cached(features, ioctls);
}

/* ---- negotiation ---- */

/*
 * One UFFDIO_API asking for required | (optional & offered). EVENT_FORK is the one feature the
 * kernel refuses by privilege (CAP_SYS_PTRACE) rather than by support: when it was only optional,
 * it is dropped and the handshake tried again, which a failed UFFDIO_API allows.
 * On success *granted is what the context really has: the kernel writes back every feature it
 * supports, so the answer is computed here, plus the WP_UNPOPULATED the kernel adds to WP_ASYNC.
 */
static int negotiate(int fd, const struct uffd_config *cfg, uint64_t *granted)
{
	uint64_t required = cfg ? cfg->required : 0;
	uint64_t optional = cfg ? cfg->optional : 0;
	uint64_t offered, want;
	int ret;

	ret = uffd_probe_cached(&offered, NULL);
	if (ret < 0)
		return ret;
	if (required & ~offered)
		return -EOPNOTSUPP;
	want = required | (optional & offered);
	for (;;) {
		struct uffdio_api api = { .api = UFFD_API, .features = want };

		ret = uffd_sys_ioctl(fd, UFFDIO_API, &api);
		if (ret == 0)
			break;
		if (ret == -EPERM && (want & UFFD_FEATURE_EVENT_FORK) &&
		    !(required & UFFD_FEATURE_EVENT_FORK)) {
			want &= ~(uint64_t)UFFD_FEATURE_EVENT_FORK;
			continue;
		}
		return ret;
	}
	if (want & UFFD_FEATURE_WP_ASYNC)
		want |= UFFD_FEATURE_WP_UNPOPULATED;
	*granted = want;
	return 0;
}

/* Validation shared by open and adopt; -EOPNOTSUPP checks need the probe and come later. */
static int check_args(struct uffd **out, const struct uffd_config *cfg)
{
	if (!out)
		return -EINVAL;
	return uffd_cfg_check(cfg);
}

int uffd_open(struct uffd **out, const struct uffd_config *cfg)
{
	unsigned flags = cfg ? cfg->flags : 0;
	uint64_t offered, granted = 0;
	struct uffd *u;
	int fd, ret;

	ret = check_args(out, cfg);
	if (ret < 0)
		return ret;
	/* Before any fd exists, so that a missing feature costs nothing. */
	ret = uffd_probe_cached(&offered, NULL);
	if (ret < 0)
		return ret;
	if (cfg && (cfg->required & ~offered))
		return -EOPNOTSUPP;

	fd = make_fd_user(&flags);
	if (fd < 0)
		return fd;
	ret = negotiate(fd, cfg, &granted);
	if (ret == 0)
		ret = uffd_ctx_new(fd, granted, cfg, &u);
	if (ret != 0) {
		uffd_sys_close(fd);
		return ret < 0 ? ret : -EINVAL;
	}
	u->flags = flags;
	/* The fd is bound for life to the mm of the process that made it: this one. */
	u->pid = getpid();
	*out = u;
	return 0;
}

/* ---- adoption ---- */

/*
 * Read a small /proc file into @buf (NUL-terminated); bytes read or -errno. Raw system calls, not
 * glibc's open/read/close, which are cancellation points (no libuffd call may be one, uffd.h).
 */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
	size_t n = 0;
	int fd = uffd_sys_open(path, O_RDONLY);

	if (fd < 0)
		return fd;
	while (n + 1 < size) {
		ssize_t r = uffd_syscall3(SYS_read, fd, (long)(buf + n), (long)(size - 1 - n));

		if (r == -EINTR)
			continue;
		if (r < 0) {
			uffd_sys_close(fd);
			return r;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	uffd_sys_close(fd);
	buf[n] = '\0';
	return (ssize_t)n;
}

/*
 * What /proc says about @fd: it must be a userfaultfd (its link names the anon inode), and its
 * fdinfo has "API:\t<api>:<features>:<ioctls>", where features carries the kernel's initialised
 * bit once the handshake is done.
 */
static int fd_state(int fd, bool *initialised, uint64_t *features)
{
	static const char want[] = "anon_inode:[userfaultfd]";
	char path[64], buf[1024];
	const char *api;
	char *end;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return -EINVAL;
	buf[n] = '\0';
	if (strcmp(buf, want) != 0)
		return -EINVAL;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	n = read_small(path, buf, sizeof(buf));
	if (n < 0)
		return -EINVAL;
	api = strstr(buf, "API:\t");
	if (!api)
		return -EINVAL;
	api += 5;
	strtoull(api, &end, 16); /* the API version, always 0xaa */
	if (end == api || *end != ':')
		return -EINVAL;
	api = end + 1;
	*features = strtoull(api, &end, 16);
	if (end == api || *end != ':')
		return -EINVAL;
	*initialised = *features & KERNEL_FEATURE_INITIALIZED;
	*features &= ~KERNEL_FEATURE_INITIALIZED;
	return 0;
}

/*
 * The context is made first so that nothing irreversible (the handshake, the fd's flags) happens
 * before the last step that can fail: on failure the fd is as it was, except that no kernel call
 * can undo a handshake, and none is done unless everything else already succeeded.
 */
int uffd_adopt(struct uffd **out, int fd, const struct uffd_config *cfg)
{
	uint64_t features = 0;
	bool initialised = false;
	struct uffd *u;
	int fl, fdfl, ret;

	ret = check_args(out, cfg);
	if (ret < 0)
		return ret;
	if (fd < 0)
		return -EINVAL;
	fl = fcntl(fd, F_GETFL);
	fdfl = fcntl(fd, F_GETFD);
	if (fl < 0 || fdfl < 0)
		return -EBADF;
	ret = fd_state(fd, &initialised, &features);
	if (ret < 0)
		return ret;
	if (initialised && cfg && (cfg->required & ~features))
		return -EOPNOTSUPP;

	ret = uffd_ctx_new(fd, 0, cfg, &u);
	if (ret < 0)
		return ret;
	if (!initialised) {
		ret = negotiate(fd, cfg, &features);
		if (ret < 0) {
			uffd_ctx_free(u);
			return ret;
		}
		u->flags = cfg ? cfg->flags : 0;
	} else {
		/* Made elsewhere with flags this process cannot learn. */
		u->flags = 0;
	}
	if (!(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	if (!(fdfl & FD_CLOEXEC))
		fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC);
	u->features = features;
	/* Which process's mm the fd is bound to cannot be learned from the fd. */
	u->pid = 0;
	*out = u;
	return 0;
}

/* ---- names ---- */

struct feature_info {
	const char *name;
	const char *since;
};

/*
 * Indexed by bit number. "since" is the first release whose kernel offers the bit in UFFDIO_API:
 * PAGEFAULT_FLAG_WP was defined in 4.11 but only offered (and usable) from 5.7.
 */
static const struct feature_info features_table[] = {
	{ "PAGEFAULT_FLAG_WP", "5.7" },
	{ "EVENT_FORK", "4.11" },
	{ "EVENT_REMAP", "4.11" },
	{ "EVENT_REMOVE", "4.11" },
	{ "MISSING_HUGETLBFS", "4.11" },
	{ "MISSING_SHMEM", "4.11" },
	{ "EVENT_UNMAP", "4.11" },
	{ "SIGBUS", "4.14" },
	{ "THREAD_ID", "4.14" },
	{ "MINOR_HUGETLBFS", "5.13" },
	{ "MINOR_SHMEM", "5.14" },
	{ "EXACT_ADDRESS", "5.18" },
	{ "WP_HUGETLBFS_SHMEM", "5.19" },
	{ "WP_UNPOPULATED", "6.4" },
	{ "POISON", "6.6" },
	{ "WP_ASYNC", "6.7" },
	{ "MOVE", "6.8" },
};

static const struct feature_info *feature_lookup(uint64_t bit)
{
	unsigned i;

	if (bit == 0 || (bit & (bit - 1)))
		return NULL;
	i = (unsigned)__builtin_ctzll(bit);
	if (i >= sizeof(features_table) / sizeof(features_table[0]))
		return NULL;
	return &features_table[i];
}

const char *uffd_feature_name(uint64_t bit)
{
	const struct feature_info *f = feature_lookup(bit);

	return f ? f->name : NULL;
}

const char *uffd_feature_since(uint64_t bit)
{
	const struct feature_info *f = feature_lookup(bit);

	return f ? f->since : NULL;
}

const char *uffd_ioctl_name(unsigned nr)
{
	static const char *const names[] = {
		[_UFFDIO_REGISTER] = "REGISTER",
		[_UFFDIO_UNREGISTER] = "UNREGISTER",
		[_UFFDIO_WAKE] = "WAKE",
		[_UFFDIO_COPY] = "COPY",
		[_UFFDIO_ZEROPAGE] = "ZEROPAGE",
		[_UFFDIO_MOVE] = "MOVE",
		[_UFFDIO_WRITEPROTECT] = "WRITEPROTECT",
		[_UFFDIO_CONTINUE] = "CONTINUE",
		[_UFFDIO_POISON] = "POISON",
	};

	if (nr == _UFFDIO_API)
		return "API";
	if (nr < sizeof(names) / sizeof(names[0]))
		return names[nr];
	return NULL;
}

const char *uffd_strerror(int err)
{
	/* INT_MIN has no positive counterpart; no errno is that large anyway. */
	if (err == INT_MIN)
		err = INT_MAX;
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return "Success.";
	case EPERM:
		return "Not permitted to open this kind of userfaultfd: run as root or with "
		       "CAP_SYS_PTRACE, set vm.unprivileged_userfaultfd=1, give this user access to "
		       "/dev/userfaultfd, or drop UFFD_OPEN_KERNEL_FAULTS (user-mode-only "
		       "userfaultfds need no privilege); EVENT_FORK also needs CAP_SYS_PTRACE.";
	case EACCES:
		return "Access denied: to /dev/userfaultfd (give this user read-write access to it, "
		       "or use the userfaultfd(2) syscall instead), or by an HTTP source's server "
		       "(401/403: check the token or the presigned URL).";
	case EOPNOTSUPP:
		return "The running kernel (or this context) lacks a required userfaultfd feature; "
		       "see uffd_probe() for what the kernel offers.";
	case ENOSYS:
		return "This kernel has no userfaultfd (CONFIG_USERFAULTFD is off) or the chosen "
		       "door (syscall or /dev/userfaultfd) does not exist.";
	case EINVAL:
		return "Invalid argument: a NULL handle, an unaligned address, a zero, unaligned or "
		       "overflowing length, unknown flag or mode bits, or a mode the range was not "
		       "registered with.";
	case EBADF:
		return "Not an open file descriptor.";
	case EEXIST:
		return "A page is already present at the destination.";
	case ENOENT:
		return "No such thing: no mapping there or a range not registered with this "
		       "userfaultfd, a file that does not exist, or an HTTP source's 404.";
	case EAGAIN:
		return "A layout change is pending: read and handle the pending events, then retry.";
	case ESRCH:
		return "The process that owns the userfaultfd has exited.";
	case EFAULT:
		return "The source buffer cannot be read.";
	case EBUSY:
		return "Busy: another userfaultfd has registered the range, the context already "
		       "belongs to a monitor, the monitor is already running, or a page to move is "
		       "pinned.";
	case ENOSPC:
		return "The limit of epoll watches is reached (fs.epoll.max_user_watches): raise it, "
		       "or serve fewer contexts; the FORK event that needed a watch is kept.";
	case EDEADLK:
		return "A callback called uffd_dispatch() or uffd_monitor_run() on the context or "
		       "monitor that is calling it: that would wait for itself.";
	case ECHILD:
		return "Nobody serves this fork child: its context was closed and the child process "
		       "runs unmonitored.";
	case ENOMEM:
		return "Out of memory (or the process that owns the userfaultfd has exited).";
	case EMFILE:
		return "This process has too many open files.";
	case ENFILE:
		return "The system has too many open files.";
	case EINTR:
		return "Interrupted by a signal before anything was done.";
	case EPROTO:
		return "A protocol error: a malformed userfaultfd message from the kernel, or an "
		       "HTTP server that answered a range request with something else.";
	case ENOTTY:
		return "Not a userfaultfd, or an ioctl this kernel lacks.";
	case ENXIO:
		return "Past the end of the page source: the range asked for (or a registration "
		       "served from it) reaches beyond its last byte.";
	case EBADMSG:
		return "A malformed message: a unix-socket message that did not carry exactly one fd, "
		       "an order file that is not the uffd-order format, or a fetched chunk that does "
		       "not match its SHA-256 in the manifest.";
	case EMSGSIZE:
		return "The message (or its fds) did not fit in the buffer given.";
	case ECONNRESET:
		return "The peer closed the connection.";
	case EPIPE:
		return "The peer closed the connection: nothing more can be sent on it.";
	case ENOTSOCK:
		return "The fd is not a socket: fd passing needs a unix socket.";
	case ENOBUFS:
		return "The kernel has no buffer space for the message now.";
	case EIO:
		return "The page source failed to read (an I/O error).";
	case ETIMEDOUT:
		return "The page source did not answer in time, after its retries.";
	case ECONNREFUSED:
		return "The page source's server refused the connection (is it running?), after "
		       "its retries.";
	case EHOSTUNREACH:
		return "The page source's server cannot be reached, after its retries.";
	case EKEYREJECTED:
		return "The HTTPS server's certificate did not verify: give the CA that signed it "
		       "(ca_file).";
	case ESTALE:
		return "The page source changed under the restore: its length is not what it was.";
	case ECANCELED:
		return "The read was cancelled: its source was closed while it waited.";
	case EPROTONOSUPPORT:
		return "The URL's scheme is not supported: use http:// or https://.";
	default:
		return "An unexpected error from the kernel or the library.";
	}
}

const char *uffd_version(void)
{
	return UFFD_VERSION_STRING;
}
