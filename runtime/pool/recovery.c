/*
 * recovery.c - the pool's recovery policy (see recovery.h for the rules).
 * Pure decisions: the master's death handler carries them out.
 */
#include "pool/recovery.h"

#include <string.h>

#define QUICK_DEATH_NS 1000000000ull /* a death this soon counts as quick */
#define BACKOFF_BASE_NS 20000000ull  /* first backoff step: 20 ms ... */
#define BACKOFF_MAX_NS 2000000000ull /* ... doubling up to 2 s */
#define QUICK_DEATHS_FREE 3          /* quick deaths before backing off */

static void piece(pool__rec_plan_t *p, uint32_t from, uint32_t to,
                  enum pool__rec_action action, uint32_t crashes)
{
    if (from >= to)
        return;
    pool__rec_piece_t *x = &p->piece[p->npieces++];
    x->from = from;
    x->to = to;
    x->action = action;
    x->crashes = crashes;
}

/* Item k crashed for the crashes-th time: retry it alone, or give up. */
static void crashed_item(pool__rec_plan_t *p, uint32_t k, uint32_t crashes,
                         int retries)
{
    if (crashes > (uint32_t)retries)
        piece(p, k, k + 1, POOL_REC_CRASHED, 0);
    else
        piece(p, k, k + 1, POOL_REC_REQUEUE, crashes);
}

void pool__rec_plan_batch(const pool__rec_batch_t *b, pool__rec_plan_t *plan)
{
    memset(plan, 0, sizeof *plan);
    if (b->canceled) {
        plan->kind = POOL_REC_DROP;
        return;
    }
    if (b->timed_out && b->timeout_item < b->count) {
        uint32_t k = b->timeout_item;
        plan->kind = POOL_REC_PIECES;
        piece(plan, 0, k, POOL_REC_REQUEUE, 0);
        piece(plan, k, k + 1, POOL_REC_TIMEDOUT, 0);
        piece(plan, k + 1, b->count, POOL_REC_REQUEUE, 0);
        return;
    }
    if (!b->blamed) {
        plan->kind = POOL_REC_KEEP;
        return;
    }
    plan->kind = POOL_REC_PIECES;
    if (b->running < b->count) {
        /* The scoreboard names the item: isolate it at once.  Only a batch
         * of one carries its count over (it is that item's own history). */
        uint32_t k = b->running;
        piece(plan, 0, k, POOL_REC_REQUEUE, 0);
        crashed_item(plan, k, (b->count == 1 ? b->crashes : 0) + 1, b->retries);
        piece(plan, k + 1, b->count, POOL_REC_REQUEUE, 0);
    } else if (b->count == 1) {
        crashed_item(plan, 0, b->crashes + 1, b->retries);
    } else {
        /* Died while decoding: split in halves. */
        uint32_t h = b->count / 2;
        piece(plan, 0, h, POOL_REC_REQUEUE, b->crashes + 1);
        piece(plan, h, b->count, POOL_REC_REQUEUE, b->crashes + 1);
    }
}

void pool__rec_respawn(const pool__rec_death_t *d, pool__rec_respawn_t *out)
{
    memset(out, 0, sizeof *out);
    out->startup_deaths = d->startup_deaths;
    if (!d->was_ready && !d->clean && !d->killed) {
        out->startup_deaths++;
        unsigned limit =
            2 * (unsigned)d->nworkers < 5 ? 5 : 2 * (unsigned)d->nworkers;
        if (out->startup_deaths >= limit) {
            out->broken = 1;
            return;
        }
    }
    /* Back off only from workers that die soon without doing anything:
     * outside kills of working processes are respawned at once. */
    if (d->lived_ns < QUICK_DEATH_NS && !d->productive && !d->killed)
        out->quick_deaths = d->quick_deaths + 1;
    else
        out->quick_deaths = 0;
    if (out->quick_deaths > QUICK_DEATHS_FREE) {
        unsigned sh = out->quick_deaths - QUICK_DEATHS_FREE;
        uint64_t delay = sh > 7 ? BACKOFF_MAX_NS : BACKOFF_BASE_NS << sh;
        out->delay_ns = delay > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : delay;
    }
}

int pool__rec_overdue(uint64_t now_ns, uint64_t start_ns, uint64_t timeout_ns)
{
    return timeout_ns != 0 && now_ns > start_ns &&
           now_ns - start_ns > timeout_ns;
}

enum pool__rec_stall_verdict pool__rec_stall(const pool__rec_stall_t *s)
{
    if (!s->holds_work || s->bound_ns == 0 ||
        !pool__rec_overdue(s->now_ns, s->progress_ns, s->bound_ns))
        return POOL_REC_LIVE;
    if (!s->running_item)
        return POOL_REC_STALLED;
    /* Running an item: live however long it takes, unless stopped. */
    if (s->stopped < 0)
        return POOL_REC_LOOK;
    return s->stopped ? POOL_REC_STALLED : POOL_REC_LIVE;
}

uint64_t pool__rec_stall_bound(uint64_t stall_ns, uint64_t timeout_ns)
{
    if (timeout_ns != 0 && (stall_ns == 0 || timeout_ns < stall_ns))
        return timeout_ns;
    return stall_ns;
}
