"""Harnesses for multi-host tests on one machine.

Three ways to get "several hosts" without several machines, each a context
manager that cleans up after itself on every exit path, bounds every wait
with a time-out, and raises Unavailable (with the exact reason) when this
machine cannot provide it, so a test can skip saying why:

  NetnsCluster(n)   n network namespaces, each with a veth pair to a bridge
                    in the root namespace and an address of its own in a
                    private 10.x.y.0/24; the root namespace (the master) is
                    10.x.y.1.  Links can be cut and restored.  Where `ip
                    netns` cannot be used, NetnsCluster(n, fallback=True)
                    gives loopback addresses (127.0.0.x) instead, says so in
                    .fallback_reason, and cannot cut links.
  SlurmCluster()    a real single-node Slurm (Debian's slurm-wlm with
                    munge) from a temporary directory: munged, slurmctld and
                    slurmd started, waited for until `sinfo` shows the node
                    idle; .srun(...) runs a job step.
  mpirun(n, argv)   Open MPI's mpirun launching n local processes.

What the launchers tell each process (for the worker to read later; checked
by tests/python/test_cluster_harness.py):

  Slurm, every task of `srun`:
    SLURM_PROCID      the task's rank in the step, 0..SLURM_NTASKS-1
    SLURM_NTASKS      tasks in the step (also SLURM_NPROCS)
    SLURM_LOCALID     the task's rank on its node
    SLURM_NODEID      the node's index in the step, 0..SLURM_NNODES-1
    SLURM_NNODES      nodes in the step (SLURM_JOB_NUM_NODES: in the job)
    SLURM_JOB_ID, SLURM_STEP_ID, SLURMD_NODENAME (this node's Slurm name),
    SLURM_STEP_NODELIST, SLURM_CPUS_ON_NODE, SLURM_LAUNCH_NODE_IPADDR (the
    host srun ran on: where a master started beside srun listens)
  Open MPI 4.1, every process of `mpirun`:
    OMPI_COMM_WORLD_RANK        rank, 0..OMPI_COMM_WORLD_SIZE-1
    OMPI_COMM_WORLD_SIZE        processes launched
    OMPI_COMM_WORLD_LOCAL_RANK  rank on this host
    OMPI_COMM_WORLD_LOCAL_SIZE  processes on this host
    OMPI_COMM_WORLD_NODE_RANK   rank among those of its host (same here)
    PMIX_RANK                   the PMIx rank (equal to the world rank)
"""

import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")


class Unavailable(Exception):
    """This machine cannot provide the harness; str() says exactly why."""


def _run(argv, timeout=10, check=True, env=None, input=None):
    """Runs argv with a time-out; on failure raises RuntimeError with the
    command and its stderr."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout, env=env, input=input)
    except subprocess.TimeoutExpired:
        raise RuntimeError("%s: no answer within %ss"
                           % (" ".join(argv), timeout)) from None
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                                p.stderr.strip()[-500:]))
    return p


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(proc, grace=5.0):
    """Ends a Popen: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(grace)


