"""bench/peers.py, the peer comparison, still runs: a cheap subset of it in a
child process with a time limit exits 0 and prints its table.

No timing is asserted (STYLE.md 14): the figures belong to the benchmark's
output, not to a test's verdict.  What is checked is that the program runs,
that every peer gets a cell, and what picklepool promises whatever the
speed: lambdas map.
"""

import os
import subprocess

import pytest

from pyhelpers import PYTHON, ROOT, env, library  # noqa: F401

PEERS = os.path.join(ROOT, "bench", "peers.py")
LABELS = ["picklepool", "mp.Pool", "futures", "multiprocess", "joblib/loky",
          "serial loop"]


def run_peers(*args, timeout=240):
    try:
        p = subprocess.run([PYTHON, PEERS] + list(args), env=env(),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail("bench/peers.py %s ran past %d s; its output:\n%s"
                    % (" ".join(args), timeout, e.stdout or ""))
    return p


def table_rows(out):
    """The table as a list of cell lists (header first, rule skipped)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in out.splitlines() if line.startswith("| ")]
    return rows


def test_lambda_row_for_every_peer():
    p = run_peers("--quick", "--only", "W6")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = table_rows(p.stdout)
    assert rows[0] == ["workload"] + LABELS, rows[0]
    (w6,) = [r for r in rows if r[0].startswith("W6")]
    assert len(w6) == 1 + len(LABELS)
    assert all(c.startswith(("yes", "no")) for c in w6[1:]), w6
    assert w6[1] == "yes"  # picklepool maps lambdas by value
    assert "load average at start" in p.stdout
    assert "load average at end" in p.stdout


def test_timed_row_and_target_line():
    p = run_peers("--quick", "--reps", "1", "--only", "W1",
                  "--peers", "picklepool,serial")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = table_rows(p.stdout)
    assert rows[0] == ["workload", "picklepool", "serial loop"]
    (w1,) = [r for r in rows if r[0].startswith("W1")]
    assert not w1[1].startswith(("FAILED", "-")), w1
    # the target line is there; whether it is met is the machine's business
    assert "- W1: picklepool >= 1.5x mp.Pool's items/s:" in p.stdout


def test_unknown_workload_is_refused():
    p = run_peers("--only", "W9", timeout=60)
    assert p.returncode == 2
    assert "unknown workload W9" in p.stderr
