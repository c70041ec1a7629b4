#!/usr/bin/python3
"""make_corpus.py - the pickles the unpickler is tested and fuzzed with.

Every pickle here was written by CPython (and numpy) itself, except a few
Python 2 pickles spelled out by hand (checked below to load in CPython).

    /usr/bin/python3 tests/fuzz/make_corpus.py          # writes the seed corpus
                                                        # tests/fuzz/corpus/unpickle
    /usr/bin/python3 tests/fuzz/make_corpus.py --c      # prints the C literals
                                                        # embedded in test_unpickle.c

Needs numpy (Debian's /usr/bin/python3 has it).
"""
import os
import pickle
import sys
import warnings

import numpy as np

warnings.simplefilter('ignore')


def rich():
    """A list touching every plain type and most opcodes (see check_rich)."""
    shared = [7, 'shared']
    return [None, True, False, 0, 1, 255, 256, 65535, 65536, -1, -2**31,
            2**31 - 1, 2**31, 2**63, -2**63 - 1, 2**100, 1.5, -0.0, 'abc',
            'é€😀', '\ud800', b'xy', b'', bytearray(b'ab'), (), (1,), (1, 2),
            (1, 2, 3), (1, 2, 3, 4), [], {}, {'a': 1, 2: 'b'}, {1, 2},
            frozenset({3}), 1+2j, shared, shared, 'x' * 256, b'y' * 256,
            frozenset(range(5)), 2**2048]


def pickles():
    """(name, bytes, comment) for every test pickle."""
    out = []

    def add(name, data, comment):
        out.append((name, data, comment))

    r = rich()
    for p in range(6):
        add('rich_p%d' % p, pickle.dumps(r, p), 'rich(), protocol %d' % p)
    lst = []
    lst.append(lst)
    d = {}
    d['self'] = d
    for p in (0, 2, 5):
        add('cycle_p%d' % p, pickle.dumps([lst, d], p),
            '[l, d] with l = [l], d = {"self": d}, protocol %d' % p)

    a = np.arange(6, dtype='<f8').reshape(2, 3)
    for p in range(6):
        add('np_c_p%d' % p, pickle.dumps(a, p),
            'np.arange(6.).reshape(2, 3), protocol %d' % p)
    add('np_f_p5', pickle.dumps(np.asfortranarray(a), 5),
        'Fortran-order (2, 3) array, protocol 5')
    add('np_f_p2', pickle.dumps(np.asfortranarray(a), 2),
        'Fortran-order (2, 3) array, protocol 2')
    add('np_view_p5', pickle.dumps(a[:, ::2], 5),
        'a[:, ::2] (non-contiguous), protocol 5')
    ro = np.arange(4, dtype='>i4')
    ro.flags.writeable = False
    add('np_ro_p5', pickle.dumps(ro, 5),
        'read-only big-endian int32 array, protocol 5 in band')
    add('np_oob_p5', pickle.dumps(a, 5, buffer_callback=lambda b: False),
        'a, protocol 5, data out of band')
    add('np_oob_ro_p5', pickle.dumps(ro, 5, buffer_callback=lambda b: False),
        'read-only array out of band')
    add('np_scalar_p2', pickle.dumps(np.float64(1.5), 2),
        'np.float64(1.5), protocol 2')
    add('np_scalar_p4', pickle.dumps(np.int16(-3), 4), 'np.int16(-3), protocol 4')
    add('np_dtype_meta', pickle.dumps(np.dtype('f4', metadata={'a': 1}), 4),
        'dtype f4 with metadata (state version 4)')
    add('np_dtype_u', pickle.dumps(np.array(['ab', 'c']), 4),
        "np.array(['ab', 'c']) (<U2)")
    add('np_bool', pickle.dumps(np.array([True, False]), 5), 'bool array')
    add('np_struct', pickle.dumps(np.zeros(2, dtype=[('a', 'i4'), ('b', 'f8')]), 4),
        'structured array')
    add('np_object', pickle.dumps(np.array([1, 'a'], dtype=object), 4),
        'object array')
    add('np_datetime', pickle.dumps(np.array(['2020-01-01'], dtype='M8[D]'), 4),
        'datetime64 array')
    add('np_empty', pickle.dumps(np.zeros((0, 3), dtype='u1'), 5),
        'empty (0, 3) uint8 array')
    add('np_3d', pickle.dumps(np.arange(24, dtype='i2').reshape(2, 3, 4)[:, 1:, ::2], 4),
        '3-d view')
    add('pb_inband', pickle.dumps([pickle.PickleBuffer(bytearray(b'abc')),
                                   pickle.PickleBuffer(b'de')], 5,
                                  buffer_callback=lambda b: True),
        'PickleBuffers in band (writable, read-only)')

    # numpy arrays as numpy 1.x under Python 2 wrote them.
    data = np.array([1.5, 2.0]).tobytes()
    py2 = (b'\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\n'
           b'q\x02K\x00\x85U\x01b\x87Rq\x03(K\x01K\x02\x85cnumpy\ndtype\nq\x04'
           b'U\x02f8K\x00K\x01\x87Rq\x05(K\x03U\x01<NNNJ\xff\xff\xff\xff'
           b'J\xff\xff\xff\xffK\x00tb\x89U\x10' + data + b'tb.')
    assert (pickle.loads(py2, encoding='latin1') == [1.5, 2.0]).all()
    add('py2_np_p2', py2,
        'numpy [1.5, 2.0] as Python 2 wrote it (protocol 2, SHORT_BINSTRING data)')
    esc = ''.join('\\x%02x' % b for b in data).encode()
    py2p0 = (b"cnumpy.core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n"
             b"(I0\ntp2\nS'b'\np3\ntp4\nRp5\n(I1\n(I2\ntp6\ncnumpy\ndtype\np7\n"
             b"(S'f8'\np8\nI0\nI1\ntp9\nRp10\n(I3\nS'<'\np11\nNNNI-1\nI-1\nI0\n"
             b"tp12\nbI00\nS'" + esc + b"'\np13\ntp14\nb.")
    assert (pickle.loads(py2p0, encoding='latin1') == [1.5, 2.0]).all()
    add('py2_np_p0', py2p0, 'the same as Python 2 protocol 0 wrote it')
    py2s = (b"(lp0\nS'caf\\xe9'\np1\naS'a\\n\\'\"\\\\\\101\\x41\\q'\np2\n"
            b"aU\x03\xe9t\x00aT\x02\x00\x00\x00hia.")
    assert pickle.loads(py2s, encoding='latin1') == [
        'café', 'a\n\'"\\AA\\q', 'ét\x00', 'hi']
    add('py2_str', py2s, 'Python 2 strs: STRING with escapes, SHORT_BINSTRING, '
        'BINSTRING')

    alloc_obj = {'a': [1, 'x' * 300, {'b': np.arange(4.0)}],
                 'c': (1.5, 'y', {1, 2}), 'n': np.float32(2.5), 'z': 2**70}
    add('alloc_p5', pickle.dumps(alloc_obj, 5),
        'nested dict/list/str/set/numpy for the allocation-failure test')
    add('alloc_p2', pickle.dumps(alloc_obj, 2), 'the same, protocol 2')
    return out