def free_port(host="127.0.0.1"):
    """A TCP port free on `host` right now (the system's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- network namespaces ---------------------------------------------------

_NS_PREFIX = "pkns-"


def netns_unavailable():
    """Why `ip netns` cannot be used here (a string), or None."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return ("network namespaces need root (running as uid %d)"
                % os.geteuid())
    probe = "%sprobe-%d" % (_NS_PREFIX, os.getpid())
    p = _run(["ip", "netns", "add", probe], check=False)
    if p.returncode != 0:
        return "ip netns add failed: %s" % p.stderr.strip()
    try:
        p = _run(["ip", "link", "add", "pkpr%d" % (os.getpid() % 10**7),
                  "type", "bridge"], check=False)
        if p.returncode != 0:
            return "cannot make a bridge: %s" % p.stderr.strip()
        _run(["ip", "link", "del", "pkpr%d" % (os.getpid() % 10**7)],
             check=False)
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def cleanup_stale_netns():
    """Deletes the namespaces and links that NetnsCluster instances of dead
    processes left behind (their names carry the creator's pid)."""
    p = _run(["ip", "netns", "list"], check=False)
    for line in p.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(_NS_PREFIX):
            continue
        try:
            pid = int(name[len(_NS_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            _run(["ip", "netns", "del", name], check=False)
    p = _run(["ip", "-o", "link", "show"], check=False)
    for line in p.stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = re.match(r"pk[bv](\d+)(x\d+)?$", name)
        if m and not _pid_alive(int(m.group(1))):
            _run(["ip", "link", "del", name], check=False)


class Host:
    """One host of a NetnsCluster: its namespace (None: the root one, or
    the fallback) and address."""

    def __init__(self, index, ns, addr, link=None):
        self.index = index
        self.ns = ns
        self.addr = addr
        self.link = link  # its veth end in the root namespace
        self.procs = []   # what popen started, for close()

    def argv(self, argv):
        """argv run inside this host's namespace."""
        if self.ns is None:
            return list(argv)
        return ["ip", "netns", "exec", self.ns] + list(argv)

    def run(self, argv, timeout=10, check=True):
        return _run(self.argv(argv), timeout=timeout, check=check)

    def popen(self, argv, **kw):
        p = subprocess.Popen(self.argv(argv), **kw)
        self.procs.append(p)
        return p

    def __repr__(self):
        return "Host(%d, %s, %s)" % (self.index, self.ns or "-", self.addr)


class NetnsCluster:
    """n hosts from network namespaces (see the module's doc).

        with NetnsCluster(2) as c:
            c.master_addr            # 10.x.y.1, the root namespace
            c.hosts[0].addr          # 10.x.y.10
            c.hosts[0].popen([...])  # a process inside host 0
            c.cut(0); c.restore(0)   # its link down, and up again

    fallback=True: when namespaces cannot be made, the hosts share the root
    namespace with addresses 127.0.0.10, .11, ... (.fallback_reason says
    why; cut() raises Unavailable).  force_fallback=True takes that path
    whatever this machine can do (to test it).
    """

    def __init__(self, n, fallback=False, force_fallback=False):
        if n < 1 or n > 200:
            raise ValueError("1 to 200 hosts, not %r" % (n,))
        self.n = n
        self.allow_fallback = fallback or force_fallback
        self.force_fallback = force_fallback
        self.fallback_reason = None
        self.hosts = []
        self.master_addr = None
        self._made_ns = []
        self._made_links = []
        self._tag = "%d" % (os.getpid() % 10**7)
        self._seq = 0

    # -- life

    def __enter__(self):
        why = "forced by the test" if self.force_fallback else \
            netns_unavailable()
        if why is not None:
            if not self.allow_fallback:
                raise Unavailable(why)
            self._start_fallback(why)
            return self
        try:
            cleanup_stale_netns()
            self._start_netns()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _start_fallback(self, why):
        self.fallback_reason = ("network namespaces unavailable (%s): hosts "
                                "share this namespace on loopback addresses"
                                % why)
        sys.stderr.write("clusterlib: %s\n" % self.fallback_reason)
        self.master_addr = "127.0.0.1"
        self.hosts = [Host(i, None, "127.0.0.%d" % (10 + i))
                      for i in range(self.n)]

    def _subnet(self):
        """A 10.213.x.0/24 that no route of this machine covers."""
        used = []
        p = _run(["ip", "-4", "route", "show", "table", "all"], check=False)
        for line in p.stdout.split("\n"):
            w = line.split()
            if not w:
                continue
            dst = w[1] if w[0] in ("local", "broadcast") and len(w) > 1 \
                else w[0]
            with contextlib.suppress(ValueError):
                if dst != "default":
                    used.append(ipaddress.ip_network(dst, strict=False))
        rnd = random.Random(os.getpid() ^ int(time.time()))
        for _ in range(256):
            net = ipaddress.ip_network("10.213.%d.0/24" % rnd.randrange(256))
            if not any(net.overlaps(u) for u in used):
                return net
        raise Unavailable("no free 10.213.x.0/24 subnet for the namespaces")

    def _ip(self, *args, timeout=10):
        return _run(["ip"] + list(args), timeout=timeout)

    def _start_netns(self):
        net = self._subnet()
        base = net.network_address
        self.master_addr = str(base + 1)
        self.bridge = "pkb%s" % self._tag
        if len(self.bridge) > 15:
            raise Unavailable("interface name %s too long" % self.bridge)
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._made_links.append(self.bridge)
        self._ip("addr", "add", "%s/24" % self.master_addr, "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for i in range(self.n):
            ns = "%s%s-%d" % (_NS_PREFIX, self._tag, i)
            outer = "pkv%sx%d" % (self._tag, i)
            inner = "pki%sx%d" % (self._tag, i)
            addr = str(base + 10 + i)
            self._ip("netns", "add", ns)
            self._made_ns.append(ns)
            self._ip("link", "add", outer, "type", "veth", "peer", "name",
                     inner)
            self._made_links.append(outer)
            self._ip("link", "set", inner, "netns", ns)
            self._ip("link", "set", outer, "master", self.bridge)
            self._ip("link", "set", outer, "up")
            x = ["ip", "netns", "exec", ns, "ip"]
            _run(x + ["link", "set", "lo", "up"])
            _run(x + ["link", "set", inner, "name", "eth0"])
            _run(x + ["addr", "add", "%s/24" % addr, "dev", "eth0"])
            _run(x + ["link", "set", "eth0", "up"])
            _run(x + ["route", "add", "default", "via", self.master_addr])
            self.hosts.append(Host(i, ns, addr, outer))

    def close(self):
        """Deletes every namespace and link this cluster made (processes
        still running in a namespace keep it alive only until they end).
        Idempotent; never raises."""
        # what popen started: `ip netns pids` misses a process that has
        # not entered its namespace yet (ip netns exec, just started)
        for h in self.hosts:
            for p in h.procs:
                with contextlib.suppress(ProcessLookupError, OSError):
                    if p.poll() is None:
                        p.kill()
        for ns in reversed(self._made_ns):
            p = _run(["ip", "netns", "pids", ns], check=False)
            for pid in p.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", ns], check=False)
        for link in reversed(self._made_links):
            _run(["ip", "link", "del", link], check=False)
        self._made_ns = []
        self._made_links = []

    # -- links

    def _link_of(self, i):
        if self.fallback_reason is not None:
            raise Unavailable("cannot cut a link: %s" % self.fallback_reason)
        return self.hosts[i].link

    def cut(self, i):
        """Takes host i's link down: nothing reaches it or leaves it."""
        self._ip("link", "set", self._link_of(i), "down")

    def restore(self, i):
        """Brings host i's link back up."""
        self._ip("link", "set", self._link_of(i), "up")


# A tiny TCP server: binds ADDR:PORT, prints "ready", then answers each
# connection's first line with "echo <line>" until killed.
_ECHO_SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    with c:
        c.settimeout(5)
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(256)
            if not chunk:
                break
            data += chunk
        c.sendall(b"echo " + data)
"""

# Connects to ADDR:PORT within TIMEOUT seconds, sends a line, prints the
# answer; exit status 0 when it came, 1 otherwise.
_PROBE = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])),
                                  timeout=float(sys.argv[3])) as c:
        c.sendall(b"ping\n")
        print(c.recv(256).decode().strip())
except OSError as e:
    print("failed: %s" % e)
    sys.exit(1)
"""


@contextlib.contextmanager
def echo_server(host, port=None, addr=None, timeout=10):
    """A tiny TCP echo server in `host` (a Host, or None for the root
    namespace) on `addr` (default: the host's address, or 127.0.0.1 in the
    root namespace); yields (addr, port) once it listens.  Without `port`,
    a free one is taken (any does in a fresh namespace)."""
    if addr is None:
        addr = host.addr if host is not None else "127.0.0.1"
    if port is None:
        port = free_port(addr) if host is None or host.ns is None else 7000
    argv = [PYTHON, "-c", _ECHO_SERVER, addr, str(port)]
    if host is not None:
        argv = host.argv(argv)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        line = ""
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
            time.sleep(0.02)
        if line.strip() != "ready":
            if proc.poll() is not None:
                why = proc.stderr.read().strip()[-300:]
            else:
                why = "no 'ready' within %ss" % timeout
            raise RuntimeError("echo server on %s:%d did not start: %s"
                               % (addr, port, why))
        yield addr, port
    finally:
        _stop(proc)
        proc.stdout.close()
        proc.stderr.close()


def probe(host, addr, port, timeout=2.0):
    """From `host` (None: the root namespace), connects to addr:port and
    trades a line.  Returns the answer ("echo ping"), or None when the
    connection failed within `timeout` seconds."""
    argv = [PYTHON, "-c", _PROBE, addr, str(port), str(timeout)]
    if host is not None:
        argv = host.argv(argv)
    p = _run(argv, timeout=timeout + 10, check=False)
    return p.stdout.strip() if p.returncode == 0 else None


# ---- Slurm ----------------------------------------------------------------

_SLURM_BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sinfo", "srun")


def slurm_unavailable():
    """Why a Slurm cluster cannot be made here (a string), or None."""
    missing = [b for b in _SLURM_BINARIES if shutil.which(b) is None and
               not os.path.exists("/usr/sbin/" + b)]
    if missing:
        return ("not installed: %s (Debian packages slurm-wlm and munge; "
                "`make test` installs them as root)" % ", ".join(missing))
    if os.geteuid() != 0:
        return ("slurmd must run as root to launch tasks (running as uid %d)"
                % os.geteuid())
    return None


def _which(b):
    return shutil.which(b) or "/usr/sbin/" + b


def _clean_env(extra=None):
    """This environment without any SLURM_* variable of an enclosing job."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    e.update(extra or {})
    return e


class SlurmCluster:
    """A one-node Slurm cluster of this machine, for the time of a `with`:

        with SlurmCluster() as s:
            p = s.srun(["-N1", "-n2", "hostname"])

    start_timeout bounds the start (munged up, node idle in sinfo); every
    command has a time-out of its own.  The daemons run in the foreground
    as children of this process, from a private directory with their own
    ports, munge socket and key, so nothing of the machine's own Slurm (if
    any) is touched.  Raises Unavailable when Slurm is not installed or
    cannot run here, with the daemons' last log lines.  .start_seconds is
    how long the start took.
    """

    def __init__(self, start_timeout=30.0, cpus=None):
        self.start_timeout = start_timeout
        self.cpus = cpus or os.cpu_count() or 1
        self.dir = None
        self.procs = {}
        self.start_seconds = None
        self.node = "pknode%d" % (os.getpid() % 10**6)

    def __enter__(self):
        why = slurm_unavailable()
        if why is not None:
            raise Unavailable(why)
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _daemon(self, name, argv):
        out = open(self._path(name + ".out"), "w")
        try:
            self.procs[name] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env,
                start_new_session=True)
        finally:
            out.close()

    def _logs(self):
        """The daemons' last lines, for an error message."""
        text = []
        for name in ("munged.out", "slurmctld.out", "slurmd.out"):
            with contextlib.suppress(OSError):
                with open(self._path(name)) as f:
                    lines = [ln for ln in f.read().splitlines()
                             if "error" in ln.lower() or "fatal" in ln.lower()]
                if lines:
                    text.append("%s: %s" % (name, " | ".join(lines[-3:])))
        return "; ".join(text) or "no error in the daemons' logs"

    def _check_alive(self, what):
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise Unavailable("%s exited with status %s while %s: %s"
                                  % (name, p.returncode, what, self._logs()))

    def _start(self):
        # munged wants every directory above its socket searchable by all
        self.dir = tempfile.mkdtemp(prefix="pk-slurm-")
        os.chmod(self.dir, 0o755)
        for d in ("state", "spool"):
            os.mkdir(self._path(d), 0o700)
        key = self._path("munge.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
        sock = self._path("munge.sock")
        conf = self._path("slurm.conf")
        self.env = _clean_env({"SLURM_CONF": conf})
        deadline = time.monotonic() + self.start_timeout

        self._daemon("munged", [
            _which("munged"), "--foreground", "--force",
            "--key-file=" + key, "--socket=" + sock,
            "--pid-file=" + self._path("munged.pid"),
            "--log-file=" + self._path("munged.log"),
            "--seed-file=" + self._path("munged.seed")])
        while True:
            p = _run([_which("munge"), "-n", "-S", sock], check=False,
                     timeout=5)
            if p.returncode == 0:
                break
            self._check_alive("starting")
            if time.monotonic() > deadline:
                raise Unavailable("munged did not answer within %ss: %s"
                                  % (self.start_timeout, p.stderr.strip()))
            time.sleep(0.05)

        host = socket.gethostname().split(".")[0]
        ctld_port, slurmd_port = free_port(), free_port()
        with open(conf, "w") as f:
            f.write(_SLURM_CONF.format(
                host=host, ctld_port=ctld_port, slurmd_port=slurmd_port,
                dir=self.dir, sock=sock, node=self.node, cpus=self.cpus))
        self._daemon("slurmctld", [_which("slurmctld"), "-D", "-i", "-f",
                                   conf])
        self._daemon("slurmd", [_which("slurmd"), "-D", "-N", self.node, "-f",
                                conf])
        state = ""
        while True:
            self._check_alive("waiting for the node")
            p = _run([_which("sinfo"), "-h", "-n", self.node, "-o", "%T"],
                     check=False, timeout=5, env=self.env)
            state = p.stdout.strip()
            if p.returncode == 0 and state == "idle":
                return
            if time.monotonic() > deadline:
                raise Unavailable(
                    "node %s not idle within %ss (sinfo says %r): %s"
                    % (self.node, self.start_timeout,
                       state or p.stderr.strip(), self._logs()))
            time.sleep(0.1)

    def srun_command(self, args, env=None):
        """(argv, environment) of `srun ARGS...` in the cluster, for a
        caller that starts it in the background (its Popen is the caller's
        to stop).  env: variables added to the cluster's environment."""
        e = dict(self.env)
        e.update(env or {})
        return [_which("srun")] + list(args), e

    def srun(self, args, timeout=60):
        """Runs `srun ARGS...` in the cluster; returns the CompletedProcess
        (text).  Raises RuntimeError when it does not end within timeout."""
        return _run([_which("srun")] + list(args), timeout=timeout,
                    check=False, env=self.env)

    def close(self):
        """Stops the daemons (SIGTERM, which each handles by shutting down
        cleanly in milliseconds; SIGKILL after 5 s), kills whatever job steps
        are left in their sessions, and removes the directory.  Idempotent;
        never raises."""
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None:
                continue
            with contextlib.suppress(Exception):
                _stop(p, grace=5)
            # job steps slurmd started (slurmstepd) live in its session
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        self.procs = {}
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


_SLURM_CONF = """\
# written by tests/python/clusterlib.py for one test run
ClusterName=pktest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=pk Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


# ---- Open MPI ---------------------------------------------------------------


def mpirun_unavailable():
    """Why mpirun cannot be used here (a string), or None."""
    if shutil.which("mpirun") is None:
        return ("mpirun is not installed (Debian package openmpi-bin; `make "
                "test` installs it as root)")
    p = _run(["mpirun", "--version"], check=False, timeout=20)
    if p.returncode != 0 or "Open MPI" not in p.stdout + p.stderr:
        return "mpirun is not Open MPI's: %s" % (p.stdout + p.stderr).strip()
    return None


def mpirun_command(n, argv, env=None):
    """(argv, environment) of `mpirun -n N ARGV...` as mpirun() runs it, for
    a caller that starts it in the background (its Popen is the caller's to
    stop).  env: variables added to the clean environment.  Raises
    Unavailable when mpirun is missing."""
    why = mpirun_unavailable()
    if why is not None:
        raise Unavailable(why)
    cmd = ["mpirun"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["--oversubscribe", "--bind-to", "none", "-n", str(n)] + list(argv)
    # no enclosing job's variables, and no ssh: everything runs here
    e = _clean_env(env)
    e = {k: v for k, v in e.items() if not k.startswith(("OMPI_", "PMIX_"))}
    return cmd, e


def mpirun(n, argv, timeout=60):
    """Runs `mpirun -n N ARGV...` (as root too, oversubscribing the cores,
    unbound) and returns the CompletedProcess (text).  Raises Unavailable
    when mpirun is missing, RuntimeError when it outlives `timeout`."""
    cmd, env = mpirun_command(n, argv)
    return _run(cmd, timeout=timeout, check=False, env=env)
