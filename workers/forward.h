/*
 * forward.h - `picklepool-worker --forward`: the one worker of a remote
 * pool (pool_opts_t.address), which carries its pool's batches to a
 * `picklepool serve` master and the results back (private to
 * picklepool-worker).
 *
 * To the local master it is an exec'd worker like any other: it connects
 * its DEALER to the pool's ipc endpoint with its slot's routing id, says
 * READY, takes TASKs and answers each with one RESULT.  To serve it is a
 * CLIENT (docs/PROTOCOL.md, "Scale-out"): it says HELLO, and forwards each
 * TASK with the same batch id, the call frame once per session
 * (SAME_CALL after), and each RESULT back unchanged.  It keeps every batch
 * until its result came: when the session with serve ends (serve silent
 * for its liveness, STOP, serve restarted), it joins again and sends them
 * all again; a result for a batch it no longer holds is dropped, so none is
 * delivered twice.  Batches held while no master answers for `give_up_s`
 * seconds fail with PK_EIO, saying so.
 *
 * Its scoreboard slot says BUSY on item 0 of batch 0 (an id no batch has)
 * for its whole life: the stall watch sees a worker running an item (live,
 * as long as its process runs), and no local deadline names one of its
 * batches - per-item timeouts are enforced where the items run, on the
 * hosts (the TASK's aux carries them).
 */
#ifndef PK_FORWARD_H
#define PK_FORWARD_H

typedef struct pk__forward_cfg {
    const char *endpoint; /* serve's: tcp://HOST:PORT */
    const char *keys;     /* key directory, or NULL */
    const char *key_name; /* own pair's name, NULL: the one in keys */
    int insecure;
    double give_up_s; /* 0: never */
} pk__forward_cfg_t;

/* Runs the forwarder in a process a pool exec'd (PICKLEPOOL_WORKER set).
 * Returns the exit status: 0 after STOP, 1 when it could not start or its
 * key was refused (a line on stderr says why), 2 when no pool started it. */
int pk__forward_main(const pk__forward_cfg_t *cfg);

#endif /* PK_FORWARD_H */
