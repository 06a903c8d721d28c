/* SPDX-License-Identifier: MIT */
/*
 * libuffd-http: a page source over HTTP(S) range requests, with libcurl's multi interface.
 *
 * One background thread per source owns the CURLM handle and a fixed set of easy handles, one
 * per request in flight: libcurl's multi interface is not to be used from several threads, so
 * readers never touch it; they queue a request under the source's lock and wake the thread
 * with curl_multi_wakeup(). The thread starts queued requests on free easy handles, drives the
 * transfers, checks each answer against what was asked, retries with back-off or completes.
 * The multi handle's connection cache keeps connections alive between requests.
 *
 * A large read may be split when it starts (uffd_http_config::split_size): one read is one
 * request on one connection, and where one connection's stream is slower than the path, a read
 * of at least twice split_size bytes goes out as parts of at least split_size bytes, one per idle
 * connection. The parts are requests of their own (retried on their own); the read completes
 * when the last part does, with the first error any part had.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http_internal.h"
#include "uffd_http.h"

#define DEFAULT_CONNECTIONS 8u
#define DEFAULT_TIMEOUT_MS 10000u
#define DEFAULT_CONNECT_TIMEOUT_MS 2000u
#define DEFAULT_RETRIES 3u
#define KNOWN_FLAGS (UFFD_HTTP_NO_RETRY | UFFD_HTTP_STRICT_RANGE)
/* An error page is read to its end so that its connection can be reused; a longer one is not
 * worth the bytes, and the connection is dropped instead. */
#define ERROR_BODY_MAX (64u << 10)
/* The thread wakes at least this often even when libcurl asks for no timeout. */
#define IDLE_POLL_MS 1000
/* libcurl's receive buffer per connection (its default is 16 KiB): fewer recv() calls and write
 * callbacks per large read; about a third less CPU time for 4 MiB reads from nginx on 127.0.0.1
 * (bench/README.md, REAP's experiment). */
#define RECV_BUFFER (256L << 10)
/* The parts of a split read are a multiple of this long (but the last); the least split_size. */
#define PART_ALIGN 4096u

struct http;

struct req {
	struct req *next;
	struct http *h;
	void *buf;
	size_t len;
	uint64_t offset;
	bool length_query; /* Range 0-0, to learn the image's length */
	char one_byte;	   /* where a length query's byte goes */

	/* Asynchronous: io->done is called and the request freed. Synchronous: the reader waits
	 * on cond (with the source's lock) until finished, and owns the request (its stack). */
	struct uffd_source_io *io;
	pthread_cond_t cond;
	bool finished;
	int err; /* a split read's: the first error of its parts */

	/* A part of a split read (allocated, freed when it finishes), or NULL. */
	struct req *parent;
	unsigned parts_left; /* a split read's parts not finished yet */

	unsigned attempt; /* retries made so far */
	uint64_t due_ms;  /* when a retry may start */

	/* What the current attempt's answer said. */
	CURL *easy;
	unsigned slot; /* the index of easy */
	bool have_cr;  /* a Content-Range header was seen */
	bool cr_star;  /* it was "bytes * /total" (416) */
	uint64_t cr_start, cr_end, cr_total;
	long status; /* read when the body starts */
	bool body_started;
	size_t got;	   /* bytes of the asked range written to buf */
	uint64_t body_pos; /* bytes of the body seen */
	int verdict;	   /* the write callback's decision: an error, or 0 with abort_ok */
	bool verdict_set;
	bool abort_ok;	/* a length query learnt the length and dropped the body */
	int64_t length; /* what a length query learnt */
};

struct http {
	pthread_mutex_t lock;
	pthread_cond_t room; /* the queue has room again, or the source closes */
	pthread_t thread;
	bool stop;

	CURLM *multi;
	CURL **easies;	       /* `connections` of them */
	struct req **slot_req; /* the request each one carries, or NULL */
	unsigned *free_slots;  /* indices of the idle ones */
	unsigned nfree;

	struct req *queue_head, *queue_tail; /* waiting for an easy handle */
	unsigned nqueued;
	struct req *retry; /* waiting for their back-off to pass (unordered) */

	int64_t length; /* -1 until known */

