"""digits_pipeline.py - an image preprocessing pipeline feeding a training
loop, on picklepool, on multiprocessing.Pool and serially, in one run.

    make && PYTHONPATH=python /usr/bin/python3 examples/digits_pipeline.py
        [--epochs N] [--size S] [--batch B] [--workers W] [--quick]
        [--only picklepool,mp,serial] [--flip-p P] [--sigma S] [--shift K]

The data is scikit-learn's bundled digits (1,797 8x8 images, shipped with
Debian's python3-sklearn: nothing is downloaded), scaled up to S x S pixels
(32 by default) as a stand-in for real image sizes.  A quarter is held out
for testing.  The pipeline:

  1. standardise: every image to zero mean, unit variance, once;
  2. augment, every epoch: each training image mirrored with probability
     flip_p, moved by up to `shift` pixels (crop and zero pad), plus
     Gaussian noise, with a seed per (epoch, batch) so every run and every
     pool sees the same images;
  3. featurise: 8x8 pooled pixels and a 4x4-cell histogram of gradient
     orientations (a small HOG), in numpy;
  4. train: SGDClassifier.partial_fit on each batch as it streams in
     (imap: the next batches are prepared while the model trains), then
     the held-out accuracy.

picklepool runs steps 1 and 2 as native C kernels (plugins/preprocess.c:
preprocess.standardize, preprocess.augment) over arrays in its shared heap
(picklepool.asarray: the workers read them in place, no copy) and step 3 as
a Python function in its Python workers, fed straight from the kernels'
results (pool.imap over pool.imap); multiprocessing.Pool and the serial
loop run the numpy twins of the kernels (np_standardize, np_augment) and
the same featurise.  Each prints its accuracy and throughput (training
images through augment + featurise + partial_fit per second); a progress
bar shows on a terminal.

Mirroring is off by default: a mirrored 2 is not a 2, and a linear model
loses accuracy on it (--flip-p 0.5 shows how much).
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _set_paths():
    """This tree's package and library, unless the caller chose others."""
    py = os.path.join(ROOT, "python")
    if os.path.isdir(os.path.join(py, "picklepool")) and py not in sys.path:
        sys.path.insert(0, py)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [py] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    lib = os.path.join(ROOT, "build", "libpicklepool.so")
    if os.path.exists(lib):
        os.environ.setdefault("PICKLEPOOL_LIB", lib)


# ---- the steps, in numpy ----------------------------------------------------

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _draws(seed, k):
    """Draws k (uint64 array) of splitmix64's stream from seed, as
    plugins/preprocess.c makes them."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (k + np.uint64(1)) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def np_standardize(batch):
    """preprocess.standardize in numpy: each image to zero mean and unit
    variance (float32; a constant image gives zeros)."""
    x = batch.astype(np.float64)
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    sd = x.std(axis=axes, keepdims=True)
    out = np.where(sd > 0, (x - mean) / np.where(sd > 0, sd, 1), 0)
    return out.astype(np.float32)


def np_augment(task):
    """preprocess.augment in numpy, on the same task (batch, seed, shift,
    flip_p, sigma): the same draws, so the same images (the noise equal to
    about 1e-6: the kernel computes it in single precision)."""
    batch, seed, shift, flip_p, sigma = task
    n, h, w = batch.shape
    half = (h * w + 1) // 2  # one draw per two pixels
    k0 = np.arange(n, dtype=np.uint64) * np.uint64(3 + half)
    span = np.uint64(2 * shift + 1)
    dy = (_draws(seed, k0) % span).astype(np.int64) - shift
    dx = (_draws(seed, k0 + np.uint64(1)) % span).astype(np.int64) - shift
    u = (_draws(seed, k0 + np.uint64(2)) >> np.uint64(11)) * 2.0 ** -53
    src = np.where((u < flip_p)[:, None, None], batch[:, :, ::-1], batch)
    pad = np.pad(src, ((0, 0), (shift, shift), (shift, shift)))
    rows = (shift - dy)[:, None] + np.arange(h)
    cols = (shift - dx)[:, None] + np.arange(w)
    out = pad[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if sigma > 0:  # Box-Muller: cosine to even pixels, sine to odd ones
        k = k0[:, None] + np.uint64(3) + np.arange(half, dtype=np.uint64)
        z = _draws(seed, k)
        u1 = ((z >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0 ** 32
        u2 = ((z & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2.0 ** 32
        r, t = np.sqrt(-2.0 * np.log(u1)), 2.0 * np.pi * u2
        noise = np.stack([r * np.cos(t), r * np.sin(t)], axis=2)
        noise = noise.reshape(n, 2 * half)[:, :h * w]
        out = out + (sigma * noise).astype(np.float32).reshape(n, h, w)
    return out.astype(np.float32)


def featurise(batch):
    """Features of a batch of images (n, h, w), float32 (n, 192): the 8x8
    block means, and a histogram of gradient orientations (8 bins,
    weighted by magnitude) over 4x4 cells, scaled to unit length."""
    n, h, w = batch.shape
    c = h // 8
    pooled = batch[:, :8 * c, :8 * c].reshape(n, 8, c, 8, c).mean(axis=(2, 4))
    gy, gx = np.gradient(batch, axis=(1, 2))
    mag = np.hypot(gx, gy)
    ang = np.arctan2(gy, gx)
    bins = ((ang + np.pi) * (8 / (2 * np.pi))).astype(np.int64) % 8
    cy = np.minimum(np.arange(h) * 4 // h, 3)
    cx = np.minimum(np.arange(w) * 4 // w, 3)
    cell = (cy[:, None] * 4 + cx[None, :]) * 8
    idx = cell[None] + bins + (np.arange(n) * 128)[:, None, None]
    hist = np.bincount(idx.ravel(), weights=mag.ravel(),
                       minlength=n * 128).reshape(n, 128)
    hist /= np.linalg.norm(hist, axis=1, keepdims=True) + 1e-6
    return np.hstack([pooled.reshape(n, 64), hist]).astype(np.float32)


def np_augment_featurise(task):
    """Steps 2 and 3 in one function, as a multiprocessing user writes it."""
    return featurise(np_augment(task))


# ---- the data and the loop --------------------------------------------------


def load(size):
    """(train images, train labels, test images, test labels): float32
    images of size x size, a stratified quarter held out."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    imgs = X.reshape(-1, 8, 8).astype(np.float32)
    if size != 8:
        imgs = zoom(imgs, (1, size / 8, size / 8), order=1).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(imgs, y, test_size=0.25,
                                          stratify=y, random_state=0)
    return (np.ascontiguousarray(xtr), ytr, np.ascontiguousarray(xte), yte)