def c_literal(name, data, comment):
    toks = []
    for b in data:
        ch = chr(b)
        toks.append(ch if 0x20 <= b < 0x7f and ch not in '\\"?' else '\\%03o' % b)
    lines, cur = [], ''
    for t in toks:
        if len(cur) + len(t) > 72:
            lines.append('    "' + cur + '"')
            cur = ''
        cur += t
    lines.append('    "' + cur + '"')
    return '/* %s */\nstatic const char %s[] =\n%s;' % (comment, name,
                                                        '\n'.join(lines))


def main():
    if sys.argv[1:] == ['--c']:
        print('\n'.join(c_literal(*p) for p in pickles()))
        return
    here = os.path.dirname(os.path.abspath(__file__))
    dest = os.path.join(here, 'corpus', 'unpickle')
    os.makedirs(dest, exist_ok=True)
    for name, data, _ in pickles():
        with open(os.path.join(dest, name + '.pkl'), 'wb') as f:
            f.write(data)
    # A few more shapes of CPython output for the fuzzer to mutate.
    more = {
        'batches_p2': [list(range(1001)), {i: str(i) for i in range(1001)}],
        'batches_p4': [set(range(1001)), frozenset(range(3))],
        'strings_p5': ['s%03d' % i for i in range(300)] + ['s005'],
        'floats_p3': [0.1 * i for i in range(20)],
        'nested_p1': [[[[(1, 2.0, 'x')]]], {'k': ({},)}],
    }
    for name, obj in more.items():
        with open(os.path.join(dest, name + '.pkl'), 'wb') as f:
            f.write(pickle.dumps(obj, int(name[-1])))


if __name__ == '__main__':
    main()
