"""The picklepool CLI's codec commands, driven against CPython's pickle.

`picklepool recode` must turn pickles CPython wrote at protocols 0-5 (plain or
gzip/bzip2/xz) into pickles CPython loads back equal, at every protocol the
encoder writes; refuse dangerous or broken input with one line on stderr and
no output file; and `picklepool inspect` must list the opcodes and flag the
globals decoding would call.  The binary is $PICKLEPOOL_BUILD/picklepool
(default build/picklepool); the module skips when it has not been built.
"""

import bz2
import gzip
import lzma
import os
import pickle
import pickletools
import stat
import subprocess
import sys
import threading
from collections import OrderedDict

import pytest

BINARY = os.path.join(os.environ.get("PICKLEPOOL_BUILD", "build"), "picklepool")

if not os.access(BINARY, os.X_OK):
    # under `make test` (PICKLEPOOL_BUILD set) a missing binary is a failure
    if os.environ.get("PICKLEPOOL_BUILD"):
        pytest.fail(f"{BINARY} has not been built", pytrace=False)
    pytest.skip(f"{BINARY} has not been built", allow_module_level=True)

OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
MAGIC = {".gz": b"\x1f\x8b", ".bz2": b"BZh", ".xz": b"\xfd7zXZ\x00"}

# os.system("echo pwned"), the classic.
EVIL = b"cos\nsystem\n(S'echo pwned'\ntR."


def sample():
    return {
        "none": None,
        "bools": [True, False],
        "ints": [0, 1, -1, 255, 256, 65535, -(2**31), 2**31, 2**63, -(2**64), 2**200],
        "floats": [0.0, -0.0, 1.5, 1e300, float("inf")],
        "str": ["", "ascii", "caf\u00e9", "\u20ac\U0001f600", "line\nbreak"],
        "bytes": [b"", b"\x00\xff", bytes(range(256))],
        "bytearray": bytearray(b"mutable"),
        "tuple": (1, (2, (3,)), ()),
        "set": {1, 2, 3},
        "frozenset": frozenset({"a", "b"}),
        "complex": 1 + 2j,
        "nested": [{"k": [i, str(i)]} for i in range(50)],
        "long_list": list(range(2500)),
    }


def run(*args, check=None):
    p = subprocess.run(
        [BINARY, *map(str, args)], capture_output=True, text=True, timeout=60
    )
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


def assert_refused(p, out):
    """Non-zero exit, exactly one line on stderr, and no output file."""
    assert p.returncode not in (0, 2), (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("picklepool: ")
    assert not os.path.exists(out)
    return lines[0]


# ---- refusals first ---------------------------------------------------------


def test_os_system_refused_nothing_written(tmp_path):
    src, out = tmp_path / "evil.pkl", tmp_path / "out.pkl"
    src.write_bytes(EVIL)
    line = assert_refused(run("recode", src, out), out)
    assert "os.system" in line
    assert "evil.pkl" in line


def test_refusal_keeps_existing_output(tmp_path):
    src, out = tmp_path / "evil.pkl", tmp_path / "out.pkl"
    src.write_bytes(EVIL)
    out.write_bytes(b"precious")
    p = run("recode", src, out)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1
    assert out.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["evil.pkl", "out.pkl"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage that is no pickle",
        b"\x80\x05\xff.",
        pickle.dumps(list(range(100)), protocol=5)[:-7],
        pickle.dumps("x" * 100, protocol=2)[:40],
        b"\x80\x04\x8c\xff" + b"a" * 10,
    ],
    ids=["empty", "garbage", "unknown-opcode", "truncated-5", "truncated-2", "long-len"],
)
def test_malformed_refused(tmp_path, data):
    src, out = tmp_path / "bad.pkl", tmp_path / "out.pkl"
    src.write_bytes(data)
    assert_refused(run("recode", src, out), out)