def spans(n, batch):
    return [(lo, min(lo + batch, n)) for lo in range(0, n, batch)]


class Run:
    """One pipeline run: the epochs' batch orders and seeds (the same for
    every variant), the model, the progress bar, the figures."""

    def __init__(self, args, data):
        self.args = args
        self.xtr, self.ytr, self.xte, self.yte = data
        self.spans = spans(len(self.xtr), args.batch)
        self.test_spans = spans(len(self.xte), args.batch)
        rng = np.random.default_rng(args.seed)
        self.orders = [rng.permutation(len(self.spans))
                       for _ in range(args.epochs)]
        self.classes = np.unique(self.ytr)

    def tasks(self, train):
        """(batch view, seed, shift, flip_p, sigma) per batch of every
        epoch, in training order; train holds the standardised images."""
        a = self.args
        for e, order in enumerate(self.orders):
            for b in order:
                lo, hi = self.spans[b]
                yield (train[lo:hi], a.seed * 1000003 + e * 1009 + int(b),
                       a.shift, a.flip_p, a.sigma)

    def labels(self):
        for order in self.orders:
            for b in order:
                lo, hi = self.spans[b]
                yield self.ytr[lo:hi]

    def train(self, name, features):
        """Fits a fresh model on the stream of feature batches; returns
        the seconds it took (the stream's work included)."""
        from sklearn.linear_model import SGDClassifier
        self.model = SGDClassifier(loss="log_loss", alpha=1e-4,
                                   random_state=0)
        total = len(self.spans) * len(self.orders)
        bar = progress_bar(total, name)
        t0 = time.perf_counter()
        for y, f in zip(self.labels(), features):
            self.model.partial_fit(f, y, classes=self.classes)
            if bar is not None:
                bar.update(1)
        t = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        return t

    def accuracy(self, test_features):
        f = np.concatenate(list(test_features))
        return float((self.model.predict(f) == self.yte).mean())


def progress_bar(total, name):
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=name, unit="batch", leave=False)


def run_picklepool(run, w):
    import picklepool
    from picklepool import Pool, native
    standardize = native("preprocess.standardize")
    augment = native("preprocess.augment")
    t0 = time.perf_counter()
    with Pool(w, plugins=["preprocess"]) as pool:
        # warm-up: both kinds of workers started, numpy imported in them
        pool.map(featurise, [run.xtr[:2]] * w)
        pool.map(augment, [(run.xtr[:2], 0)] * w)
        t_start = time.perf_counter() - t0
        t1 = time.perf_counter()
        # the images go into the shared heap once: every worker reads them
        # there, and so do the slices each batch takes
        xtr, xte = pool.asarray(run.xtr), pool.asarray(run.xte)
        # 1. standardise once; the results come back as views of the
        # pool's arena, gathered into the heap for the epochs to read
        train = pool.empty(xtr.shape, np.float32)
        for (lo, hi), out in zip(run.spans, pool.imap(
                standardize, (xtr[lo:hi] for lo, hi in run.spans))):
            train[lo:hi] = out
        test = pool.map(standardize, [xte[lo:hi] for lo, hi in
                                      run.test_spans])
        t_std = time.perf_counter() - t1
        # 2-4. augment (native) -> featurise (Python) -> partial_fit,
        # streaming: pool.imap pulls its input from the kernel's imap
        t_train = run.train("picklepool", pool.imap(
            featurise, pool.imap(augment, run.tasks(train))))
        acc = run.accuracy(pool.imap(featurise, test))
        copies = pool.copies()
    return dict(acc=acc, t_train=t_train, t_std=t_std, t_start=t_start,
                copies=copies, heap=picklepool.is_shared(train))


