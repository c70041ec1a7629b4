/*
 * stdlib.c - the standard library's plain data types that pickles carry.
 *
 * PyTorch state_dicts are OrderedDicts; configs and data frames carry dates,
 * times, timedeltas, Decimals and UUIDs.  pk_loads reads them without running
 * anything: each class below is allow-listed with the arguments CPython's
 * __reduce__ writes for it, and becomes a PK_OBJECT holding that call (and,
 * for the containers, the items the pickle appends), which the encoder writes
 * back as CPython would.  Nothing is interpreted: a date stays its 4 packed
 * bytes, a Decimal its string.
 *
 *   collections.OrderedDict  ()                      + SETITEMS: items dict
 *   collections.deque        () | ((), maxlen)       + APPENDS: items list
 *   datetime.date            (bytes,)
 *   datetime.time            (bytes[, tzinfo])
 *   datetime.datetime        (bytes[, tzinfo])
 *   datetime.timedelta       (days, seconds, microseconds)
 *   datetime.timezone        (timedelta[, name])
 *   decimal.Decimal          (str,)
 *   uuid.UUID                NEWOBJ () + BUILD {'int': n[, 'is_safe': ...]}
 *   uuid.SafeUUID            (0 | -1 | None,)        (the enum in is_safe)
 *   builtins.range           (start, stop, step)
 *   builtins.slice           (start, stop, step)
 *
 * Python 2 wrote OrderedDict((items,)) and deque((items[, maxlen])): those
 * arguments move into the items, so the object re-encodes as CPython 3 would
 * write what it loaded.
 */
#include <string.h>

#include "codec/npy.h"

/* Argument type letters: b bytes (or str: a Python 2 str read as text),
 * i int, s str, z str or None, n int or None, a anything, d timedelta,
 * t tzinfo (a timezone object) or None. */
static const struct stdlib_class {
    const char *module, *name;
    const char *args; /* one letter per argument */
    unsigned min_args;
    pk__callable_t kind;
} classes[] = {
    {"collections", "OrderedDict", "a", 0, PK__CALL_STDLIB},
    {"collections", "deque", "an", 0, PK__CALL_STDLIB},
    {"datetime", "date", "b", 1, PK__CALL_STDLIB},
    {"datetime", "time", "bt", 1, PK__CALL_STDLIB},
    {"datetime", "datetime", "bt", 1, PK__CALL_STDLIB},
    {"datetime", "timedelta", "iii", 3, PK__CALL_STDLIB},
    {"datetime", "timezone", "ds", 1, PK__CALL_STDLIB},
    {"decimal", "Decimal", "s", 1, PK__CALL_STDLIB},
    {"uuid", "UUID", "", 0, PK__CALL_STDLIB_NEWOBJ},
    {"uuid", "SafeUUID", "n", 1, PK__CALL_STDLIB},
    {"builtins", "range", "iii", 3, PK__CALL_STDLIB},
    {"builtins", "slice", "aaa", 3, PK__CALL_STDLIB},
};

static const struct stdlib_class *find(const char *module, const char *name)
{
    for (size_t i = 0; i < PK_ARRAY_LEN(classes); i++)
        if (strcmp(classes[i].name, name) == 0 &&
            strcmp(classes[i].module, module) == 0)
            return &classes[i];
    return NULL;
}

pk__callable_t pk__stdlib_lookup(const char *module, const char *name)
{
    const struct stdlib_class *c = find(module, name);
    return c != NULL ? c->kind : PK__CALL_NONE;
}

/* Non-zero when v is a PK_OBJECT made by datetime.<name>. */
static int is_datetime_object(const pk_value_t *v, const char *name)
{
    if (v->type != PK_OBJECT)
        return 0;
    const pk_value_t *g = v->u.obj.callable;
    return strcmp(g->u.global.module, "datetime") == 0 &&
           strcmp(g->u.global.name, name) == 0;
}

static int arg_ok(char letter, const pk_value_t *v)
{
    pk_type_t t = (pk_type_t)v->type;
    switch (letter) {
    case 'b':
        return t == PK_BYTES || t == PK_STR;
    case 'i':
        return t == PK_INT || t == PK_BIGINT || t == PK_BOOL;
    case 's':
        return t == PK_STR;
    case 'n':
        return t == PK_INT || t == PK_NONE;
    case 'd':
        return is_datetime_object(v, "timedelta");
    case 't':
        return t == PK_NONE || is_datetime_object(v, "timezone");
    default:
        return 1;
    }
}

/* Moves the items of `it` (a list or tuple; a list of pairs for a dict)
 * into the new container *items of `type`. */