	char *url;
	char *ca_file;
	struct curl_slist *headers;
	unsigned connections, timeout_ms, connect_timeout_ms, retries, flags;
	uint64_t split_size; /* 0: never split */

	struct uffd_http_stats stats;
	struct uffd_source *src; /* for uffd_http_get_stats(): see the registry below */
	struct http *reg_next;
};

/* ---- the registry: which sources are ours, for uffd_http_get_stats() ---- */

/* uffd.h's source is opaque and has no way back to its implementation: a source is looked up
 * here by pointer. A handful of sources per process at most, so a list will do. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct http *registry;

static void registry_add(struct http *h)
{
	pthread_mutex_lock(&registry_lock);
	h->reg_next = registry;
	registry = h;
	pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(struct http *h)
{
	pthread_mutex_lock(&registry_lock);
	for (struct http **p = &registry; *p; p = &(*p)->reg_next) {
		if (*p == h) {
			*p = h->reg_next;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);
}

void *uffd_http__impl_of(struct uffd_source *s)
{
	struct http *h;

	pthread_mutex_lock(&registry_lock);
	for (h = registry; h; h = h->reg_next)
		if (h->src == s)
			break;
	pthread_mutex_unlock(&registry_lock);
	return h;
}

/* ---- helpers ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool on_thread(struct http *h)
{
	return pthread_equal(pthread_self(), h->thread);
}

static uint64_t backoff_ms(unsigned retry)
{
	uint64_t ms = UFFD_HTTP_BACKOFF_MS;

	for (unsigned i = 1; i < retry && ms < UFFD_HTTP_BACKOFF_MAX_MS; i++)
		ms *= 2;
	return ms < UFFD_HTTP_BACKOFF_MAX_MS ? ms : UFFD_HTTP_BACKOFF_MAX_MS;
}

/* Parses "bytes a-b/total", "bytes a-b/ *" or "bytes * /total" (RFC 9110, 14.4). */
static void parse_content_range(struct req *r, const char *v, size_t n)
{
	char tmp[128];
	unsigned long long a, b, t;
	int used = 0;

	if (n >= sizeof(tmp))
		return;
	memcpy(tmp, v, n);
	tmp[n] = '\0';
	if (sscanf(tmp, " bytes %llu-%llu/%llu%n", &a, &b, &t, &used) == 3 && used > 0 && a <= b) {
		r->have_cr = true;
		r->cr_start = a;
		r->cr_end = b;
		r->cr_total = t;
	} else if (sscanf(tmp, " bytes %llu-%llu/*%n", &a, &b, &used) == 2 && used > 0 && a <= b) {
		r->have_cr = true;
		r->cr_start = a;
		r->cr_end = b;
		r->cr_total = UINT64_MAX;
	} else if (sscanf(tmp, " bytes */%llu%n", &t, &used) == 1 && used > 0) {
		r->have_cr = true;
		r->cr_star = true;
		r->cr_total = t;
	}
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct req *r = arg;
	size_t len = size * n;
	static const char name[] = "content-range:";

	/* Each response of a redirect chain starts with its status line: forget the last one's. */
	if (len >= 5 && !memcmp(data, "HTTP/", 5)) {
		r->have_cr = false;
		r->cr_star = false;
	} else if (len > sizeof(name) - 1 && !strncasecmp(data, name, sizeof(name) - 1)) {
		parse_content_range(r, data + sizeof(name) - 1, len - (sizeof(name) - 1));
	}
	return len;
}

/* Ends the transfer from the write callback with a verdict (returning less than was given makes
 * libcurl stop with CURLE_WRITE_ERROR, and drop the connection). */
static size_t decide(struct req *r, int err)
{
	r->verdict = err;
	r->verdict_set = true;
	return 0;
}

