#!/bin/sh
# scripts/deps.sh - install the Debian packages picklepool needs, if any are missing.
#
# Called by `make`, `make test` and `make demo`.  Checks with dpkg-query (fast, no
# network) and only runs apt-get when something is missing.  Needs root for the
# install; otherwise it names the missing packages and the command to run.
#
#   --test    also what only the tests use: the multi-host harnesses of
#             tests/python/clusterlib.py (a one-node Slurm with munge, Open
#             MPI's mpirun, ip netns); `make test` (so CI) passes it
#   --extra   also clang, for `make fuzz`
set -eu
PKGS="build-essential pkg-config libzmq3-dev libhwloc-dev libcmocka-dev \
zlib1g-dev libbz2-dev liblzma-dev python3 python3-numpy python3-pytest \
python3-cloudpickle python3-dill python3-multiprocess python3-joblib \
python3-tqdm python3-venv python3-sklearn clang-format"
for a in "$@"; do
    case "$a" in
    --extra) PKGS="$PKGS clang" ;;
    --test) PKGS="$PKGS slurm-wlm munge openmpi-bin iproute2" ;;
    *) echo "deps.sh: unknown option $a" >&2; exit 2 ;;
    esac
done
missing=""
for p in $PKGS; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in *"ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "picklepool: missing Debian packages:$missing" >&2
    echo "picklepool: not running as root, so cannot install them; run:" >&2
    echo "    sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "picklepool: installing Debian packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends $missing >&2