def run_mp(run, w):
    import multiprocessing
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(w) as pool:
        pool.map(featurise, [run.xtr[:2]] * w)
        t_start = time.perf_counter() - t0
        t1 = time.perf_counter()
        train = np.concatenate(pool.map(
            np_standardize, [run.xtr[lo:hi] for lo, hi in run.spans]))
        test = pool.map(np_standardize, [run.xte[lo:hi] for lo, hi in
                                         run.test_spans])
        t_std = time.perf_counter() - t1
        t_train = run.train("mp.Pool", pool.imap(np_augment_featurise,
                                                 run.tasks(train)))
        acc = run.accuracy(pool.imap(featurise, test))
    return dict(acc=acc, t_train=t_train, t_std=t_std, t_start=t_start)


def run_serial(run, w):
    t1 = time.perf_counter()
    train = np.concatenate([np_standardize(run.xtr[lo:hi])
                            for lo, hi in run.spans])
    test = [np_standardize(run.xte[lo:hi]) for lo, hi in run.test_spans]
    t_std = time.perf_counter() - t1
    t_train = run.train("serial", map(np_augment_featurise, run.tasks(train)))
    acc = run.accuracy(map(featurise, test))
    return dict(acc=acc, t_train=t_train, t_std=t_std, t_start=0.0)


VARIANTS = {"picklepool": run_picklepool, "mp": run_mp, "serial": run_serial}
LABELS = {"picklepool": "picklepool", "mp": "multiprocessing.Pool",
          "serial": "serial loop"}


def parse(argv):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None,
                    help="passes over the training images (default 30, "
                    "--quick 3)")
    ap.add_argument("--size", type=int, default=None,
                    help="image side in pixels, a multiple of 8 (default 32, "
                    "--quick 16)")
    ap.add_argument("--batch", type=int, default=256,
                    help="images per batch (default 256)")
    ap.add_argument("--workers", type=int, default=None,
                    help="workers per pool (default: one per core)")
    ap.add_argument("--shift", type=int, default=None,
                    help="largest move in pixels (default: size / 16, half "
                    "a pixel of the original 8x8)")
    ap.add_argument("--flip-p", type=float, default=0.0,
                    help="probability of mirroring an image (default 0)")
    ap.add_argument("--sigma", type=float, default=0.1,
                    help="std of the added noise (default 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="a few seconds' run: 3 epochs of 16x16 images")
    ap.add_argument("--only", default=",".join(VARIANTS),
                    help="comma-separated variants: " + ",".join(VARIANTS))
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.quick else 30
    if args.size is None:
        args.size = 16 if args.quick else 32
    if args.shift is None:
        args.shift = args.size // 16
    args.only = [v.strip() for v in args.only.split(",") if v.strip()]
    bad = [v for v in args.only if v not in VARIANTS]
    if bad:
        ap.error("unknown variant %s (choose from %s)"
                 % (",".join(bad), ",".join(VARIANTS)))
    if (args.epochs < 1 or args.batch < 1 or args.size < 8 or args.size % 8
            or args.shift < 0 or args.sigma < 0 or not 0 <= args.flip_p <= 1):
        ap.error("--epochs and --batch must be at least 1, --size a "
                 "multiple of 8, --shift and --sigma non-negative, "
                 "--flip-p in [0, 1]")
    return args


def main(argv=None):
    _set_paths()
    args = parse(sys.argv[1:] if argv is None else argv)
    w = args.workers or len(os.sched_getaffinity(0))
    data = load(args.size)
    run = Run(args, data)
    n_img = len(run.xtr) * args.epochs
    print("digits: %d training images of %dx%d (float32), %d test; %d "
          "epochs of %d batches of %d; %d workers"
          % (len(run.xtr), args.size, args.size, len(run.xte), args.epochs,
             len(run.spans), args.batch, w), flush=True)
    results = {}
    for name in args.only:
        r = VARIANTS[name](run, w)
        results[name] = r
        print("%-22s accuracy %.3f  %8.0f images/s  (train %.2f s, "
              "standardise %.2f s, pool start %.2f s)"
              % (LABELS[name], r["acc"], n_img / r["t_train"], r["t_train"],
                 r["t_std"], r["t_start"]), flush=True)
    pp = results.get("picklepool")
    if pp is not None:
        c = pp["copies"]
        print("picklepool copied %.1f MB of arguments into an arena (the "
              "kernel's output, on its way to featurise: the Python workers "
              "do not map the native workers' arena) and %.1f MB of results "
              "(featurise's: a Python function's result is copied once); "
              "the images and the kernels' inputs: nothing"
              % (c["in"] / 1e6, c["out"] / 1e6))
        for name in ("mp", "serial"):
            if name in results:
                print("picklepool throughput: %.2fx %s"
                      % (results[name]["t_train"] / pp["t_train"],
                         LABELS[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