/* The first bytes of a body: is this answer one we can take bytes from? */
static int check_answer(struct req *r)
{
	struct http *h = r->h;
	uint64_t want_end = r->offset + r->len - 1;
	curl_off_t cl = -1;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->status == 206) {
		if (!r->have_cr || r->cr_star || r->cr_start != r->offset)
			return -EPROTO;
		if (r->cr_end != want_end) {
			/* Shorter because the image ends there: the range lies past the end. */
			if (r->cr_end < want_end && r->cr_total == r->cr_end + 1)
				return -ENXIO;
			return -EPROTO;
		}
		return 0;
	}
	if (r->status == 200) {
		if (h->flags & UFFD_HTTP_STRICT_RANGE)
			return -EPROTO;
		curl_easy_getinfo(r->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		if (r->length_query && cl >= 0) {
			/* The whole image is coming, and its length is all we wanted. */
			r->length = cl;
			r->abort_ok = true;
			return 1;
		}
		if (cl > (curl_off_t)UFFD_HTTP_WHOLE_BODY_MAX)
			return -EPROTO;
		return 0;
	}
	return 0; /* an error status: read the page, map the status at the end */
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct req *r = arg;
	size_t len = size * n;

	if (!r->body_started) {
		int err;

		r->body_started = true;
		err = check_answer(r);
		if (err)
			return decide(r, err > 0 ? 0 : err);
	}
	pthread_mutex_lock(&r->h->lock);
	r->h->stats.bytes += len;
	pthread_mutex_unlock(&r->h->lock);

	if (r->status == 206) {
		if (len > r->len - r->got)
			return decide(r, -EPROTO); /* more than Content-Range said */
		memcpy((char *)r->buf + r->got, data, len);
		r->got += len;
	} else if (r->status == 200) {
		/* A whole body: keep the slice that was asked for. */
		uint64_t from = r->body_pos, to = r->body_pos + len;

		if (to > UFFD_HTTP_WHOLE_BODY_MAX)
			return decide(r, -EPROTO);
		if (!r->length_query && to > r->offset && from < r->offset + r->len) {
			uint64_t a = from > r->offset ? from : r->offset;
			uint64_t b = to < r->offset + r->len ? to : r->offset + r->len;

			memcpy((char *)r->buf + (a - r->offset), data + (a - from), b - a);
			r->got += b - a;
		}
	} else if (r->body_pos + len > ERROR_BODY_MAX) {
		return decide(r,
			      0); /* an error page too long to keep reading: the status decides */
	}
	r->body_pos += len;
	return len;
}

/* ---- outcome of an attempt ---- */

static int curl_errno(CURLcode c, bool *retry)
{
	*retry = true;
	switch (c) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		*retry = false;
		return -EKEYREJECTED;
	case CURLE_TOO_MANY_REDIRECTS:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_BAD_CONTENT_ENCODING:
		*retry = false;
		return -EPROTO;
	case CURLE_OUT_OF_MEMORY:
		*retry = false;
		return -ENOMEM;
	default:
		/* A broken connection, a body cut short, a TLS handshake that failed: may pass. */
		return -EIO;
	}
}

static int status_errno(long status, bool *retry)
{
	*retry = false;
	if (status == 404 || status == 410)
		return -ENOENT;
	if (status == 401 || status == 403)
		return -EACCES;
	if (status == 416)
		return -ENXIO;
	if (status >= 500 || status == 429 || status == 408) {
		*retry = true;
		return -EIO;
	}
	return -EPROTO;
}

/* What an attempt came to: 0, or an error and whether a retry may help. */
static int outcome(struct req *r, CURLcode res, bool *retry)
{
	struct http *h = r->h;
	uint64_t total = UINT64_MAX;
	int err;

	*retry = false;
	if (r->verdict_set && r->verdict) {
		return r->verdict;
	} else if (r->verdict_set && r->abort_ok) {
		total = (uint64_t)r->length;
	} else if (r->verdict_set) {
		return status_errno(r->status, retry); /* an error page cut short */
	} else if (res != CURLE_OK) {
		return curl_errno(res, retry);
	} else {
		if (!r->body_started) /* an empty body: the status line was all */
			curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
		if (r->length_query && r->status == 416 && r->have_cr && r->cr_star) {
			total = r->cr_total; /* an empty image */
		} else if (r->status == 206) {
			if (!r->body_started || r->got != r->len) {
				/* A 206 with no body when bytes were asked for is a lie; fewer bytes
				 * than Content-Range promised is a cut transfer. */
				*retry = r->body_started;
				return r->body_started ? -EIO : -EPROTO;
			}
			total = r->cr_total;
		} else if (r->status == 200) {
			/* The whole image, and shorter than the read asked for. */
			if (!r->length_query && r->body_pos < r->offset + r->len)
				return -ENXIO;
			total = r->body_pos;
			pthread_mutex_lock(&h->lock);
			h->stats.whole_bodies++;
			pthread_mutex_unlock(&h->lock);
		} else {
			return status_errno(r->status, retry);
		}
	}

	/* An image whose length changed under us is another image: none of its bytes are used. */
	err = 0;
	pthread_mutex_lock(&h->lock);
	if (total != UINT64_MAX) {
		if (h->length < 0)
			h->length = (int64_t)total;
		else if ((uint64_t)h->length != total)
			err = -ESTALE;
	}
	if (!err && r->length_query) {
		if (h->length < 0)
			err = -EPROTO; /* a 206 with an unknown total */
		else
			r->length = h->length;
	}
	pthread_mutex_unlock(&h->lock);
	return err;
}

