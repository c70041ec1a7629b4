/*
 * sched.h - the scheduler of `picklepool serve`: batches of many clients
 * dispatched to many hosts (private).
 *
 * Policy apart from mechanism, as recovery.h is for local pools: this
 * module decides which batch goes to which host and what becomes of
 * batches when a peer goes away, from plain facts, with no socket, clock or
 * lock in sight, so that every rule is tested with tables
 * (tests/test_sched.c).  serve (cli/serve.c) carries the messages.  The
 * rules:
 *
 *   - Each client has a FIFO queue of batches, ordered by submission; a
 *     host holds at most its capacity (the batches it said it can take at
 *     once, HELLO's count) in flight.
 *   - Fairness: dispatches go round-robin between the clients that have
 *     work queued (one batch each in turn), and round-robin between the
 *     hosts with free capacity, so one client's long map never starves
 *     another's, and every host gets work.
 *   - Each dispatch gets an id of its own (never 0, never reused), which
 *     the host answers with: a RESULT is matched by (host, id) only.
 *   - A host that goes away (declared dead, or left): its in-flight batches
 *     go back to their clients' queues, ahead of what was submitted after
 *     them (a queue stays ordered by submission), so the earliest work is
 *     sent again first.  Their old ids are forgotten: a late RESULT from the
 *     dead host, or for a batch no longer in flight on the host that
 *     answers, is unknown and dropped - nothing is delivered twice.
 *   - A client that goes away: its queued batches are dropped; its batches
 *     in flight become orphans that keep their host's capacity until the
 *     host answers (the answer is dropped) or goes away.
 *
 * Ownership: the caller allocates each pool__sbatch_t (and its payload);
 * the scheduler links it and hands it back - from pool__sched_next,
 * pool__sched_result, or the drop callback when it is dropped - and never
 * frees it.  Clients and hosts are allocated by the scheduler and freed by
 * their remove call (or pool__sched_free).
 *
 * Thread-safety: none; one thread owns a scheduler.  Fork-safe (no OS
 * resources).
 */
#ifndef POOL_SCHED_H
#define POOL_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "picklepool/error.h"

typedef struct pool__sched pool__sched_t;
typedef struct pool__sclient pool__sclient_t;
typedef struct pool__shost pool__shost_t;

/* A batch as the scheduler sees it.  Fill client_batch and payload; the
 * other fields belong to the scheduler. */
typedef struct pool__sbatch {
    struct pool__sbatch *next; /* the scheduler's link */
    uint64_t client_batch;     /* the id its client gave it */
    void *payload;             /* the caller's (the message to send) */
    /* set by the scheduler */
    uint64_t id;             /* id of its current dispatch, 0 when queued */
    uint64_t seq;            /* submission order, scheduler-wide */
    pool__sclient_t *client; /* NULL once orphaned */
    pool__shost_t *host;     /* where it is in flight, NULL when queued */
    uint32_t dispatches;     /* times sent to a host */
} pool__sbatch_t;

/* Called with each batch the scheduler drops (a departed client's queue,
 * orphans of a departed host, everything at pool__sched_free): the caller
 * frees it. */
typedef void (*pool__sched_drop_fn)(void *arg, pool__sbatch_t *b);

/* What the scheduler has done so far (for logs and tests). */
typedef struct pool__sched_stats {
    uint64_t submitted;  /* batches taken by pool__sched_submit */
    uint64_t dispatched; /* dispatches made (a requeued batch counts again) */
    uint64_t completed;  /* results matched to a live client's batch */
    uint64_t requeued;   /* batches put back after their host went away */
    uint64_t unknown;    /* results matching no batch in flight there */
    uint64_t orphaned;   /* results for batches of departed clients */
    uint64_t dropped;    /* batches handed to the drop callback */
} pool__sched_stats_t;

