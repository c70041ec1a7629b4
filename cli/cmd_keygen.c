/*
 * cmd_keygen.c - `picklepool keygen`: make a CURVE key pair as files.
 *
 *   picklepool keygen [--name NAME] [--force] DIR
 *
 * Writes DIR/NAME.key (the secret key, mode 0600) and DIR/NAME.pub (the
 * public key), creating DIR with mode 0700 when it is missing; the file
 * format and the directory rules are runtime/ipc/curve.h's.  NAME defaults
 * to this machine's short host name.  An existing NAME.key or NAME.pub is
 * left alone unless --force is given.  Prints the two paths and the public
 * key.  Exit status: 0 written, 1 failed (nothing new written), 2 bad usage.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ipc/curve.h"

/* This machine's short host name as a key name ('?' and the like become
 * '-'), or "host" when it has none usable. */
static void default_name(char *buf, size_t size)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    char *dot = strchr(host, '.');
    if (dot != NULL)
        *dot = '\0';
    size_t n = strlen(host);
    if (n > POOL_CURVE_NAME_MAX)
        n = POOL_CURVE_NAME_MAX;
    for (size_t i = 0; i < n; i++) {
        char c = host[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '_' || c == '-';
        host[i] = ok ? c : '-';
    }
    host[n] = '\0';
    snprintf(buf, size, "%.64s", pool__curve_name_ok(host) ? host : "host");
}

int pk__cmd_keygen(int argc, char **argv)
{
    const char *name = NULL, *dir = NULL;
    char defname[POOL_CURVE_NAME_MAX + 1];
    int force = 0, opts_done = 0;

    for (int i = 1; i < argc; i++) {
        const char *v;
        int missing = 0;

        if (!opts_done && strcmp(argv[i], "--") == 0) {
            opts_done = 1;
        } else if (!opts_done && strcmp(argv[i], "--force") == 0) {
            force = 1;
        } else if (!opts_done &&
                   (v = pk__cli_take_opt(argc, argv, &i, "--name", &missing))) {
            if (!pool__curve_name_ok(v))
                return pk__cli_usage_error(
                    "keygen: --name wants 1 to %d letters, digits, '.', '_' "
                    "or '-', not starting with '.', not '%s'",
                    POOL_CURVE_NAME_MAX, v);
            name = v;
        } else if (missing) {
            return pk__cli_usage_error("keygen: %s needs a value", argv[i]);
        } else if (!opts_done && argv[i][0] == '-' && argv[i][1] != '\0') {
            return pk__cli_usage_error("keygen: unknown option '%s'", argv[i]);
        } else if (dir == NULL) {
            dir = argv[i];
        } else {
            return pk__cli_usage_error("keygen: one directory only, got '%s' "
                                       "and '%s'",
                                       dir, argv[i]);
        }
    }
    if (dir == NULL || dir[0] == '\0')
        return pk__cli_usage_error("keygen: which directory? (DIR)");
    if (name == NULL) {
        default_name(defname, sizeof defname);
        name = defname;
    }

    char pub[POOL_CURVE_Z85_LEN + 1];
    pk_error_t err;
    pk_error_clear(&err);
    if (pool__curve_keygen(dir, name, force, pub, &err) != PK_OK) {
        pk__cli_report("keygen", &err);
        return PK_EXIT_FAIL;
    }
    printf("secret key: %s/%s.key (mode 0600: keep it on this machine)\n", dir,
           name);
    printf("public key: %s/%s.pub (copy it to the peers that must trust "
           "it)\n",
           dir, name);
    printf("%s\n", pub);
    return PK_EXIT_OK;
}