/* ---- the thread ---- */

static void finish(struct req *r, int err)
{
	struct http *h = r->h;

	pthread_mutex_lock(&h->lock);
	h->stats.in_flight--;
	if (r->parent) {
		struct req *p = r->parent;

		/* The read's buffer is the caller's until its last part is in: it completes
		 * then, with the first error of any part. */
		free(r);
		if (err && !p->err)
			p->err = err;
		if (--p->parts_left) {
			pthread_mutex_unlock(&h->lock);
			return;
		}
		r = p;
		err = p->err;
	}
	if (err)
		h->stats.failed++;
	if (r->io) {
		pthread_mutex_unlock(&h->lock);
		r->io->done(r->io, err);
		free(r);
		return;
	}
	/* After the unlock the waiter may return and its request (its stack) is gone. */
	r->err = err;
	r->finished = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&h->lock);
}

/* Starts a request on a free easy handle; called with the lock held. */
static int start(struct http *h, struct req *r)
{
	char range[48];
	unsigned slot = h->free_slots[--h->nfree];
	CURL *e = h->easies[slot];

	snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)r->offset,
		 (unsigned long long)(r->offset + r->len - 1));
	r->easy = e;
	r->slot = slot;
	r->have_cr = r->cr_star = r->body_started = r->verdict_set = r->abort_ok = false;
	r->got = 0;
	r->body_pos = 0;
	r->status = 0;
	r->verdict = 0;
	/* CURLOPT_RANGE copies the string. */
	if (curl_easy_setopt(e, CURLOPT_RANGE, range) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_WRITEDATA, r) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_HEADERDATA, r) != CURLE_OK ||
	    curl_easy_setopt(e, CURLOPT_PRIVATE, r) != CURLE_OK ||
	    curl_multi_add_handle(h->multi, e) != CURLM_OK) {
		r->easy = NULL;
		h->free_slots[h->nfree++] = slot;
		return -ENOMEM;
	}
	h->slot_req[slot] = r;
	h->stats.requests++;
	if (r->attempt)
		h->stats.retries++;
	return 0;
}

/* How long until the next retry is due (ms), or -1; called with the lock held. */
static long next_retry(struct http *h)
{
	uint64_t now = now_ms();
	long next = -1;

	for (struct req *r = h->retry; r; r = r->next) {
		long left = r->due_ms > now ? (long)(r->due_ms - now) : 0;

		if (next < 0 || left < next)
			next = left;
	}
	return next;
}

/* Starts a long read as parts on the idle connections, or returns false to start it whole;
 * called with the lock held. A part that cannot start goes to @failed with its error. */
