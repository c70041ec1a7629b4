"""`picklepool keygen DIR`: the CURVE key pair files, as a user runs it.

The files' format, modes and the refusals (an existing pair without
--force, a bad name, a directory others can write to), the usage errors,
and `help keygen`.  The key files' loading is tests/test_curve.c's.  The
binary is $PICKLEPOOL_BUILD/picklepool (default build/picklepool).
"""

import os
import socket
import stat
import subprocess

import pytest

BINARY = os.path.abspath(
    os.path.join(os.environ.get("PICKLEPOOL_BUILD", "build"), "picklepool"))

if not os.access(BINARY, os.X_OK):
    if os.environ.get("PICKLEPOOL_BUILD"):
        pytest.fail(f"{BINARY} has not been built", pytrace=False)
    pytest.skip(f"{BINARY} has not been built", allow_module_level=True)

Z85 = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
          ".-:+=^!/*?&<>()[]{}@%$#")


def run(*args):
    return subprocess.run([BINARY, *map(str, args)], capture_output=True,
                          text=True, timeout=30)


def key_of(path):
    """The key line of a key file (comments start with '#')."""
    with open(path) as f:
        lines = [ln.strip() for ln in f if ln.strip()
                 and not ln.startswith("#")]
    assert len(lines) == 1, lines
    assert len(lines[0]) == 40 and set(lines[0]) <= Z85, lines[0]
    return lines[0]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_help():
    p = run("help", "keygen")
    assert p.returncode == 0
    assert "usage: picklepool keygen [--name NAME] [--force] DIR" in p.stdout
    assert "allow-list" in p.stdout
    p = run("keygen", "--help")
    assert p.returncode == 0 and "NAME.key" in p.stdout
    assert "keygen" in run("help").stdout


def test_writes_a_pair(tmp_path):
    d = tmp_path / "keys"
    p = run("keygen", "--name", "master", d)
    assert p.returncode == 0, p.stderr
    assert mode(d) == 0o700
    assert mode(d / "master.key") == 0o600
    assert mode(d / "master.pub") == 0o644
    pub, sec = key_of(d / "master.pub"), key_of(d / "master.key")
    assert pub != sec
    out = p.stdout.splitlines()
    assert out[-1] == pub  # the public key, last, alone on its line
    assert str(d / "master.key") in p.stdout and "0600" in p.stdout
    assert sorted(os.listdir(d)) == ["master.key", "master.pub"]
    # a second pair beside it; hosts' public keys share the directory
    p = run("keygen", "--name=host-1", d)
    assert p.returncode == 0, p.stderr
    assert key_of(d / "host-1.pub") != pub
    assert sorted(os.listdir(d)) == ["host-1.key", "host-1.pub",
                                     "master.key", "master.pub"]


def test_refuses_to_overwrite(tmp_path):
    d = tmp_path / "keys"
    assert run("keygen", "--name", "w", d).returncode == 0
    before = (d / "w.key").read_text(), (d / "w.pub").read_text()
    p = run("keygen", "--name", "w", d)
    assert p.returncode == 1
    assert "w.key already exists (--force replaces it)" in p.stderr
    assert ((d / "w.key").read_text(), (d / "w.pub").read_text()) == before
    p = run("keygen", "--force", "--name", "w", d)
    assert p.returncode == 0, p.stderr
    assert key_of(d / "w.pub") not in before[1]
    assert mode(d / "w.key") == 0o600
    assert sorted(os.listdir(d)) == ["w.key", "w.pub"]


def test_default_name_is_the_host(tmp_path):
    p = run("keygen", tmp_path / "k")
    assert p.returncode == 0, p.stderr
    host = socket.gethostname().split(".")[0]
    expect = host if host and all(c.isalnum() or c in "_-" for c in host) \
        else None
    names = os.listdir(tmp_path / "k")
    assert len(names) == 2
    if expect is not None:
        assert sorted(names) == [expect + ".key", expect + ".pub"]


@pytest.mark.parametrize("args,what", [
    ([], "which directory?"),
    (["--name"], "--name needs a value"),
    (["--name", ".x", "d"], "--name wants 1 to 64 letters"),
    (["--name", "a/b", "d"], "--name wants 1 to 64 letters"),
    (["--name", "x" * 65, "d"], "--name wants 1 to 64 letters"),
    (["--bogus", "d"], "unknown option '--bogus'"),
    (["d1", "d2"], "one directory only"),
])
def test_usage_errors(tmp_path, args, what):
    p = subprocess.run([BINARY, "keygen", *args], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 2
    assert what in p.stderr
    assert "usage: picklepool keygen" in p.stderr
    assert os.listdir(tmp_path) == []


def test_refused_directories(tmp_path):
    p = run("keygen", "--name", "x", tmp_path / "no" / "such")
    assert p.returncode == 1 and "cannot create" in p.stderr
    opened = tmp_path / "open"
    opened.mkdir()
    opened.chmod(0o777)
    p = run("keygen", "--name", "x", opened)
    assert p.returncode == 1
    assert "writable by group or others (mode 0777)" in p.stderr
    assert "chmod go-w" in p.stderr
    assert os.listdir(opened) == []
    f = tmp_path / "file"
    f.write_text("")
    p = run("keygen", "--name", "x", f)
    assert p.returncode == 1 and "not a directory" in p.stderr
    # "--" ends the options: a directory named like one
    p = subprocess.run([BINARY, "keygen", "--name", "x", "--", "-dir"],
                       capture_output=True, text=True, timeout=30,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "-dir")) == ["x.key", "x.pub"]
