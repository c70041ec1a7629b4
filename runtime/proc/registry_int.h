/*
 * registry_int.h - private hooks into the function registry (registry.c).
 *
 * The runtime uses these to forward registrations made after the fork server
 * was started, so that workers forked later see them too, and to list the
 * plugins to load in exec'd and remote workers.
 */
#ifndef POOL_REGISTRY_INT_H
#define POOL_REGISTRY_INT_H

#include <stddef.h>
#include <stdint.h>

#include "picklepool/registry.h"

/* Called after every successful pool_register(), outside the registry lock,
 * in the registering thread.  `plugin_path` is the plugin whose init function
 * is registering (the path as stored, see pool__registry_plugins), or NULL for
 * a function registered directly by the program; a receiver in another process
 * can only use `fn` when plugin_path is NULL and the process was forked from
 * this one after fn's code was mapped.  A plugin's registrations are reported
 * one by one (the same plugin_path each time) while pool_plugin_load holds its
 * plugin lock: the listener must not load plugins itself, nor take a lock that
 * is held around pool_plugin_load().  The strings are valid during the call
 * only. */
typedef void (*pool__registry_listener_t)(const char *module, const char *name,
                                          pool_fn_t fn, void *udata,
                                          const char *plugin_path);

/* Installs the listener (NULL removes it).  One listener at a time; setting
 * it is serialised with registrations, so a registration either reaches the
 * new listener or happened before this call returned. */
void pool__registry_set_listener(pool__registry_listener_t fn);

/* The plugins loaded so far, in load order: sets *paths (may be NULL) to an
 * array of that many paths and returns the count.  The array and strings are
 * owned by the registry and stay valid for the life of the process (entries
 * are only ever appended).  Paths containing '/' are stored absolute
 * (realpath), bare names as given (dlopen searched the library path). */
size_t pool__registry_plugins(const char ***paths);

/* Every registration (a new name or a replacement) takes the next
 * generation number, starting at 1.  A pool records the generation when it
 * is created: a function whose generation is later was registered after its
 * workers were forked, and they may not have it. */
uint64_t pool__registry_generation(void);

/* pool_lookup, also setting *gen (may be NULL) to the function's generation
 * (0 when it is not registered). */
pool_fn_t pool__registry_lookup(const char *module, const char *name,
                                void **udata, uint64_t *gen);

/* Longest module or function name pool_register takes (bytes, without
 * the NUL). */
#define POOL__NAME_MAX 255

/* Most plugins one process can load (pool_plugin_load then fails with
 * PK_ELIMIT). */
#define POOL__MAX_PLUGINS 256

#endif /* POOL_REGISTRY_INT_H */
