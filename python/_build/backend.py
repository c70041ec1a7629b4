"""backend - a PEP 517 build backend with no requirements, so that
``pip install ./python`` works offline (no setuptools download).

It builds a pure wheel of python/picklepool, versioned from
include/picklepool/version.h, and records in picklepool/_where.py where the
build tree's libpicklepool.so is, so that an install from a source tree
finds that tree's library.
"""

import base64
import hashlib
import os
import re
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREE = os.path.dirname(HERE)


def _version():
    path = os.path.join(TREE, "include", "picklepool", "version.h")
    try:
        text = open(path).read()
    except OSError:
        return "0.0.0"
    parts = [re.search(r"#define PK_VERSION_%s (\d+)" % k, text)
             for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        return "0.0.0"
    return ".".join(p.group(1) for p in parts)


NAME = "picklepool"
VERSION = _version()
DIST = "%s-%s.dist-info" % (NAME, VERSION)
TAG = "py3-none-any"


def _metadata():
    return ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n"
            "Summary: multiprocessing.Pool on a C runtime\n"
            "Requires-Python: >=3.9\n" % (NAME, VERSION))


def _files():
    """(name in the wheel, bytes) of the package."""
    pkg = os.path.join(HERE, NAME)
    for f in sorted(os.listdir(pkg)):
        if f.endswith(".py") and f != "_where.py":
            with open(os.path.join(pkg, f), "rb") as fp:
                yield "%s/%s" % (NAME, f), fp.read()
    lib = os.path.join(TREE, "build", "libpicklepool.so")
    where = "LIB = %r\n" % (lib if os.path.exists(lib) else None)
    yield "%s/_where.py" % NAME, ("\"\"\"Where the library was when this "
                                  "package was built (backend.py).\"\"\"\n"
                                  + where).encode()


def _hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, DIST)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(_metadata())
    return DIST


def build_wheel(wheel_directory, config_settings=None,
                metadata_directory=None):
    name = "%s-%s-%s.whl" % (NAME, VERSION, TAG)
    entries = list(_files())
    entries.append(("%s/METADATA" % DIST, _metadata().encode()))
    entries.append(("%s/WHEEL" % DIST,
                    ("Wheel-Version: 1.0\nGenerator: picklepool-backend\n"
                     "Root-Is-Purelib: true\nTag: %s\n" % TAG).encode()))
    record = "".join("%s,%s,%d\n" % (n, _hash(b), len(b)) for n, b in entries)
    record += "%s/RECORD,,\n" % DIST
    entries.append(("%s/RECORD" % DIST, record.encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w",
                         zipfile.ZIP_DEFLATED) as z:
        for n, b in entries:
            z.writestr(n, b)
    return name


def build_sdist(sdist_directory, config_settings=None):
    import tarfile
    base = "%s-%s" % (NAME, VERSION)
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in ("pyproject.toml", "_build/backend.py"):
            t.add(os.path.join(HERE, rel), arcname="%s/%s" % (base, rel))
        for n, _ in _files():
            if not n.endswith("_where.py"):
                t.add(os.path.join(HERE, n), arcname="%s/%s" % (base, n))
    return name
