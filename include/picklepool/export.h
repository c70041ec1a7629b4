/*
 * picklepool/export.h - PK_API, the mark of a public function.
 *
 * The library is compiled with -fvisibility=hidden: a function is exported
 * from libpicklepool.so (and from an executable linked with -rdynamic, where
 * plugins find it) only when its declaration in a public header carries
 * PK_API.  Internal pk__* / pool__* functions never do.  `make test` checks
 * both ways (scripts/check_exports.py).  A plugin compiled with
 * -fvisibility=hidden may mark its `picklepool_plugin_init` with PK_API too.
 *
 * Thread-safety: declarations only.  Fork-safe.
 */
#ifndef PICKLEPOOL_EXPORT_H
#define PICKLEPOOL_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define PK_API __attribute__((visibility("default")))
#else
#define PK_API
#endif

#endif /* PICKLEPOOL_EXPORT_H */