static bool start_split(struct http *h, struct req *r, struct req **failed)
{
	struct req *parts[UFFD_HTTP_MAX_CONNECTIONS];
	size_t n, part;

	/* A server that answered a range with the whole body would send it once per part. */
	if (!h->split_size || r->parent || r->length_query || r->attempt ||
	    r->len / h->split_size < 2 || h->stats.whole_bodies)
		return false;
	n = r->len / h->split_size;
	if (n > h->nfree)
		n = h->nfree;
	if (n < 2)
		return false;
	part = (r->len + n - 1) / n;
	part = (part + PART_ALIGN - 1) / PART_ALIGN * PART_ALIGN;
	n = (r->len + part - 1) / part; /* no more than before: part only grew */
	for (size_t i = 0; i < n; i++) {
		parts[i] = calloc(1, sizeof(*parts[i]));
		if (!parts[i]) {
			while (i--)
				free(parts[i]);
			return false; /* whole, then */
		}
	}
	r->err = 0;
	r->parts_left = (unsigned)n;
	h->stats.in_flight += n - 1; /* each part is a request in flight */
	for (size_t i = 0; i < n; i++) {
		struct req *p = parts[i];

		p->h = h;
		p->parent = r;
		p->offset = r->offset + i * part;
		p->buf = (char *)r->buf + i * part;
		p->len = r->len - i * part < part ? r->len - i * part : part;
		if (start(h, p)) {
			p->err = -ENOMEM;
			p->next = *failed;
			*failed = p;
		}
	}
	return true;
}

/* Moves due retries to the head of the queue and starts what fits; called with the lock held.
 * What cannot start goes to @failed, its error in its err. */
static void start_queued(struct http *h, struct req **failed)
{
	uint64_t now = now_ms();

	for (struct req **p = &h->retry; *p;) {
		struct req *r = *p;

		if (r->due_ms <= now && r->parent && r->parent->err) {
			/* Another part failed the read for good: this one's bytes are not wanted. */
			*p = r->next;
			r->err = r->parent->err;
			r->next = *failed;
			*failed = r;
			continue;
		}
		if (r->due_ms <= now) {
			*p = r->next;
			/* A retry goes before new reads: it has waited longest. */
			r->next = h->queue_head;
			h->queue_head = r;
			if (!h->queue_tail)
				h->queue_tail = r;
			h->nqueued++;
			continue;
		}
		p = &r->next;
	}
	while (h->queue_head && h->nfree) {
		struct req *r = h->queue_head;

		h->queue_head = r->next;
		if (!h->queue_head)
			h->queue_tail = NULL;
		h->nqueued--;
		pthread_cond_signal(&h->room);
		if (start_split(h, r, failed))
			continue;
		if (start(h, r)) {
			r->err = -ENOMEM;
			r->next = *failed;
			*failed = r;
		}
	}
}

static void handle_done(struct http *h, CURLMsg *msg)
{
	struct req *r = NULL;
	CURL *e = msg->easy_handle;
	CURLcode res = msg->data.result;
	long conns = 0;
	bool retry;
	int err;

	curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
	curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &conns);
	err = outcome(r, res, &retry);
	curl_multi_remove_handle(h->multi, e);

	pthread_mutex_lock(&h->lock);
	h->stats.connects += (uint64_t)conns;
	if (err == -ETIMEDOUT)
		h->stats.timeouts++;
	r->easy = NULL;
	h->slot_req[r->slot] = NULL;
	h->free_slots[h->nfree++] = r->slot;
	/* A part is not retried once another part failed its read for good. */
	if (err && retry && r->attempt < h->retries && !h->stop && !(r->parent && r->parent->err)) {
		r->attempt++;
		r->due_ms = now_ms() + backoff_ms(r->attempt);
		r->next = h->retry;
		h->retry = r;
		pthread_mutex_unlock(&h->lock);
		return;
	}
	pthread_mutex_unlock(&h->lock);
	finish(r, err);
}

/* Ends every request still held, when the source closes. */
static void cancel_all(struct http *h)
{
	struct req *list = NULL;

	pthread_mutex_lock(&h->lock);
	for (unsigned i = 0; i < h->connections; i++) {
		struct req *r = h->slot_req[i];

		if (r) {
			curl_multi_remove_handle(h->multi, h->easies[i]);
			h->slot_req[i] = NULL;
			r->easy = NULL;
			r->next = list;
			list = r;
		}
	}
	for (struct req *q = h->queue_head, *next; q; q = next) {
		next = q->next;
		q->next = list;
		list = q;
	}
	for (struct req *q = h->retry, *next; q; q = next) {
		next = q->next;
		q->next = list;
		list = q;
	}
	h->queue_head = h->queue_tail = h->retry = NULL;
	h->nqueued = 0;
	pthread_cond_broadcast(&h->room);
	pthread_mutex_unlock(&h->lock);
	for (struct req *q = list, *next; q; q = next) {
		next = q->next;
		finish(q, -ECANCELED);
	}
}

