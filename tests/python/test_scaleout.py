"""Scale-out: `picklepool serve`, host agents (`picklepool worker`) and
remote pools (Pool(address=...)), on several hosts made from network
namespaces (clusterlib.NetnsCluster), a real one-node Slurm and mpirun.

- two hosts complete a map in order, each item exactly once;
- one host's link is cut mid-map: serve declares it gone within its
  liveness, sends its batches to the other, and the map completes with
  every result once and in order;
- a host whose key is not allow-listed is refused at the handshake, says
  so and exits, and never runs an item;
- clients without a key, with plain tcp against CURVE, with a refused key
  or without master.pub get a clear error from Pool() within seconds;
- `srun -n2 picklepool worker` and `mpirun -n 2 picklepool worker` join a
  serve as "HOST rank 0/1" and run a map.

Heartbeats are 0.2 s x 3, so a host is declared gone in 0.6 s.  Garbage
and oversized frames from an authenticated peer are tests/test_serve.c's
(C, run under the sanitizers).  Where a harness cannot start here, its
test skips saying why.
"""

import os
import signal
import subprocess
import textwrap
import time

import pytest

import clusterlib
from clusterlib import NetnsCluster, SlurmCluster, Unavailable, free_port
from pyhelpers import PYTHON, ROOT, env, library  # noqa: F401

BUILD = os.path.abspath(os.environ.get("PICKLEPOOL_BUILD",
                                       os.path.join(ROOT, "build")))
CLI = os.path.join(BUILD, "picklepool")
HEARTBEAT = ["--heartbeat", "0.2", "--liveness", "3"]


def keygen(d, name):
    subprocess.run([CLI, "keygen", "--name", name, d], check=True,
                   capture_output=True, timeout=20)


@pytest.fixture
def keys(tmp_path):
    """Key directories: the master's (allow-listing h0, h1 and client), one
    per host, the client's, and a stranger's (its own pair and master.pub,
    but not allow-listed)."""
    d = {k: str(tmp_path / k) for k in ("master", "h0", "h1", "client",
                                         "stranger")}
    keygen(d["master"], "master")
    for k in ("h0", "h1", "client", "stranger"):
        keygen(d[k], k)
        with open(os.path.join(d["master"], "master.pub")) as f:
            pub = f.read()
        with open(os.path.join(d[k], "master.pub"), "w") as f:
            f.write(pub)
        if k != "stranger":
            with open(os.path.join(d[k], k + ".pub")) as f:
                mine = f.read()
            with open(os.path.join(d["master"], k + ".pub"), "w") as f:
                f.write(mine)
    return d


class Proc:
    """A background process whose stderr goes to a file (read with
    .err()), stopped with SIGTERM then SIGKILL on every exit path."""

    def __init__(self, argv, log, popen=subprocess.Popen, **kw):
        self.log = log
        self.f = open(log, "w")
        self.p = popen(argv, stdout=subprocess.PIPE, stderr=self.f,
                       stdin=subprocess.DEVNULL, text=True, **kw)

    def err(self):
        with open(self.log) as f:
            return f.read()

    def wait_err(self, text, timeout=15.0):
        """Waits until stderr holds `text`; fails with the log if not."""
        deadline = time.monotonic() + timeout
        while text not in self.err():
            if time.monotonic() > deadline:
                pytest.fail("no %r within %ss; log:\n%s"
                            % (text, timeout, self.err()))
            time.sleep(0.05)

    def stop(self):
        clusterlib._stop(self.p)
        self.p.stdout.close()
        self.f.close()


def start_serve(procs, tmp, addr, keydir, extra=()):
    """serve on addr (a free port), waited for until it listens; returns
    (Proc, endpoint)."""
    port = free_port(addr) if addr.startswith("127.") else free_port()
    ep = "tcp://%s:%d" % (addr, port)
    s = Proc([CLI, "serve", "--bind", ep, "--keys", keydir] + HEARTBEAT +
             list(extra), os.path.join(tmp, "serve.log"))
    procs.append(s)
    line = s.p.stdout.readline()
    if "listening on" not in line:
        pytest.fail("serve did not start: %r\n%s" % (line, s.err()))
    return s, ep