/* A new scheduler (drop may be NULL when the caller frees nothing).
 * Returns PK_OK with *out owned by the caller (pool__sched_free), or
 * PK_ENOMEM. */
pk_err_t pool__sched_new(pool__sched_drop_fn drop, void *arg,
                         pool__sched_t **out);

/* Drops every batch (drop callback), frees every client, host and *s, and
 * sets *s to NULL.  NULL or *s NULL is a no-op. */
void pool__sched_free(pool__sched_t **s);

/* Adds a client; `tag` is the caller's (its peer), returned by
 * pool__sclient_tag.  Returns the client, or NULL when out of memory. */
pool__sclient_t *pool__sched_client_add(pool__sched_t *s, void *tag);

/* The client is gone: drops its queued batches, orphans its in-flight ones
 * (see the rules) and frees c.  Returns the number of batches dropped or
 * orphaned. */
size_t pool__sched_client_remove(pool__sched_t *s, pool__sclient_t *c);

/* Adds a host that can hold `capacity` batches at once (>= 1).  Returns
 * the host, or NULL when out of memory. */
pool__shost_t *pool__sched_host_add(pool__sched_t *s, uint32_t capacity,
                                    void *tag);

/* The host is gone: its in-flight batches go back to their clients'
 * queues in submission order (orphans are dropped), and h is freed.
 * Returns the number of batches requeued. */
size_t pool__sched_host_remove(pool__sched_t *s, pool__shost_t *h);

/* Appends b (client_batch and payload set) to c's queue. */
void pool__sched_submit(pool__sched_t *s, pool__sclient_t *c,
                        pool__sbatch_t *b);

/* The next dispatch, if a client has work queued and a host has free
 * capacity: returns 1 with *b (now in flight on *h, b->id a new id), else
 * 0.  The caller sends it; a send that fails is undone with
 * pool__sched_undo. */
int pool__sched_next(pool__sched_t *s, pool__shost_t **h, pool__sbatch_t **b);

/* Puts back a batch just returned by pool__sched_next that could not be
 * sent: it goes to the front of its client's queue, its id forgotten. */
void pool__sched_undo(pool__sched_t *s, pool__sbatch_t *b);

enum pool__sched_match {
    POOL_SCHED_UNKNOWN = 0, /* not in flight on this host: drop the result */
    POOL_SCHED_DONE,        /* *b is the batch: deliver to b->client */
    POOL_SCHED_ORPHAN       /* *b's client is gone: free it, drop the result */
};

/* Host h answered dispatch `id`.  DONE and ORPHAN take the batch out of the
 * scheduler (the caller owns *b again, and h's capacity is free); UNKNOWN
 * leaves *b NULL. */
enum pool__sched_match pool__sched_result(pool__sched_t *s, pool__shost_t *h,
                                          uint64_t id, pool__sbatch_t **b);

/* The batch of c with client id `cb` that is queued (not in flight), or
 * NULL.  The pointer stays the scheduler's.  For tests and diagnostics. */
pool__sbatch_t *pool__sched_queued(const pool__sclient_t *c, uint64_t cb);

/* Batches queued at c (not in flight). */
size_t pool__sclient_queued(const pool__sclient_t *c);

/* Batches of c in flight on hosts. */
size_t pool__sclient_inflight(const pool__sclient_t *c);

/* Batches in flight on h (orphans included), and its capacity. */
uint32_t pool__shost_inflight(const pool__shost_t *h);
uint32_t pool__shost_capacity(const pool__shost_t *h);

/* The caller's tags. */
void *pool__sclient_tag(const pool__sclient_t *c);
void *pool__shost_tag(const pool__shost_t *h);

/* Counters so far. */
void pool__sched_stats(const pool__sched_t *s, pool__sched_stats_t *out);

/* Numbers of clients and hosts. */
size_t pool__sched_nclients(const pool__sched_t *s);
size_t pool__sched_nhosts(const pool__sched_t *s);

#endif /* POOL_SCHED_H */