static void *thread_main(void *arg)
{
	struct http *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		struct req *failed = NULL;
		int running = 0, left = 0;
		long wait, curl_wait = -1;
		CURLMsg *msg;

		start_queued(h, &failed);
		pthread_mutex_unlock(&h->lock);
		for (struct req *r = failed, *next; r; r = next) {
			next = r->next;
			finish(r, r->err);
		}
		curl_multi_perform(h->multi, &running);
		while ((msg = curl_multi_info_read(h->multi, &left)))
			if (msg->msg == CURLMSG_DONE)
				handle_done(h, msg);

		curl_multi_timeout(h->multi, &curl_wait);
		pthread_mutex_lock(&h->lock);
		/* Work that arrived meanwhile (a new read, a retry now due) is started at once. */
		wait = next_retry(h);
		if (h->stop || (h->queue_head && h->nfree) || wait == 0)
			continue;
		if (curl_wait >= 0 && (wait < 0 || curl_wait < wait))
			wait = curl_wait;
		if (wait < 0 || wait > IDLE_POLL_MS)
			wait = IDLE_POLL_MS;
		pthread_mutex_unlock(&h->lock);
		curl_multi_poll(h->multi, NULL, 0, (int)wait, NULL);
		pthread_mutex_lock(&h->lock);
	}
	pthread_mutex_unlock(&h->lock);
	cancel_all(h);
	return NULL;
}

/* ---- the source's operations ---- */

/* Queues a request; waits for room unless called from the source's own thread. */
static int submit(struct http *h, struct req *r)
{
	pthread_mutex_lock(&h->lock);
	while (!h->stop && h->nqueued >= UFFD_HTTP_MAX_QUEUED) {
		if (on_thread(h)) {
			pthread_mutex_unlock(&h->lock);
			return -EAGAIN;
		}
		pthread_cond_wait(&h->room, &h->lock);
	}
	if (h->stop) {
		pthread_mutex_unlock(&h->lock);
		return -ECANCELED;
	}
	r->next = NULL;
	if (h->queue_tail)
		h->queue_tail->next = r;
	else
		h->queue_head = r;
	h->queue_tail = r;
	h->nqueued++;
	h->stats.reads++;
	h->stats.in_flight++;
	pthread_mutex_unlock(&h->lock);
	curl_multi_wakeup(h->multi);
	return 0;
}

static int run_sync(struct http *h, struct req *r)
{
	int err;

	if (on_thread(h))
		return -EDEADLK;
	pthread_cond_init(&r->cond, NULL);
	err = submit(h, r);
	if (!err) {
		pthread_mutex_lock(&h->lock);
		while (!r->finished)
			pthread_cond_wait(&r->cond, &h->lock);
		pthread_mutex_unlock(&h->lock);
		err = r->err;
	}
	pthread_cond_destroy(&r->cond);
	return err;
}

static int check_range(size_t len, uint64_t offset)
{
	if (len > (uint64_t)INT64_MAX || offset > (uint64_t)INT64_MAX - len)
		return -EINVAL;
	return 0;
}

static int http_read(void *impl, void *buf, size_t len, uint64_t offset)
{
	struct http *h = impl;
	struct req r = { .h = h, .buf = buf, .len = len, .offset = offset };

	if (!h || (!buf && len) || check_range(len, offset))
		return -EINVAL;
	if (!len)
		return 0;
	return run_sync(h, &r);
}

static int http_read_async(void *impl, struct uffd_source_io *io)
{
	struct http *h = impl;
	struct req *r;
	int err;

	/* A zero-length read would be a range "a-(a-1)"; uffd_source_read() never asks one. */
	if (!h || !io || !io->done || !io->buf || !io->len || check_range(io->len, io->offset))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->h = h;
	r->io = io;
	r->buf = io->buf;
	r->len = io->len;
	r->offset = io->offset;
	err = submit(h, r);
	if (err)
		free(r);
	return err;
}

