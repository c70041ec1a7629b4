"""The multi-host harnesses of clusterlib.py come up, work and clean up.

These check the harnesses only (the scale-out tests will use them): hosts
from network namespaces reach each other and the master's address over
real TCP, a cut link stops that and a restored one brings it back, and
nothing is left behind, even when the test body fails; the loopback
fallback works and says why it was taken; a single-node Slurm starts and
`srun -N1 -n2` runs two tasks; `mpirun -n 2` runs two processes.  Each
reports the launcher's rank variables that the worker will read.  Where
this machine cannot provide a harness, its test skips saying exactly why.
"""

import os
import subprocess
import time

import pytest

from clusterlib import (PYTHON, NetnsCluster, SlurmCluster, Unavailable,
                        cleanup_stale_netns, echo_server, mpirun,
                        netns_unavailable, probe)
import clusterlib


def _netns_list():
    p = subprocess.run(["ip", "netns", "list"], capture_output=True,
                       text=True, timeout=10)
    return {line.split()[0] for line in p.stdout.splitlines() if line.split()}


def _links():
    p = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                       text=True, timeout=10)
    return {line.split(":")[1].strip().split("@")[0]
            for line in p.stdout.splitlines() if ":" in line}


def _need_netns():
    why = netns_unavailable()
    if why is not None:
        pytest.skip("network namespaces cannot be used here: %s" % why)


def _eventually(fn, timeout=5.0):
    """fn()'s first truthy result within timeout seconds, or the last."""
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if r or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_netns_hosts_talk_and_links_cut():
    _need_netns()
    with NetnsCluster(2) as c:
        assert c.fallback_reason is None
        h0, h1 = c.hosts
        assert len({c.master_addr, h0.addr, h1.addr}) == 3
        assert c.master_addr.endswith(".1")
        assert {h0.ns, h1.ns} <= _netns_list()
        made = (h0.ns, h1.ns, c.bridge, h0.link, h1.link)
        # each host has its own address, seen from inside
        out = h0.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert h0.addr + "/24" in out

        with echo_server(h0) as (addr, port):
            assert addr == h0.addr
            assert probe(h1, addr, port) == "echo ping"      # host to host
            assert probe(None, addr, port) == "echo ping"    # master to host
            # a host's own server is not on loopback of the others
            assert probe(h1, "127.0.0.1", port, timeout=0.5) is None
            c.cut(0)
            assert probe(h1, addr, port, timeout=0.5) is None
            assert probe(None, addr, port, timeout=0.5) is None
            c.restore(0)
            assert _eventually(lambda: probe(h1, addr, port, timeout=0.5)) \
                == "echo ping"

        # the master's address, served from the root namespace
        with echo_server(None, addr=c.master_addr) as (addr, port):
            assert probe(h0, addr, port) == "echo ping"
            assert probe(h1, addr, port) == "echo ping"
            c.cut(1)
            assert probe(h1, addr, port, timeout=0.5) is None
            assert probe(h0, addr, port) == "echo ping"  # others unaffected
            c.restore(1)
            assert _eventually(lambda: probe(h1, addr, port, timeout=0.5)) \
                == "echo ping"
    assert not set(made[:2]) & _netns_list()
    assert not set(made[2:]) & _links()


def test_netns_cleanup_after_a_failure():
    _need_netns()
    with pytest.raises(RuntimeError, match="the test body failed"):
        with NetnsCluster(1) as c:
            ns, bridge = c.hosts[0].ns, c.bridge
            # a process still running inside the namespace is ended too
            sleeper = c.hosts[0].popen(["sleep", "60"])
            raise RuntimeError("the test body failed")
    assert sleeper.wait(10) is not None
    assert ns not in _netns_list()
    assert bridge not in _links()
    c.close()  # idempotent


def test_netns_stale_leftovers_removed():
    _need_netns()
    dead = subprocess.Popen(["true"])
    dead.wait()
    ns, bridge = "pkns-%d-0" % dead.pid, "pkb%d" % dead.pid
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"],
                   check=True, timeout=10)
    try:
        cleanup_stale_netns()
        assert ns not in _netns_list()
        assert bridge not in _links()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True,
                       timeout=10)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True,
                       timeout=10)


def test_loopback_fallback(capfd):
    with NetnsCluster(2, force_fallback=True) as c:
        assert "forced by the test" in c.fallback_reason
        assert "loopback addresses" in c.fallback_reason
        assert c.master_addr == "127.0.0.1"
        assert [h.addr for h in c.hosts] == ["127.0.0.10", "127.0.0.11"]
        with echo_server(c.hosts[0]) as (addr, port):
            assert addr == "127.0.0.10"
            assert probe(c.hosts[1], addr, port) == "echo ping"
        with pytest.raises(Unavailable, match="cannot cut a link"):
            c.cut(0)
    assert "network namespaces unavailable" in capfd.readouterr().err