def test_corrupt_and_truncated_gzip_refused(tmp_path):
    good = gzip.compress(pickle.dumps(sample(), protocol=5))
    out = tmp_path / "out.pkl"
    src = tmp_path / "trunc.pkl.gz"
    src.write_bytes(good[: len(good) // 2])
    assert "gzip" in assert_refused(run("recode", src, out), out)
    bad = bytearray(good)
    for i in range(len(bad) // 3, len(bad) // 3 + 32):
        bad[i] ^= 0x5A
    src = tmp_path / "corrupt.pkl.gz"
    src.write_bytes(bytes(bad))
    assert_refused(run("recode", src, out), out)


def test_out_of_band_buffer_needed(tmp_path):
    data = pickle.dumps(
        pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=lambda b: False
    )
    assert b"\x97" in data  # NEXT_BUFFER
    src, out = tmp_path / "oob.pkl", tmp_path / "out.pkl"
    src.write_bytes(data)
    line = assert_refused(run("recode", src, out), out)
    assert "buffer" in line


def test_usage_errors():
    for args in [(), ("frobnicate",), ("recode",), ("recode", "in"),
                 ("recode", "--protocol", "9", "a", "b"),
                 ("recode", "--protocol", "x", "a", "b"),
                 ("recode", "--bogus", "a", "b"), ("inspect",),
                 ("inspect", "a", "b")]:
        p = run(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert "usage" in p.stderr
        assert p.stdout == ""


def test_help_and_version():
    p = run("--help", check=0)
    assert "recode" in p.stdout and "inspect" in p.stdout
    p = run("recode", "--help", check=0)
    assert "--protocol" in p.stdout
    p = run("version", check=0)
    assert p.stdout.startswith("picklepool ")


def test_missing_input(tmp_path):
    out = tmp_path / "out.pkl"
    line = assert_refused(run("recode", tmp_path / "nope.pkl", out), out)
    assert "nope.pkl" in line


# ---- round trips --------------------------------------------------------------


@pytest.mark.parametrize("in_proto", range(0, 6))
@pytest.mark.parametrize("out_proto", range(2, 6))
def test_recode_round_trip(tmp_path, in_proto, out_proto):
    value = sample()
    src, out = tmp_path / "in.pkl", tmp_path / "out.pkl"
    src.write_bytes(pickle.dumps(value, protocol=in_proto))
    run("recode", "--protocol", out_proto, src, out, check=0)
    data = out.read_bytes()
    assert data[:2] == bytes([0x80, out_proto])
    assert max(op.proto for op, _, _ in pickletools.genops(data)) <= out_proto
    with open(out, "rb") as f:
        assert pickle.load(f) == value


def test_recode_default_protocol_is_5(tmp_path):
    src, out = tmp_path / "in.pkl", tmp_path / "out.pkl"
    src.write_bytes(pickle.dumps([1, 2], protocol=2))
    run("recode", src, out, check=0)
    assert out.read_bytes()[:2] == b"\x80\x05"


def test_recode_is_byte_exact_for_plain_values(tmp_path):
    # The encoder promises CPython's exact bytes for plain values.  Values
    # here avoid CPython's shared singletons (1-char and empty strings).
    value = {"alpha": [10, 2.5, "beta", b"gamma", None, True], "delta": (1, 2)}
    for proto in range(2, 6):
        src, out = tmp_path / "in.pkl", tmp_path / f"out{proto}.pkl"
        src.write_bytes(pickle.dumps(value, protocol=5))
        run("recode", f"--protocol={proto}", src, out, check=0)
        assert out.read_bytes() == pickle.dumps(value, protocol=proto)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_compressed_in_and_out(tmp_path, suffix):
    value = sample()
    src = tmp_path / ("in.pkl" + suffix)
    with OPENERS[suffix](src, "wb") as f:
        pickle.dump(value, f, protocol=4)
    out = tmp_path / ("out.pkl" + suffix)
    run("recode", src, out, check=0)
    assert out.read_bytes()[: len(MAGIC[suffix])] == MAGIC[suffix]
    with OPENERS[suffix](out, "rb") as f:
        assert pickle.load(f) == value
    # Compressed in, plain out.
    plain = tmp_path / "plain.pkl"
    run("recode", src, plain, check=0)
    assert pickle.loads(plain.read_bytes()) == value
    assert os.listdir(tmp_path).count("plain.pkl") == 1


def test_concatenated_pickles(tmp_path):
    src, out = tmp_path / "in.pkl", tmp_path / "out.pkl"
    with open(src, "wb") as f:
        pickle.dump([1, 2], f, protocol=0)
        pickle.dump({"b": 3}, f, protocol=5)
    run("recode", src, out, check=0)
    with open(out, "rb") as f:
        assert pickle.load(f) == [1, 2]
        assert pickle.load(f) == {"b": 3}
        assert f.read() == b""


def test_stdin_to_stdout():
    data = pickle.dumps({"x": [1, 2, 3]}, protocol=1)
    p = subprocess.run([BINARY, "recode", "-", "-"], input=data,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert pickle.loads(p.stdout) == {"x": [1, 2, 3]}


def test_unencodable_at_lower_protocol_is_clear(tmp_path):
    # A global with a dotted qualname as a value: protocols < 4 have no
    # STACK_GLOBAL.  Either a clear refusal or a pickle that disassembles.
    src = tmp_path / "in.pkl"
    src.write_bytes(b"\x80\x04\x8c\x06mymodx\x8c\x0bOuter.Inner\x93.")
    out = tmp_path / "out.pkl"
    p = run("recode", "--protocol", "2", src, out)
    if p.returncode != 0:
        assert_refused(p, out)
    else:
        ops = [op.name for op, _, _ in pickletools.genops(out.read_bytes())]
        assert ops[-1] == "STOP"


# ---- numpy ----------------------------------------------------------------------


@pytest.mark.parametrize("in_proto", [2, 3, 4, 5])
@pytest.mark.parametrize("out_proto", [2, 4, 5])
def test_numpy_arrays(tmp_path, in_proto, out_proto):
    np = pytest.importorskip("numpy")
    value = {
        "f4": np.arange(12, dtype="<f4").reshape(3, 4),
        "i8": np.array([-1, 0, 2**40], dtype=np.int64),
        "u1": np.frombuffer(b"\x00\x01\xff", dtype=np.uint8),
        "c16": np.array([1 + 2j, -3.5j]),
        "bool": np.array([True, False, True]),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "empty": np.zeros((0, 3), dtype=np.int16),
        "big_endian": np.arange(4, dtype=">i4"),
        "scalar": np.float64(2.5),
    }
    src, out = tmp_path / "in.pkl", tmp_path / "out.pkl"
    src.write_bytes(pickle.dumps(value, protocol=in_proto))
    run("recode", "--protocol", out_proto, src, out, check=0)
    back = pickle.loads(out.read_bytes())
    # numpy's own round trip at out_proto is the reference (numpy 1.x loads
    # an in-band '>i4' array back as native int32, for one).
    ref = pickle.loads(pickle.dumps(value, protocol=out_proto))
    assert back.keys() == value.keys()
    for k, v in value.items():
        assert type(back[k]) is type(v), k
        assert back[k].dtype == ref[k].dtype, k
        assert back[k].shape == v.shape, k
        assert np.array_equal(back[k], v), k
    assert back["fortran"].flags.f_contiguous


# ---- inspect ----------------------------------------------------------------------


def test_inspect_flags_os_system(tmp_path):
    src = tmp_path / "evil.pkl"
    src.write_bytes(EVIL)
    p = run("inspect", src, check=4)  # 4: a known-dangerous call
    assert "GLOBAL" in p.stdout and "REDUCE" in p.stdout and "STOP" in p.stdout
    line = [ln for ln in p.stdout.splitlines() if "os.system:" in ln]
    assert len(line) == 1 and "would call: refused (DANGEROUS" in line[0], p.stdout
    assert p.stdout.splitlines()[-1].startswith("verdict: DANGEROUS: would call os.system")


@pytest.mark.parametrize("data,status,verdict", [
    (pickle.dumps([1, "x", (2.5,)], 4), 0, "verdict: safe: decoding calls nothing"),
    (pickle.dumps([{1}, OrderedDict(a=1)], 2), 0,
     "verdict: safe: decoding calls only allow-listed data constructors"),
    (b"\x80\x02cmymod\nmaker\n)R.", 3, "verdict: refused: would call "
     "what picklepool does not allow, mymod.maker"),
    (b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R.", 4,
     "verdict: DANGEROUS: would call builtins.eval"),
    (b"\x80\x02csubprocess\nPopen\n]\x85R.", 4,
     "verdict: DANGEROUS: would call subprocess.Popen"),
], ids=["nothing", "constructors", "unknown", "eval", "popen"])
def test_inspect_verdict_and_exit_status(tmp_path, data, status, verdict):
    src = tmp_path / "v.pkl"
    src.write_bytes(data)
    p = run("inspect", src, check=status)
    assert p.stdout.splitlines()[-1].startswith(verdict), p.stdout


def test_inspect_globals_only_is_short(tmp_path):
    src = tmp_path / "big.pkl"
    src.write_bytes(pickle.dumps([list(range(200000)), os.system], 4))
    full = run("inspect", src, check=0)
    p = run("inspect", "--globals", src, check=0)
    assert len(full.stdout.splitlines()) > 200000
    lines = p.stdout.splitlines()
    assert lines == ["globals:", "    posix.system: not called, kept as a reference",
                     "verdict: safe: decoding calls nothing"], p.stdout


def test_inspect_shows_python3_names(tmp_path):
    src = tmp_path / "py2.pkl"
    src.write_bytes(b"c__builtin__\nxrange\n(I3\ntR.")
    p = run("inspect", "--globals", src, check=0)
    assert "builtins.range (written as __builtin__.xrange): would call: " \
        "allowed" in p.stdout, p.stdout


def test_inspect_matches_pickletools(tmp_path, capsys):
    value = {"a": [1, 2.5, "x'", b"y"], "b": 2**70, "c": -1, "d": (None, True)}
    for proto in range(6):
        data = pickle.dumps(value, protocol=proto)
        src = tmp_path / f"p{proto}.pkl"
        src.write_bytes(data)
        p = run("inspect", src, check=0)
        pickletools.dis(data)
        want = capsys.readouterr().out
        # Same lines as pickletools (protocol 0 UNICODE args aside), then
        # picklepool's globals summary.
        assert p.stdout.startswith(want) or proto == 0, (p.stdout, want)
        assert "highest protocol among opcodes" in p.stdout
        assert "globals:" in p.stdout


def test_inspect_allowed_and_referenced_globals(tmp_path):
    src = tmp_path / "s.pkl"
    src.write_bytes(pickle.dumps([{1, 2}, complex(1, 2), OrderedDict], protocol=2))
    p = run("inspect", src, check=0)
    assert "builtins.set (written as __builtin__.set): would call: allowed" \
        in p.stdout
    assert "complex (written as __builtin__.complex): would call: allowed" in p.stdout
    assert "collections.OrderedDict: not called" in p.stdout


def test_inspect_compressed(tmp_path):
    src = tmp_path / "evil.pkl.xz"
    src.write_bytes(lzma.compress(EVIL))
    p = run("inspect", src, check=4)
    assert "would call: refused" in p.stdout


def test_inspect_truncated(tmp_path):
    data = pickle.dumps(sample(), protocol=5)
    src = tmp_path / "t.pkl"
    src.write_bytes(data[: len(data) // 2])
    p = run("inspect", src)
    assert p.returncode == 1
    assert "PROTO" in p.stdout and "STOP" not in p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "truncated" in lines[0]


def test_inspect_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pkl"
    cmd = f"touch {marker}".encode()
    src.write_bytes(b"cos\nsystem\n(S'" + cmd + b"'\ntR.")
    run("inspect", src, check=4)
    assert_refused(run("recode", src, tmp_path / "o.pkl"), tmp_path / "o.pkl")
    assert not marker.exists()



def test_inspect_applies_python2_renames_like_the_decoder(tmp_path):
    # Below protocol 3 the decoder reads exceptions.ValueError as
    # builtins.ValueError (allowed); inspect must say the same.
    f = tmp_path / "py2.pkl"
    f.write_bytes(b"cexceptions\nValueError\n(S'x'\ntR.")
    p = run("inspect", f, check=0)
    assert "builtins.ValueError (written as exceptions.ValueError): would " \
        "call: allowed" in p.stdout
    assert pickle.loads(f.read_bytes()).args == ("x",)


# ---- Python 2 str encodings, help -----------------------------------------


PY2_LATIN1 = b"(lp0\nS'caf\xe9'\np1\naS'x'\np2\na."  # ['caf\xe9', 'x'] from Python 2


@pytest.mark.parametrize("encoding,want", [
    ("latin1", ["caf\xe9", "x"]), ("bytes", [b"caf\xe9", b"x"]),
])
def test_recode_encoding(tmp_path, encoding, want):
    src, dst = tmp_path / "py2.pkl", tmp_path / "o.pkl"
    src.write_bytes(PY2_LATIN1)
    assert_refused(run("recode", src, dst), dst)  # ASCII, as pickle.load
    run("recode", "--encoding", encoding, src, dst, check=0)
    assert pickle.loads(dst.read_bytes()) == want
    assert pickle.loads(PY2_LATIN1, encoding=encoding) == want
    p = run("recode", "--encoding=klingon", src, dst, check=2)
    assert "--encoding wants ASCII, latin1 or bytes" in p.stderr


def test_help_command():
    for cmd in ("recode", "inspect", "topo", "map", "demo", "version"):
        p = run("help", cmd, check=0)
        assert p.stdout.startswith("usage: picklepool " + cmd), p.stdout
        assert p.stdout == run(cmd, "--help", check=0).stdout
    p = run("help", "nope", check=2)
    assert "unknown command 'nope'" in p.stderr


# ---- where OUT is (issue 15) ------------------------------------------------


def test_out_symlink_to_a_device_is_written_through(tmp_path):
    """A special file is written in place, never replaced by a regular file;
    a symlink to one stays a symlink (the device is /dev/null, reached
    through a link so that a failure cannot replace /dev/null itself)."""
    src, link = tmp_path / "in.pkl", tmp_path / "devlink"
    src.write_bytes(pickle.dumps(sample(), protocol=5))
    link.symlink_to("/dev/null")
    run("recode", src, link, check=0)
    assert os.path.islink(link) and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_out_fifo_is_written_in_place(tmp_path):
    src, fifo, ref = tmp_path / "in.pkl", tmp_path / "fifo", tmp_path / "r.pkl"
    src.write_bytes(pickle.dumps(sample(), protocol=2))
    run("recode", src, ref, check=0)
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    run("recode", src, fifo, check=0)
    reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [ref.read_bytes()]


def test_out_symlink_is_followed(tmp_path):
    src = tmp_path / "in.pkl"
    src.write_bytes(pickle.dumps(sample(), protocol=5))
    (tmp_path / "d").mkdir()
    link, target = tmp_path / "link.pkl", tmp_path / "d" / "t.pkl"
    target.write_bytes(b"old")
    link.symlink_to("d/t.pkl")  # relative to the link's directory
    run("recode", src, link, check=0)
    assert os.path.islink(link) and os.readlink(link) == "d/t.pkl"
    assert pickle.loads(target.read_bytes()) == pickle.loads(src.read_bytes())
    # a dangling link gets its target created, as a shell's `>` does
    dangling = tmp_path / "dangling.pkl"
    dangling.symlink_to("new.pkl")
    run("recode", src, dangling, check=0)
    assert os.path.islink(dangling)
    assert (tmp_path / "new.pkl").read_bytes() == target.read_bytes()
    assert sorted(os.listdir(tmp_path)) == [
        "d", "dangling.pkl", "in.pkl", "link.pkl", "new.pkl"]


# ---- the input limit (issue 15) --------------------------------------------


# ASan's shadow memory and quarantine keep freed memory resident: the peak
# RSS bounds below are checked in the plain build (as in test_map_cli.py).
RSS_CHECKED = os.environ.get("PICKLEPOOL_SANITIZER") != "address"


def _peak_rss_mb(*args):
    """Runs the CLI in a fresh Python whose only child it is; returns
    (completed process, peak RSS of the CLI in MiB)."""
    code = ("import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "sys.stdout.write('%d %d\\n' % (p.returncode, resource.getrusage("
            "resource.RUSAGE_CHILDREN).ru_maxrss))\n"
            "sys.stdout.write(p.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, os.path.abspath(BINARY),
                        *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    head, _, err = p.stdout.partition("\n")
    rc, kb = map(int, head.split())
    return rc, int(kb) // 1024, err


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_decompression_bomb_stops_at_the_limit(tmp_path, suffix):
    """32 MiB of zeros compressed: past --max-input 2M it fails naming the
    limit and the option, having held about the limit, not the 32 MiB."""
    bomb = tmp_path / ("bomb" + suffix)
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
    with opener(bomb, "wb") as f:
        for _ in range(32):
            f.write(bytes(1 << 20))
    rc, mb, err = _peak_rss_mb("recode", "--max-input", "2M", bomb,
                               tmp_path / "out.pkl")
    assert rc == 1, err
    assert "input limit of 2.0 MiB" in err and "--max-input" in err, err
    assert mb < 24 or not RSS_CHECKED, "%d MiB for a 2 MiB limit" % mb
    assert not (tmp_path / "out.pkl").exists()


def test_endless_input_stops_at_the_limit(tmp_path):
    rc, mb, err = _peak_rss_mb("recode", "--max-input", "4M", "/dev/zero",
                               tmp_path / "out.pkl")
    assert rc == 1 and "input limit of 4.0 MiB" in err, err
    assert mb < 32 or not RSS_CHECKED, mb
    p = run("inspect", "--max-input=4M", "/dev/zero", check=1)
    assert "input limit" in p.stderr
    # raising the limit is what the message says to do
    src = tmp_path / "in.pkl"
    src.write_bytes(pickle.dumps(bytes(100000)))
    p = run("recode", "--max-input", "50k", src, tmp_path / "o.pkl", check=1)
    assert "--max-input" in p.stderr
    run("recode", "--max-input", "1M", src, tmp_path / "o.pkl", check=0)


@pytest.mark.parametrize("bad", ["0", "-1", "1X", "k", "99999999999T", ""])
def test_max_input_must_be_a_size(tmp_path, bad):
    p = run("recode", "--max-input", bad, "a", "b", check=2)
    assert "--max-input" in p.stderr


def test_numpy_size_mismatch_names_its_unit(tmp_path):
    np = pytest.importorskip("numpy")
    from numpy.core.multiarray import _reconstruct

    class Fake:
        def __reduce__(self):
            state = (1, (1 << 39,), np.dtype("f8"), False, bytes(32))
            return _reconstruct, (np.ndarray, (0,), b"b"), state

    src = tmp_path / "bad.pkl"
    src.write_bytes(pickle.dumps(Fake(), protocol=2))
    p = run("recode", src, tmp_path / "o.pkl", check=1)
    assert "32 data bytes for an array of 4398046511104 bytes" in p.stderr


# ---- inspect agrees with recode on frames (issue 15) ------------------------


def test_inspect_refuses_the_frames_recode_refuses(tmp_path):
    big = tmp_path / "frame.pkl"
    big.write_bytes(b"\x80\x04\x95" + (1 << 62).to_bytes(8, "little") + b"N.")
    rec = run("recode", big, tmp_path / "o.pkl", check=1)
    ins = run("inspect", big, check=1)
    assert "frame of 4611686018427387904 bytes" in rec.stderr
    assert "frame of 4611686018427387904 bytes" in ins.stderr
    nested = tmp_path / "nested.pkl"
    nested.write_bytes(b"\x80\x04\x95\x0b" + bytes(7) + b"\x95\x01" + bytes(7)
                       + b"N.")
    assert "new frame" in run("recode", nested, tmp_path / "o.pkl",
                              check=1).stderr
    assert "new frame" in run("inspect", nested, check=1).stderr