static int64_t http_length(void *impl)
{
	struct http *h = impl;
	struct req r = { .h = h, .length_query = true, .len = 1 };
	int err;

	if (!h)
		return -EINVAL;
	pthread_mutex_lock(&h->lock);
	if (h->length >= 0) {
		int64_t len = h->length;

		pthread_mutex_unlock(&h->lock);
		return len;
	}
	pthread_mutex_unlock(&h->lock);
	r.buf = &r.one_byte;
	err = run_sync(h, &r);
	return err ? err : r.length;
}

static void http_free(struct http *h)
{
	if (h->easies) {
		for (unsigned i = 0; i < h->connections; i++)
			if (h->easies[i])
				curl_easy_cleanup(h->easies[i]);
	}
	if (h->multi)
		curl_multi_cleanup(h->multi);
	free(h->easies);
	free(h->slot_req);
	free(h->free_slots);
	curl_slist_free_all(h->headers);
	free(h->url);
	free(h->ca_file);
	pthread_cond_destroy(&h->room);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static void http_close(void *impl)
{
	struct http *h = impl;

	registry_remove(h);
	pthread_mutex_lock(&h->lock);
	h->stop = true;
	pthread_cond_broadcast(&h->room);
	pthread_mutex_unlock(&h->lock);
	curl_multi_wakeup(h->multi);
	pthread_join(h->thread, NULL);
	http_free(h);
}

static const struct uffd_source_ops http_ops = {
	.size = sizeof(struct uffd_source_ops),
	.read = http_read,
	.read_async = http_read_async,
	.length = http_length,
	.close = http_close,
};

const struct uffd_source_ops *uffd_http__ops(void)
{
	return &http_ops;
}

/* ---- making a source ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init(void)
{
	/* Never undone: other code in the process may use libcurl too, and
	 * curl_global_cleanup() is not safe while it does. */
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* The scheme, and a host after it; nothing libcurl would take apart or send as it is. */
static int check_url(const char *url, bool *https)
{
	const char *rest;

	if (!strncasecmp(url, "http://", 7)) {
		*https = false;
		rest = url + 7;
	} else if (!strncasecmp(url, "https://", 8)) {
		*https = true;
		rest = url + 8;
	} else {
		return -EINVAL;
	}
	if (!*rest || *rest == '/' || *rest == '?' || *rest == '#' || *rest == ':')
		return -EINVAL;
	for (const unsigned char *p = (const unsigned char *)url; *p; p++)
		if (*p <= 0x20 || *p == 0x7f)
			return -EINVAL;
	return 0;
}

static bool curl_speaks(const char *scheme)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	for (const char *const *p = v->protocols; p && *p; p++)
		if (!strcasecmp(*p, scheme))
			return true;
	return false;
}

/* A header line of its own: a name, a colon, no line break to smuggle a second one in. */
static bool header_ok(const char *hdr)
{
	const char *colon = strchr(hdr, ':');

	if (!colon || colon == hdr || strpbrk(hdr, "\r\n"))
		return false;
	/* The source sets Range itself, per read. */
	if (colon - hdr == 5 && !strncasecmp(hdr, "range", 5))
		return false;
	for (const char *p = hdr; p < colon; p++)
		if (*p <= 0x20 || *p == 0x7f)
			return false;
	return true;
}

static int check_config(const struct uffd_http_config *cfg, bool *https)
{
	int err;

	for (size_t i = 0; i < sizeof(cfg->reserved) / sizeof(cfg->reserved[0]); i++)
		if (cfg->reserved[i])
			return -EINVAL;
	if (!cfg->url || (cfg->flags & ~KNOWN_FLAGS) ||
	    cfg->connections > UFFD_HTTP_MAX_CONNECTIONS || cfg->retries > UFFD_HTTP_MAX_RETRIES ||
	    (cfg->split_size && cfg->split_size < PART_ALIGN) ||
	    ((cfg->flags & UFFD_HTTP_NO_RETRY) && cfg->retries))
		return -EINVAL;
	err = check_url(cfg->url, https);
	if (err)
		return err;
	for (const char *const *p = cfg->headers; p && *p; p++)
		if (!header_ok(*p))
			return -EINVAL;
	if (cfg->ca_file && access(cfg->ca_file, R_OK))
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT : -EACCES;
	return 0;
}

