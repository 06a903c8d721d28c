/* SPDX-License-Identifier: MIT */
/**
 * @file uffd_http.h
 * @brief libuffd-http: a page source that reads an image over HTTP(S) with range requests.
 *
 * A separate library (`libuffd-http.so`, pkg-config `libuffd-http`, CMake
 * `find_package(uffd CONFIG COMPONENTS http)` and target `uffd::http`) so that libuffd itself
 * needs no libcurl. It makes a `struct uffd_source` (uffd.h, @ref sources): read it with
 * uffd_source_read(), serve a registration from it with uffd_serve(), close it with
 * uffd_source_close(). The guide's @ref http_source page says how to point it at object storage and
 * what it does when the server fails, stalls or lies.
 *
 * The conventions of uffd.h hold: 0 or a negative errno, -EINVAL for bad arguments, nothing
 * printed. Every function here may be called from any thread, and so may every operation of
 * the source it makes.
 */
#ifndef UFFD_HTTP_H
#define UFFD_HTTP_H

#include <stdint.h>

#include "uffd.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @defgroup http HTTP source
 * @brief Pages from an HTTP(S) server or object storage, by range requests (libuffd-http).
 * @{
 */

/** uffd_http_config::flags: no retries at all; the first failure of a request is final. */
#define UFFD_HTTP_NO_RETRY 0x1u
/** uffd_http_config::flags: a `200` answer to a range request is always -EPROTO, even a small
 *  one that could be sliced (see @ref UFFD_HTTP_WHOLE_BODY_MAX). */
#define UFFD_HTTP_STRICT_RANGE 0x2u

/** The most requests in flight a source may have (uffd_http_config::connections). */
#define UFFD_HTTP_MAX_CONNECTIONS 64u
/** The most retries of one read (uffd_http_config::retries). */
#define UFFD_HTTP_MAX_RETRIES 10u
/** The wait before the first retry, in ms; each further retry waits twice as long... */
#define UFFD_HTTP_BACKOFF_MS 50u
/** ...up to this many ms. */
#define UFFD_HTTP_BACKOFF_MAX_MS 2000u
/** Reads a source holds waiting for a free connection; past that, callers wait for room. */
#define UFFD_HTTP_MAX_QUEUED 1024u
/** A server that ignores `Range` and answers `200` with the whole body: a body of at most this
 *  many bytes is read and the asked slice taken from it; a longer one is -EPROTO. */
#define UFFD_HTTP_WHOLE_BODY_MAX (4u << 20)

/** How uffd_http_source() reaches the image. Zero-initialise; `url` is required. */
struct uffd_http_config {
	/** `http://` or `https://` URL of the image. The query string is kept as it is, so a
	 *  presigned URL of object storage works unchanged. Copied. */
	const char *url;
	/** Extra request headers, each `"Name: value"`, NULL-terminated (an `Authorization: Bearer`
	 *  token, say), or NULL. Sent with every request; copied. */
	const char *const *headers;
	/** A PEM file of the CA certificates that HTTPS servers are verified against, or NULL for
	 *  the system's. Servers are always verified. */
	const char *ca_file;
	/** Requests in flight at once, each on its own kept-alive connection: 1 to
	 *  @ref UFFD_HTTP_MAX_CONNECTIONS; 0 means 8. */
	unsigned connections;
	/** The deadline of one attempt of one request in ms, connecting included; 0 means 10000. */
	unsigned timeout_ms;
	/** The deadline for connecting (TCP and TLS) in ms; 0 means 2000. */
	unsigned connect_timeout_ms;
	/** Retries of a failed request: 1 to @ref UFFD_HTTP_MAX_RETRIES; 0 means 3 (or none at all
	 *  with @ref UFFD_HTTP_NO_RETRY). The wait before retry n is @ref UFFD_HTTP_BACKOFF_MS
	 *  doubled n - 1 times, at most @ref UFFD_HTTP_BACKOFF_MAX_MS. */
	unsigned retries;
	unsigned flags; /**< `UFFD_HTTP_*` flags, or 0 */
	/** Split large reads over the idle connections (@ref http_source_split): a read of at least
	 *  twice this many bytes goes out as up to one range request per idle connection, each at
	 *  least this long. 0 (the default) never splits; otherwise at least 4096. */
	uint64_t split_size;
	uint64_t reserved[7]; /**< zero */
};

/**
 * uffd_http_source - a page source that reads @p cfg->url with HTTP range requests.
 *
 * No request is made here: a server that is down shows in the first read. Each source has one
 * background thread (libcurl's multi interface) with up to `connections` requests in flight on
 * kept-alive connections; uffd_source_close() ends it and frees everything. A read asks for
 * `Range: bytes=a-b` and succeeds only with exactly those bytes: every attempt has a deadline
 * (`timeout_ms`), failures that may pass are retried with back-off, and then the read fails.
 * With `split_size` set, a read of at least twice that goes out as parts on the idle connections
 * (@ref http_source_split); it succeeds only when every part did, and fails otherwise with the
 * first error of a part. The errors:
 * - -ETIMEDOUT: no complete answer within the deadline (a server that stalls);
 * - -ECONNREFUSED: nothing listens (a server that is stopped);
 * - -EIO: the connection broke, the body was cut short, or the server answered 5xx or 429;
 * - -ENXIO: the range lies (partly) past the end of the image (`416`, or a shorter range);
 * - -ENOENT: `404` or `410`;
 * - -EACCES: `401` or `403`;
 * - -EPROTO: an answer that does not fit the request (another range, a `200` with a whole body
 *   over @ref UFFD_HTTP_WHOLE_BODY_MAX, or any `200` with @ref UFFD_HTTP_STRICT_RANGE; a redirect
 *   loop, an unexpected status);
 * - -ESTALE: the image's length changed since the source first learnt it;
 * - -EKEYREJECTED: the HTTPS server's certificate did not verify;
 * - -EHOSTUNREACH: the host name did not resolve;
 * - -ECANCELED: the source was closed while the read waited.
 *
 * -ETIMEDOUT, -ECONNREFUSED, -EIO and -EHOSTUNREACH are retried; the others are final. The read is asynchronous when the source's `read_async`
 * operation is used (uffd_serve() does): `done` then runs on the source's thread, where it must
 * not block; a synchronous read from there fails with -EDEADLK. With
 * @ref UFFD_HTTP_MAX_QUEUED reads waiting, a further read waits for room (from `done`:
 * -EAGAIN). `length` asks `Range: bytes=0-0` (a GET, as a presigned URL allows; not HEAD)
 * and remembers the answer.
 *
 * \param out receives the source.
 * \param cfg the server and how to talk to it.
 * \return 0, or a negative errno:
 * - -EINVAL: NULL argument; a URL that is not `http://` or `https://` with a host, or holds a
 *   space or control character; a header without `:` or with a line break; `connections` or
 *   `retries` over their limits; a `split_size` from 1 to 4095; an unknown flag; a reserved
 *   field set.
 * - -EPROTONOSUPPORT: the libcurl found at run time cannot speak the URL's scheme.
 * - -ENOENT, -EACCES: `ca_file` cannot be read.
 * - -ENOMEM, -EAGAIN (no thread could be started).
 */
UFFD_API_EXPORT int uffd_http_source(struct uffd_source **out, const struct uffd_http_config *cfg);

/** Counters of an HTTP source (uffd_http_get_stats()). */
struct uffd_http_stats {
	uint64_t reads;	       /**< reads asked for (length queries included) */
	uint64_t requests;     /**< HTTP requests: reads or their parts, retries */
	uint64_t retries;      /**< requests that were retries */
	uint64_t bytes;	       /**< body bytes received */
	uint64_t connects;     /**< TCP connections opened (the rest reused a kept-alive one) */
	uint64_t timeouts;     /**< attempts that reached their deadline */
	uint64_t failed;       /**< reads that failed for good */
	uint64_t whole_bodies; /**< `200` answers a slice was taken from */
	uint64_t queued;       /**< now: reads waiting for a connection */
	uint64_t in_flight;    /**< now: requests on the wire or waiting to retry */
	uint64_t reserved[6];  /**< zero; later counters go here */
};

/**
 * uffd_http_get_stats - the counters of a source that uffd_http_source() made.
 * \param s the source (not closed).
 * \param out receives the counters.
 * \return 0, or -EINVAL (NULL argument, or @p s is no HTTP source of this library).
 */
UFFD_API_EXPORT int uffd_http_get_stats(struct uffd_source *s, struct uffd_http_stats *out);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* UFFD_HTTP_H */
