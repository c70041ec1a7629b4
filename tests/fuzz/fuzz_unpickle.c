/*
 * fuzz_unpickle.c - libFuzzer target for pk_loads.
 *
 * Decodes the input as a stream of concatenated pickles with small limits,
 * once without out-of-band buffers and once with two fake ones (one writable,
 * one read-only), and renders what decoded with pk_repr so that every value
 * the decoder builds is walked.  Any crash, sanitizer report, hang or leak is
 * a bug.  Built by `make fuzz`; replayed over the corpus by `make test`
 * through replay_main.c.
 */
#include <stddef.h>
#include <stdint.h>

#include "picklepool/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_all(const uint8_t *data, size_t size,
                       const pk_load_opts_t *o)
{
    pk_doc_t *doc = NULL;
    if (pk_doc_new(&doc) != PK_OK)
        return;
    size_t off = 0;
    for (int k = 0; k < 4 && off < size; k++) {
        pk_value_t *v = NULL;
        size_t used = 0;
        pk_error_t err;
        char buf[512];
        if (pk_loads(doc, data + off, size - off, o, &v, &used, &err) != PK_OK)
            break;
        pk_repr(v, buf, sizeof(buf));
        if (used == 0)
            __builtin_trap(); /* consumed includes STOP: never 0 */
        off += used;
    }
    pk_doc_free(&doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t fake[2][64];
    pk_buffer_t bufs[2] = {{fake[0], sizeof(fake[0]), 0}, {fake[1], 48, 1}};
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.max_depth = 64;
    o.max_memo = 4096;
    o.max_stack = 1 << 16;
    o.max_ops = 1 << 20;
    o.encoding = (pk_str_encoding_t)(size % 3);
    decode_all(data, size, &o);
    o.buffers = bufs;
    o.nbuffers = 2;
    decode_all(data, size, &o);
    return 0;
}