static CURL *make_easy(struct http *h)
{
	CURL *e = curl_easy_init();
	bool ok;

	if (!e)
		return NULL;
	ok = curl_easy_setopt(e, CURLOPT_URL, h->url) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)h->connect_timeout_ms) ==
		     CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_BUFFERSIZE, RECV_BUFFER) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_USERAGENT, "libuffd-http") == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
	     curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
	     (!h->headers || curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers) == CURLE_OK) &&
	     (!h->ca_file || curl_easy_setopt(e, CURLOPT_CAINFO, h->ca_file) == CURLE_OK);
	/* No Accept-Encoding: a range of a compressed representation is not a range of the image. */
	if (!ok) {
		curl_easy_cleanup(e);
		return NULL;
	}
	return e;
}

int uffd_http_source(struct uffd_source **out, const struct uffd_http_config *cfg)
{
	struct http *h;
	sigset_t all, old;
	bool https = false;
	int err;

	if (!out || !cfg)
		return -EINVAL;
	err = check_config(cfg, &https);
	if (err)
		return err;
	pthread_once(&curl_once, curl_init);
	if (curl_init_result != CURLE_OK)
		return -ENOMEM;
	if (!curl_speaks(https ? "https" : "http"))
		return -EPROTONOSUPPORT;

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->room, NULL);
	h->length = -1;
	h->connections = cfg->connections ? cfg->connections : DEFAULT_CONNECTIONS;
	h->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
	h->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms :
							  DEFAULT_CONNECT_TIMEOUT_MS;
	if (cfg->flags & UFFD_HTTP_NO_RETRY)
		h->retries = 0;
	else
		h->retries = cfg->retries ? cfg->retries : DEFAULT_RETRIES;
	h->flags = cfg->flags;
	h->split_size = cfg->split_size;

	err = -ENOMEM;
	h->url = strdup(cfg->url);
	if (!h->url || (cfg->ca_file && !(h->ca_file = strdup(cfg->ca_file))))
		goto fail;
	for (const char *const *p = cfg->headers; p && *p; p++) {
		struct curl_slist *l = curl_slist_append(h->headers, *p);

		if (!l)
			goto fail;
		h->headers = l;
	}
	h->multi = curl_multi_init();
	h->easies = calloc(h->connections, sizeof(*h->easies));
	h->slot_req = calloc(h->connections, sizeof(struct req *));
	h->free_slots = calloc(h->connections, sizeof(*h->free_slots));
	if (!h->multi || !h->easies || !h->slot_req || !h->free_slots)
		goto fail;
	/* One connection per request in flight, all kept alive: the cache holds them all. */
	if (curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)h->connections) ||
	    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)h->connections) ||
	    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)h->connections))
		goto fail;
	for (unsigned i = 0; i < h->connections; i++) {
		h->easies[i] = make_easy(h);
		if (!h->easies[i])
			goto fail;
		h->free_slots[h->nfree++] = i;
	}

	/* The thread takes no signal of the application's: a SIGPIPE of a write to a closed TLS
	 * connection stays pending there instead of killing the process. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&h->thread, NULL, thread_main, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		goto fail;

	err = uffd_source_new(&h->src, &http_ops, h);
	if (err) {
		http_close(h);
		return err;
	}
	registry_add(h);
	*out = h->src;
	return 0;
fail:
	http_free(h);
	return err;
}

int uffd_http_get_stats(struct uffd_source *s, struct uffd_http_stats *out)
{
	struct http *h;

	if (!s || !out)
		return -EINVAL;
	/* Under the registry's lock, so that a close cannot free the source meanwhile. */
	pthread_mutex_lock(&registry_lock);
	for (h = registry; h; h = h->reg_next)
		if (h->src == s)
			break;
	if (h) {
		pthread_mutex_lock(&h->lock);
		*out = h->stats;
		out->queued = h->nqueued;
		out->in_flight = h->stats.in_flight - h->nqueued;
		pthread_mutex_unlock(&h->lock);
	}
	pthread_mutex_unlock(&registry_lock);
	return h ? 0 : -EINVAL;
}
