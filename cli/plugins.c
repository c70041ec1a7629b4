/*
 * plugins.c - what the CLI tells about plugins: `picklepool map --list`,
 * and which class a kernel's error names.
 *
 * A plugin may export POOL_PLUGIN_DOC_SYMBOL, a NULL-terminated table of
 * one line per function; --list loads each plugin (found by name like any
 * --plugin) and prints those lines under the module's name.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "codec/compat_names.h"
#include "core/common.h"
#include "picklepool/registry.h"

int pk__cli_builtin_exception(const char *name)
{
    for (size_t i = 0; i < PK_ARRAY_LEN(PK_BUILTIN_EXCEPTIONS); i++)
        if (strcmp(PK_BUILTIN_EXCEPTIONS[i], name) == 0)
            return 1;
    return 0;
}

/* Prints the doc table of the plugin at `path`, as functions of `module`. */
static int list_one(const char *path)
{
    const char *base = strrchr(path, '/'), *dot;
    char module[256];
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    const char *const *doc =
        h != NULL ? (const char *const *)dlsym(h, POOL_PLUGIN_DOC_SYMBOL)
                  : NULL;

    base = base != NULL ? base + 1 : path;
    dot = strstr(base, ".so");
    snprintf(module, sizeof module, "%.*s",
             (int)(dot != NULL ? dot - base : (ptrdiff_t)strlen(base)), base);
    printf("%s (%s):\n", module, path);
    if (doc == NULL)
        printf("  (no %s table: see the plugin's source)\n",
               POOL_PLUGIN_DOC_SYMBOL);
    for (size_t i = 0; doc != NULL && doc[i] != NULL; i++)
        printf("  %s.%s\n", module, doc[i]);
    if (h != NULL)
        dlclose(h);
    return PK_EXIT_OK;
}

int pk__cli_list_plugins(const char *const *names, size_t n)
{
    static const char *const fallback[] = {"examples"};
    char path[PATH_MAX];
    pk_error_t err;

    if (n == 0) {
        names = fallback;
        n = 1;
    }
    for (size_t i = 0; i < n; i++) {
        pk_error_clear(&err);
        if (pool_plugin_find(names[i], path, sizeof path, &err) != PK_OK ||
            pool_plugin_load(path, &err) != PK_OK) {
            pk__cli_report("map --list", &err);
            return PK_EXIT_FAIL;
        }
        list_one(path);
    }
    return PK_EXIT_OK;
}