def host_argv(ep, keydir, name, extra=()):
    return [CLI, "worker", "--connect", ep, "--keys", keydir, "--plugin",
            "examples", "--workers", "1", "--python", PYTHON, "--name",
            name] + list(extra)


def start_host(procs, tmp, host, ep, keydir, name):
    """A host agent inside `host` (a NetnsCluster Host, or None)."""
    argv = host_argv(ep, keydir, name)
    h = Proc(host.argv(argv) if host is not None else argv,
             os.path.join(tmp, name + ".log"), env=env())
    procs.append(h)
    return h


# A client: a remote pool in a child interpreter that prints one line per
# result (index and host), so a test can act mid-map, then "done".
CLIENT = """
import os, sys, time
from picklepool import Pool
ADDR, KEYS, N, DELAY = sys.argv[1], sys.argv[2], int(sys.argv[3]), \\
    float(sys.argv[4])

def work(x):
    time.sleep(DELAY)
    return (x * x, os.environ.get("PICKLEPOOL_HOST"))

with Pool(address=ADDR, keys=KEYS, timeout=30) as pool:
    for i, (v, host) in enumerate(pool.imap(work, range(N), chunksize=1)):
        print(i, v, host, flush=True)
print("done", flush=True)
"""


def run_client(ep, keydir, n, delay, timeout=60, on_line=None):
    """Runs CLIENT; returns [(index, value, host)], calling on_line(k, line)
    for each result line k as it comes."""
    p = subprocess.Popen([PYTHON, "-c", CLIENT, ep, keydir, str(n),
                          str(delay)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env(),
                         cwd=ROOT)
    got = []
    try:
        deadline = time.monotonic() + timeout
        for line in p.stdout:
            if line.strip() == "done":
                break
            i, v, host = line.split(None, 2)
            got.append((int(i), int(v), host.strip()))
            if on_line is not None:
                on_line(len(got), line)
            if time.monotonic() > deadline:
                break
        rc = p.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if rc != 0:
        pytest.fail("client exit %s\n%s" % (rc, p.stderr.read()))
    p.stdout.close()
    p.stderr.close()
    return got


@pytest.fixture
def procs():
    """Background processes, stopped at the end of the test (last first)."""
    ps = []
    yield ps
    for p in reversed(ps):
        p.stop()


@pytest.fixture
def cluster():
    try:
        with NetnsCluster(2) as c:
            yield c
    except Unavailable as e:
        pytest.skip("network namespaces cannot be made here: %s" % e)


def check_results(got, n):
    """Every index once, in order, with its value."""
    assert [g[0] for g in got] == list(range(n))
    assert [g[1] for g in got] == [i * i for i in range(n)]


# ---- refusals first ---------------------------------------------------------


@pytest.mark.parametrize("args, what", [
    (["serve"], "where to listen"),
    (["serve", "--bind", "tcp://127.0.0.1:1"], "needs CURVE keys"),
    (["serve", "--bind", "tcp://127.0.0.1:1", "--keys", "k", "--insecure"],
     "choose one"),
    (["serve", "--bind", "tcp://127.0.0.1:1", "--heartbeat", "0"],
     "--heartbeat wants seconds"),
    (["serve", "--bind", "tcp://127.0.0.1:1", "--liveness", "x"],
     "--liveness wants"),
    (["serve", "--bind", "tcp://127.0.0.1:1", "--max-message", "big"],
     "--max-message wants"),
    (["serve", "--bind", "nope://x", "--insecure"], "nope://x"),
    (["serve", "--frob"], "unknown option '--frob'"),
    (["worker"], "which master"),
    (["worker", "--connect", "tcp://h:1", "--workers", "0"],
     "--workers wants"),
    (["worker", "--connect", "tcp://h:1", "--python", "python3"],
     "--python wants the path"),
    (["worker", "--connect", "tcp://h:1", "--name", "a\tb"], "--name wants"),
    (["worker", "--connect", "tcp:/h", "--insecure"], "tcp:/h"),
    (["worker", "--connect", "tcp://h:1", "--key", ".x"], "--key wants"),
])
def test_usage_errors(args, what):
    p = subprocess.run([CLI] + args, capture_output=True, text=True,
                       timeout=20)
    assert p.returncode in (1, 2), (args, p.returncode, p.stderr)
    assert what in p.stderr, (args, p.stderr)


def test_clients_refused_clearly(procs, keys, tmp_path):
    _, ep = start_serve(procs, str(tmp_path), "127.0.0.1", keys["master"])
    nopub = str(tmp_path / "nopub")
    keygen(nopub, "lonely")
    cases = [
        ("keys=None", "needs", "CURVE"),
        ("insecure=True", "want CURVE keys", None),
        ("keys=%r" % keys["stranger"], "not allow-listed", None),
        ("keys=%r" % nopub, "master.pub", None),
    ]
    for kw, want, also in cases:
        code = textwrap.dedent("""
            import time
            from picklepool import Pool
            t = time.monotonic()
            try:
                Pool(address=%r, %s)
            except Exception as e:
                print("%%.2f %%s: %%s" %% (time.monotonic() - t,
                                          type(e).__name__, e))
            else:
                print("no error")
            """ % (ep, kw))
        p = subprocess.run([PYTHON, "-c", code], capture_output=True,
                           text=True, timeout=60, env=env())
        out = p.stdout.strip()
        assert out != "no error" and out, (kw, out, p.stderr)
        secs, msg = out.split(" ", 1)
        assert float(secs) < 8.0, (kw, out)
        assert want in msg, (kw, msg)
        if also:
            assert also in msg, (kw, msg)


def test_stranger_host_never_runs_a_task(procs, keys, tmp_path):
    tmp = str(tmp_path)
    serve, ep = start_serve(procs, tmp, "127.0.0.1", keys["master"])
    good = start_host(procs, tmp, None, ep, keys["h0"], "good")
    good.wait_err("joined the master")
    bad = start_host(procs, tmp, None, ep, keys["stranger"], "stranger")
    try:
        rc = bad.p.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail("the refused host still runs:\n" + bad.err())
    assert rc == 1
    assert "the master refused our key: not allow-listed" in bad.err()
    assert "refused a peer" in serve.err()
    assert "stranger" not in serve.err().replace("key stranger", "")
    got = run_client(ep, keys["client"], 12, 0.0)
    check_results(got, 12)
    assert {g[2] for g in got} == {"good"}


def test_master_restarts_mid_map(procs, keys, tmp_path):
    """serve stops mid-map and starts again on the same port: the host and
    the client join again by themselves, and the client sends its batches
    again; the map completes in order."""
    tmp = str(tmp_path)
    serve, ep = start_serve(procs, tmp, "127.0.0.1", keys["master"])
    host = start_host(procs, tmp, None, ep, keys["h0"], "h0")
    host.wait_err("joined the master")
    restarted = []

    def on_line(k, line):
        if k == 5 and not restarted:
            serve.stop()
            again = Proc([CLI, "serve", "--bind", ep, "--keys",
                          keys["master"]] + HEARTBEAT,
                         os.path.join(tmp, "serve2.log"))
            procs.append(again)
            assert "listening" in again.p.stdout.readline()
            restarted.append(again)

    got = run_client(ep, keys["client"], 30, 0.05, on_line=on_line)
    assert restarted
    check_results(got, 30)
    log = restarted[0].err()
    assert "host 'h0'" in log and "client" in log, log
    assert "again as 'h0'" in host.err()


# ---- hosts in network namespaces --------------------------------------------


def serve_and_two_hosts(procs, keys, tmp, cluster):
    """serve on the master's address and hosts h0, h1 in their namespaces,
    both joined: (serve, its endpoint, [h0, h1])."""
    serve, ep = start_serve(procs, tmp, cluster.master_addr, keys["master"])
    hs = [start_host(procs, tmp, cluster.hosts[i], ep, keys["h%d" % i],
                     "h%d" % i) for i in range(2)]
    for h in hs:
        h.wait_err("joined the master")
    return serve, ep, hs


def test_two_hosts_map_in_order(procs, keys, tmp_path, cluster):
    tmp = str(tmp_path)
    serve, ep, hs = serve_and_two_hosts(procs, keys, tmp, cluster)
    got = run_client(ep, keys["client"], 40, 0.05)
    check_results(got, 40)
    assert {g[2] for g in got} == {"h0", "h1"}  # both did work
    assert serve.err().count("joined with capacity") == 2


def test_cut_link_mid_map(procs, keys, tmp_path, cluster):
    tmp = str(tmp_path)
    serve, ep, hs = serve_and_two_hosts(procs, keys, tmp, cluster)
    cut = []

    def on_line(k, line):
        if k == 8 and not cut:  # mid-map: h0 holds batches now
            cluster.cut(0)
            cut.append(time.monotonic())

    n = 60
    t0 = time.monotonic()
    got = run_client(ep, keys["client"], n, 0.05, on_line=on_line)
    assert cut, "the map ended before the link was cut"
    check_results(got, n)
    after = [g for g in got[8:] if g[2] == "h0"]
    # h0 answered at most what it had finished before the cut
    assert len(after) <= 4, after
    log = serve.err()
    assert "host 'h0'" in log and "declared gone" in log, log
    assert "requeued" in log
    assert time.monotonic() - t0 < 30
    cluster.restore(0)
    # the cut host joins again once its link is back
    hs[0].wait_err("again as 'h0'", timeout=20)


# ---- launchers -----------------------------------------------------------------


def launched_map(procs, keys, tmp, popen_argv, popen_env, what):
    serve, ep = start_serve(procs, tmp, "127.0.0.1", keys["master"])
    argv = host_argv(ep, keys["h0"], None)
    del argv[argv.index("--name"):argv.index("--name") + 2]
    del argv[argv.index("--workers"):argv.index("--workers") + 2]
    cmd, e = popen_argv(argv)
    e.update({k: v for k, v in env().items()
              if k in ("PYTHONPATH", "PICKLEPOOL_LIB", "TMPDIR")})
    launcher = Proc(cmd, os.path.join(tmp, what + ".log"), env=e,
                    start_new_session=True)
    procs.append(launcher)
    deadline = time.monotonic() + 30
    while serve.err().count("joined with capacity") < 2:
        if launcher.p.poll() is not None or time.monotonic() > deadline:
            pytest.fail("%s: the hosts did not join (exit %s)\n%s\n%s"
                        % (what, launcher.p.poll(), launcher.err(),
                           serve.err()))
        time.sleep(0.1)
    log = serve.err()
    assert " rank 0' " in log and " rank 1' " in log, log
    got = run_client(ep, keys["client"], 16, 0.05)
    check_results(got, 16)
    assert {g[2].rsplit(" ", 1)[-1] for g in got} <= {"0", "1"}
    # stop the whole launch (srun and mpirun pass SIGTERM on to the ranks)
    os.killpg(launcher.p.pid, signal.SIGTERM)
    try:
        launcher.p.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.p.pid, signal.SIGKILL)


def test_srun_launches_two_hosts(procs, keys, tmp_path):
    try:
        s = SlurmCluster().__enter__()
    except Unavailable as e:
        pytest.skip("no Slurm here: %s" % e)
    try:
        launched_map(procs, keys, str(tmp_path),
                     lambda argv: s.srun_command(["-N1", "-n2"] + argv),
                     None, "srun")
    finally:
        for p in reversed(procs):
            p.stop()
        procs.clear()
        s.close()


def test_mpirun_launches_two_hosts(procs, keys, tmp_path):
    try:
        clusterlib.mpirun_command(2, ["true"])
    except Unavailable as e:
        pytest.skip("no mpirun here: %s" % e)
    launched_map(procs, keys, str(tmp_path),
                 lambda argv: clusterlib.mpirun_command(2, argv), None,
                 "mpirun")
