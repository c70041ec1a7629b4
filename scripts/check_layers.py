#!/usr/bin/env python3
"""check_layers.py - fails on an upward include or an include cycle.

The library's layers point one way (DESIGN.md, "Layers"):

    core <- codec <- ipc <- proc <- pool

A file may include headers of its own layer and of the layers before it,
never one after it.  Private headers are named by their folder
(`#include "ipc/wire.h"`); public headers (`picklepool/x.h`) belong to the
layer that implements them.  The standalone worker (workers/) links only the
layers below pool, so it may include nothing of pool.  Files outside these
(cli/, tests/, bench/, plugins/) may include any layer but must not form
cycles either.  One convention rides along, because it is as easy to forget:
the library never reports PK_ESYS without its errno (`pk__err(err, PK_ESYS,
...)` is refused; `pk__err_sys` keeps the errno).  Run by `make test`; exits
1 with one line per violation.

    scripts/check_layers.py [ROOT]
"""
import os
import re
import sys

LAYERS = ["core", "codec", "ipc", "proc", "pool"]
RANK = {name: i for i, name in enumerate(LAYERS)}

# Public headers: the layer that implements each one.
PUBLIC = {
    "picklepool/error.h": "core",
    "picklepool/export.h": "core",
    "picklepool/version.h": "core",
    "picklepool/alloc.h": "core",
    "picklepool/value.h": "codec",
    "picklepool/pickle.h": "codec",
    "picklepool/registry.h": "proc",
    "picklepool/placement.h": "proc",
    "picklepool/worker.h": "proc",
    "picklepool/pool.h": "pool",
    "picklepool.h": "pool",
}

# Folders checked against the layer order, and the highest layer they may use.
CEILING = {"workers": "proc"}

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
ESYS_RE = re.compile(r'pk__err\(\s*[^,()]+,\s*PK_ESYS\b')


def layer_of(path):
    """The layer of a file given relative to the root, or None."""
    parts = path.split("/")
    if parts[0] == "runtime" and len(parts) == 3 and parts[1] in RANK:
        return parts[1]
    if parts[0] == "include":
        return PUBLIC.get("/".join(parts[1:]))
    return None


def resolve(root, src, name):
    """Where #include "name" in src points (relative to root), or None for a
    header outside the tree (a system header named with quotes)."""
    cands = [os.path.join(os.path.dirname(src), name),
             os.path.join("runtime", name), os.path.join("include", name),
             os.path.join("tests", name)]
    for c in cands:
        c = os.path.normpath(c)
        if os.path.isfile(os.path.join(root, c)):
            return c
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    files = []
    for top in ["include", "runtime", "workers", "cli", "plugins", "tests",
                "bench"]:
        for d, _, names in os.walk(os.path.join(root, top)):
            for n in names:
                if n.endswith((".c", ".h")):
                    files.append(os.path.relpath(os.path.join(d, n), root))
    bad = []
    graph = {}
    for f in sorted(files):
        with open(os.path.join(root, f), encoding="utf-8") as fp:
            text = fp.read()
        for m in ESYS_RE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{f}:{line}: PK_ESYS without its errno (use "
                       "pk__err_sys)")
        own = layer_of(f)
        ceiling = CEILING.get(f.split("/")[0])
        graph[f] = []
        for name in INCLUDE_RE.findall(text):
            target = resolve(root, f, name)
            if target is None:
                continue
            graph[f].append(target)
            if f.startswith("runtime/") and not (
                    "/" in name and name.split("/")[0] in LAYERS + ["picklepool"]
                    or name == "picklepool.h"):
                bad.append(f"{f}: include \"{name}\" does not name its layer "
                           f"folder (write \"<layer>/{os.path.basename(name)}\")")
            if target.startswith(("workers/", "cli/")) and \
                    f.startswith(("runtime/", "include/")):
                bad.append(f"{f}: includes {target}: the library must not "
                           "include worker-side or CLI headers")
            tl = layer_of(target)
            if tl is None:
                continue
            limit = own or ceiling
            if limit is not None and RANK[tl] > RANK[limit]:
                what = f"layer {own}" if own else f"{f.split('/')[0]}/ (at most {ceiling})"
                bad.append(f"{f}: upward include of {target} (layer {tl}) "
                           f"from {what}")
    # Cycles: depth-first search with colours.
    colour = {}
    stack = []

    def visit(n):
        colour[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if colour.get(m) == 1:
                cyc = stack[stack.index(m):] + [m]
                bad.append("include cycle: " + " -> ".join(cyc))
            elif colour.get(m) is None:
                visit(m)
        stack.pop()
        colour[n] = 2

    for n in sorted(graph):
        if colour.get(n) is None:
            visit(n)
    for line in bad:
        print("check_layers: " + line, file=sys.stderr)
    if bad:
        return 1
    print(f"check_layers: {len(files)} files, layers "
          f"{' <- '.join(LAYERS)}: no upward include, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