static pk_err_t take_items(pk_doc_t *doc, const char *what,
                           const pk_value_t *it, pk_type_t type,
                           pk_value_t **items, pk_error_t *err)
{
    if (it->type != PK_LIST && it->type != PK_TUPLE)
        return pk__err(err, PK_EPICKLE, "%s: items are a %s, not a list", what,
                       pk_type_name((pk_type_t)it->type));
    size_t n = it->u.seq.len;
    pk_err_t rc = PK_OK;
    if (type == PK_LIST) {
        *items = pk_list_new(doc, n);
        for (size_t i = 0; *items && i < n && rc == PK_OK; i++)
            rc = pk_list_append(doc, *items, it->u.seq.items[i]);
    } else {
        *items = pk_dict_new(doc, n);
        for (size_t i = 0; *items && i < n && rc == PK_OK; i++) {
            const pk_value_t *kv = it->u.seq.items[i];
            if ((kv->type != PK_LIST && kv->type != PK_TUPLE) ||
                kv->u.seq.len != 2)
                return pk__err(err, PK_EPICKLE,
                               "%s: item %zu is not a (key, value) pair", what,
                               i);
            rc = pk_dict_set(doc, *items, kv->u.seq.items[0],
                             kv->u.seq.items[1]);
        }
    }
    if (*items == NULL || rc == PK_ENOMEM)
        return pk__err(err, PK_ENOMEM, "out of memory");
    if (rc != PK_OK)
        return pk__err(err, rc, "%s: %s", what, pk_strerror(rc));
    return PK_OK;
}

pk_err_t pk__stdlib_call(pk_doc_t *doc, pk_value_t *cls, const pk_value_t *args,
                         int newobj, pk_value_t **out, pk_error_t *err)
{
    const char *module = cls->u.global.module, *name = cls->u.global.name;
    const struct stdlib_class *c = find(module, name);
    char what[240];
    size_t n = args->u.seq.len, max;

    snprintf(what, sizeof what, "%.110s.%.110s", module, name);
    if (c == NULL)
        return pk__err(err, PK_EREFUSED, "refusing to call %s", what);
    if (newobj != (c->kind == PK__CALL_STDLIB_NEWOBJ))
        return pk__err(err, PK_EPICKLE, "%s is not rebuilt by %s", what,
                       newobj ? "NEWOBJ" : "a call");
    max = strlen(c->args);
    if (n < c->min_args || n > max)
        return pk__err(err, PK_EPICKLE,
                       "%s takes %u to %zu arguments in a pickle, not %zu",
                       what, c->min_args, max, n);
    for (size_t i = 0; i < n; i++)
        if (!arg_ok(c->args[i], args->u.seq.items[i]))
            return pk__err(err, PK_EPICKLE, "%s: argument %zu is a %s", what,
                           i + 1,
                           pk_type_name((pk_type_t)args->u.seq.items[i]->type));

    /* The containers: an iterable argument becomes the items, and the call
     * keeps what CPython 3 writes: () or, for a bounded deque, ((), maxlen). */
    int odict = strcmp(name, "OrderedDict") == 0;
    int deque = strcmp(name, "deque") == 0;
    pk_value_t *items = NULL, *call_args = (pk_value_t *)args;
    if (odict || deque) {
        static const pk_value_t empty_list = {.type = PK_LIST};
        const pk_value_t *it = n > 0 ? args->u.seq.items[0] : &empty_list;
        pk_err_t rc =
            take_items(doc, what, it, odict ? PK_DICT : PK_LIST, &items, err);
        if (rc != PK_OK)
            return rc;
        int bounded = deque && n == 2 && args->u.seq.items[1]->type != PK_NONE;
        int as_written =
            (n == 0) || (bounded && it->type == PK_TUPLE && it->u.seq.len == 0);
        if (!as_written) {
            call_args = pk_tuple_new(doc, bounded ? 2 : 0);
            pk_value_t *no_items = bounded ? pk_tuple_new(doc, 0) : NULL;
            if (call_args == NULL || (bounded && no_items == NULL))
                return pk__err(err, PK_ENOMEM, "out of memory");
            if (bounded) {
                pk_tuple_set(call_args, 0, no_items);
                pk_tuple_set(call_args, 1, args->u.seq.items[1]);
            }
        }
    }
    pk_value_t *v = pk_object(doc, cls, call_args, NULL);
    if (v == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    v->u.obj.items = items;
    if (newobj)
        v->flags |= PK_VF_NEWOBJ;
    *out = v;
    return PK_OK;
}
