#!/usr/bin/env python3
"""check_exports.py - fails unless exactly the public API is exported.

The library is compiled with -fvisibility=hidden and every function declared
in a public header (include/picklepool.h, include/picklepool/*.h) carries
PK_API (include/picklepool/export.h).  This check reads the declarations the
way the compiler sees them (the headers run through `$CC -E`, so macros are
expanded and comments gone) and the dynamic symbol tables with `nm -D`, and
reports one line per problem:

  - a public function declared without PK_API;
  - a public header that the umbrella include/picklepool.h does not bring in;
  - LIB (libpicklepool.so) exporting a pk__* / pool__* symbol, or anything
    else that no public header declares, or missing a declared function;
  - a PLUGIN (.so built without linking libpicklepool) needing a pk_* /
    pool_* symbol that is not public API: it would not load in a program
    that uses libpicklepool.so, nor once the symbol is hidden;
  - a HOST (an executable linked with the .a and -rdynamic, which plugins
    resolve against) missing a public function or exporting an internal one.

Names in the implementation's reserved namespace (a leading underscore:
_init, __bss_start, sanitizer hooks) are not the library's and are ignored.
Run by `make test`; exits 1 on any problem.

    scripts/check_exports.py [--cc CC] [--nm NM] --lib LIB
                             [--plugins SO...] [--hosts EXE...]
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys

INTERNAL = ("pk__", "pool__")
PUBLIC = ("pk_", "pool_")
INCLUDE = "include"
UMBRELLA = os.path.join(INCLUDE, "picklepool.h")

LINEMARK_RE = re.compile(r'^#\s*(\d+)\s+"([^"]*)"')
IDENT_RE = re.compile(r"[A-Za-z_]\w*")


def public_headers():
    return sorted(glob.glob(os.path.join(INCLUDE, "picklepool", "*.h")))


def preprocess(cc, headers):
    """The headers through the preprocessor: (file, line, text) for each line
    that comes from a file under include/, and the set of those files."""
    src = "".join('#include "%s"\n' % os.path.relpath(h, INCLUDE)
                  for h in headers)
    out = subprocess.run(shlex.split(cc) + ["-E", "-std=gnu11", "-I" + INCLUDE,
                                            "-x", "c", "-"],
                         input=src, capture_output=True, text=True, check=True)
    inc = os.path.abspath(INCLUDE) + os.sep
    lines, files, cur, lineno = [], set(), None, 0
    for text in out.stdout.splitlines():
        m = LINEMARK_RE.match(text)
        if m:
            lineno, cur = int(m.group(1)), m.group(2)
            if os.path.abspath(cur).startswith(inc):
                files.add(os.path.relpath(cur))
            continue
        if cur and os.path.abspath(cur).startswith(inc):
            lines.append((os.path.relpath(cur), lineno, text))
        lineno += 1
    return lines, files


def statements(lines):
    """Top-level declarations as (file, line, text), with the bodies of
    structs, unions, enums and inline functions replaced by {}."""
    out, buf, where, depth = [], [], None, 0
    for f, n, text in lines:
        for ch in text + " ":
            if depth == 0 and where is None and not ch.isspace():
                where = (f, n)
            if ch == "{":
                if depth == 0:
                    buf.append("{}")
                depth += 1
            elif ch == "}":
                depth -= 1
                # a function body ends the statement without a semicolon
                if depth == 0 and re.search(r"\)\s*\{\}$", "".join(buf)):
                    out.append(where + ("".join(buf),))
                    buf, where = [], None
            elif depth == 0 and ch == ";":
                out.append(where + ("".join(buf),))
                buf, where = [], None
            elif depth == 0:
                buf.append(ch)
    return out


def strip_attributes(text):
    """text without its __attribute__((...)) groups, and those groups."""
    attrs, rest, i = [], [], 0
    while True:
        j = text.find("__attribute__", i)
        if j < 0:
            rest.append(text[i:])
            return "".join(rest), attrs
        rest.append(text[i:j])
        k = text.index("(", j)
        depth = 0
        for e in range(k, len(text)):
            depth += {"(": 1, ")": -1}.get(text[e], 0)
            if depth == 0:
                break
        attrs.append(re.sub(r"\s+", "", text[k:e + 1]))
        i = e + 1


def declared_symbols(lines):
    """{name: (file, line, has PK_API)} for every function and extern
    object the public headers declare."""
    decls = {}
    for f, n, text in statements(lines):
        text = " ".join(text.split())
        if not text or re.match(r"(typedef|static)\b", text):
            continue
        rest, attrs = strip_attributes(text)
        exported = any('visibility("default")' in a for a in attrs)
        if "(" in rest:
            # a function, unless the first parenthesis is a declarator such
            # as `(*hook)` in an extern function pointer
            m = re.match(r"[^(]*\(\s*\*\s*(\w+)\s*\)", rest) or \
                re.match(r"[^(]*?(\w+)\s*\(", rest)
        elif re.match(r"extern\b", rest):
            m = re.match(r".*?(\w+)\s*(\[.*)?$", rest)
        else:
            continue  # struct/enum tag declaration
        if m and not m.group(1).startswith("_"):
            decls[m.group(1)] = (f, n, exported)
    return decls


def dynsyms(nm, path, which):
    """Names in the dynamic symbol table of path (--defined-only or
    --undefined-only), version suffixes dropped, reserved names left out."""
    out = subprocess.run(shlex.split(nm) + ["-D", which, path],
                         capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if parts:
            name = parts[-1].split("@")[0]
            if not name.startswith("_"):
                names.add(name)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--nm", default=os.environ.get("NM", "nm"))
    ap.add_argument("--lib", required=True)
    ap.add_argument("--plugins", nargs="*", default=[])
    ap.add_argument("--hosts", nargs="*", default=[])
    a = ap.parse_args()

    bad = []
    headers = public_headers()
    _, reached = preprocess(a.cc, [UMBRELLA])
    for h in headers:
        if os.path.relpath(h) not in reached:
            bad.append(f"{UMBRELLA}: does not include {h}")

    lines, _ = preprocess(a.cc, headers + [UMBRELLA])
    decls = declared_symbols(lines)
    if not decls:
        bad.append(f"{INCLUDE}/: found no public declaration (parser broken?)")
    for name, (f, n, exported) in sorted(decls.items()):
        if not exported:
            bad.append(f"{f}:{n}: {name} is declared without PK_API")
    public = set(decls)

    lib = dynsyms(a.nm, a.lib, "--defined-only")
    for name in sorted(lib - public):
        what = "an internal symbol" if name.startswith(INTERNAL) else \
            "a symbol no public header declares"
        bad.append(f"{a.lib}: exports {name}, {what}")
    for name in sorted(public - lib):
        f, n, _ = decls[name]
        bad.append(f"{a.lib}: does not export {name} (declared at {f}:{n})")

    for so in a.plugins:
        for name in sorted(dynsyms(a.nm, so, "--undefined-only")):
            if name.startswith(PUBLIC) and name not in public:
                bad.append(f"{so}: needs {name}, which is not public API")

    for exe in a.hosts:
        syms = dynsyms(a.nm, exe, "--defined-only")
        missing = sorted(public - syms)
        if missing:
            bad.append(f"{exe}: does not export {len(missing)} public "
                       f"functions (linked without -rdynamic?), e.g. "
                       f"{missing[0]}")
        leaked = sorted(n for n in syms if n.startswith(INTERNAL))
        if leaked:
            bad.append(f"{exe}: exports {len(leaked)} internal symbols "
                       f"(compiled without -fvisibility=hidden?), e.g. "
                       f"{leaked[0]}")

    for line in bad:
        print(line)
    print(f"check_exports: {len(public)} public symbols; {a.lib}, "
          f"{len(a.plugins)} plugins, {len(a.hosts)} executables: "
          + (f"{len(bad)} problems" if bad else "exactly the public API"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