def test_netns_refused_without_fallback(monkeypatch):
    monkeypatch.setattr(clusterlib, "netns_unavailable",
                        lambda: "no netns for this test")
    with pytest.raises(Unavailable, match="no netns for this test"):
        with NetnsCluster(1):
            pass
    with NetnsCluster(1, fallback=True) as c:
        assert "no netns for this test" in c.fallback_reason
    with pytest.raises(ValueError):
        NetnsCluster(0)


# Writes the launcher variables of one task, NAME=VALUE ..., to a file of
# its own in the directory argv[1] (the launchers' merged standard output
# may interleave the tasks' lines).
_SHOW_ENV = ("import os, sys; open(os.path.join(sys.argv[1], str(os.getpid()))"
             ", 'w').write(' '.join('%s=%s' % (k, os.environ.get(k, '-'))"
             " for k in {!r}))")


def _rows(d):
    rows = []
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name)) as f:
            rows.append(dict(kv.split("=", 1) for kv in f.read().split()))
    return rows


SLURM_VARS = ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID",
              "SLURM_NNODES", "SLURM_JOB_ID", "SLURMD_NODENAME",
              "SLURM_LAUNCH_NODE_IPADDR"]


def test_slurm_single_node_srun(tmp_path):
    try:
        cluster = SlurmCluster(start_timeout=60)
        cluster.__enter__()
    except Unavailable as e:
        pytest.skip("Slurm cannot start here: %s" % e)
    try:
        assert cluster.start_seconds < 60
        p = cluster.srun(["-N1", "-n2", "hostname"], timeout=60)
        assert p.returncode == 0, p.stderr
        assert len(p.stdout.split()) == 2
        p = cluster.srun(["-N1", "-n2", PYTHON, "-c",
                          _SHOW_ENV.format(SLURM_VARS), str(tmp_path)],
                         timeout=60)
        assert p.returncode == 0, p.stderr
        rows = _rows(tmp_path)
        assert len(rows) == 2, p.stdout
        assert sorted(r["SLURM_PROCID"] for r in rows) == ["0", "1"]
        assert sorted(r["SLURM_LOCALID"] for r in rows) == ["0", "1"]
        for r in rows:
            assert r["SLURM_NTASKS"] == "2"
            assert r["SLURM_NODEID"] == "0"
            assert r["SLURM_NNODES"] == "1"
            assert r["SLURMD_NODENAME"] == cluster.node
            assert r["SLURM_JOB_ID"] != "-"
            assert r["SLURM_LAUNCH_NODE_IPADDR"] != "-"
        # a failing task is srun's failure, not a hang
        p = cluster.srun(["-N1", "-n1", "false"], timeout=60)
        assert p.returncode != 0
        procs = [p.pid for p in cluster.procs.values()]
        workdir = cluster.dir
    finally:
        cluster.close()
    for pid in procs:
        assert not os.path.exists("/proc/%d" % pid) or \
            open("/proc/%d/stat" % pid).read().split()[2] == "Z"
    assert not os.path.exists(workdir)


def test_slurm_unavailable_says_why(monkeypatch):
    monkeypatch.setattr(clusterlib, "_SLURM_BINARIES",
                        clusterlib._SLURM_BINARIES + ("no-such-slurmd",))
    with pytest.raises(Unavailable, match="not installed: no-such-slurmd"):
        with SlurmCluster():
            pass


MPI_VARS = ["OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
            "OMPI_COMM_WORLD_NODE_RANK", "PMIX_RANK"]


def test_mpirun_two_processes(tmp_path):
    why = clusterlib.mpirun_unavailable()
    if why is not None:
        pytest.skip("Open MPI cannot run here: %s" % why)
    p = mpirun(2, [PYTHON, "-c", _SHOW_ENV.format(MPI_VARS), str(tmp_path)],
               timeout=60)
    assert p.returncode == 0, p.stderr
    rows = _rows(tmp_path)
    assert len(rows) == 2, p.stdout + p.stderr
    assert sorted(r["OMPI_COMM_WORLD_RANK"] for r in rows) == ["0", "1"]
    assert sorted(r["OMPI_COMM_WORLD_LOCAL_RANK"] for r in rows) == ["0", "1"]
    for r in rows:
        assert r["OMPI_COMM_WORLD_SIZE"] == "2"
        assert r["OMPI_COMM_WORLD_LOCAL_SIZE"] == "2"
        assert r["PMIX_RANK"] == r["OMPI_COMM_WORLD_RANK"]
    # a failing process is mpirun's failure, not a hang
    p = mpirun(2, ["false"], timeout=60)
    assert p.returncode != 0
