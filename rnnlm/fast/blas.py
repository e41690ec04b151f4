"""Which library runs the fast engine's matrix products: NumPy's own BLAS (OpenBLAS, in
NumPy's wheels), or Intel's MKL through its CBLAS (the extra rnnlm[mkl]; the one place
rnnlm loads it), whichever runs this machine's products faster.

Every product of the engine goes through `active.matmul(a, b, out)`, which computes
out = a @ b for 2-D float arrays, as np.matmul does. The two libraries give the same
products up to float rounding (they sum in other orders), so which one ran decides the
last bits of a run's numbers: the choice is measured once per machine and remembered (in
the kernels' cache directory, beside Numba's compiled code), so that every run on the
machine, a resumed one included, uses the same library. $RNNLM_BLAS (openblas | mkl)
forces one.

Why it is worth a choice: on a 2-core Intel Emerald Rapids, MKL ran a recurrent step's
product (768 x 256 by 32 columns) at 183 GFLOP/s on one thread where OpenBLAS, running
its SkylakeX kernels on a CPU it does not recognise, ran it at 122 (issue 31). On a 2-core
AMD EPYC (AVX2, AVX-512) MKL ran the same product at 82 against OpenBLAS's 93, and at 55
on two threads against 177: MKL serves AMD CPUs poorly, and there the measurement keeps
OpenBLAS (benchmarks/bench.py --gemm prints these rates for the machine it runs on).
"""
import ctypes
import ctypes.util
import glob
import hashlib
import os
import platform
import re
import sys
import time

import numpy as np

from rnnlm.errors import RnnlmError

PROVIDERS = ("openblas", "mkl")
# CBLAS's enumerations
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


class NumPyBLAS:
    """The BLAS NumPy was built with: OpenBLAS in NumPy's wheels."""

    name = "openblas"
    precision = "float32"

    @staticmethod
    def matmul(a, b, out=None):
        return np.matmul(a, b, out=out)

    @staticmethod
    def keep(name, *weights):
        """Weights that stay as they are through a window (BF16 converts them once)."""

    @staticmethod
    def describe():
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return "NumPy's BLAS"
        found = [f"{i['internal_api']} {i.get('version') or ''} ({i.get('architecture') or '?'}"
                 f" kernels)" for i in threadpool_info() if i["user_api"] == "blas"
                 and i["internal_api"] != "mkl"]
        return found[0] if found else "NumPy's BLAS"


class MKL:
    """Intel's MKL, its CBLAS called through ctypes: cblas_sgemm and cblas_dgemm on the
    arrays' own memory (no copy where an array is row-major or a transpose of one, as all
    of the engine's are)."""

    name = "mkl"
    precision = "float32"
    keep = NumPyBLAS.keep

    def __init__(self, path):
        self.path, self.lib = path, ctypes.CDLL(path)
        arguments = ([ctypes.c_int] * 6 + [None, ctypes.c_void_p, ctypes.c_int,
                                           ctypes.c_void_p, ctypes.c_int, None,
                                           ctypes.c_void_p, ctypes.c_int])
        self.gemm = {}
        for dtype, symbol, scalar in ((np.float32, "cblas_sgemm", ctypes.c_float),
                                      (np.float64, "cblas_dgemm", ctypes.c_double)):
            function = getattr(self.lib, symbol)
            function.restype = None
            function.argtypes = [scalar if t is None else t for t in arguments]
            self.gemm[np.dtype(dtype)] = function
        self.gemm_bf16 = self.lib.cblas_gemm_bf16bf16f32  # uint16 bits in, float32 out
        self.gemm_bf16.restype = None
        self.gemm_bf16.argtypes = self.gemm[np.dtype(np.float32)].argtypes

    def matmul_bf16(self, a, b, out):
        """out = a @ b, a and b bfloat16 (as uint16, to_bf16's), contiguous; out float32:
        MKL's cblas_gemm_bf16bf16f32, which runs on AMX or AVX512-BF16 units where the CPU
        has them, and more slowly on any AVX-512 CPU. What its speed is worth: bench.py
        --gemm."""
        (m, k), n = a.shape, b.shape[1]
        self.gemm_bf16(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0, a.ctypes.data, k,
                       b.ctypes.data, n, 0.0, out.ctypes.data, out.strides[0] // out.itemsize)
        return out

    def describe(self):
        version = ctypes.create_string_buffer(256)
        try:
            self.lib.mkl_get_version_string(version, 256)
        except AttributeError:
            return f"MKL ({self.path})"
        found = re.search(r"Version ([\d.]+)", version.value.decode(errors="replace"))
        return f"MKL {found.group(1)}" if found else "MKL"

    def matmul(self, a, b, out=None):
        if a.ndim == 2 and b.ndim == 3 and out is not None:  # a by each of a stack
            for b_t, out_t in zip(b, out):
                self.matmul(a, b_t, out_t)
            return out
        gemm = self.gemm.get(a.dtype)
        if out is None:
            out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
        layouts = _layout(a), _layout(b), _layout(out)
        if (gemm is None or a.ndim != 2 or b.ndim != 2 or not a.dtype == b.dtype == out.dtype
                or None in layouts or layouts[2][0] == TRANS or 0 in a.shape + b.shape):
            return np.matmul(a, b, out=out)  # a shape or type the engine never multiplies
        (m, k), n = a.shape, b.shape[1]
        (trans_a, lda), (trans_b, ldb), (_, ldc) = layouts
        gemm(ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a.ctypes.data, lda,
             b.ctypes.data, ldb, 0.0, out.ctypes.data, ldc)
        return out


class BF16:
    """MKL's bfloat16 products (precision "bf16"): each product's operands rounded to
    bfloat16, multiplied with float32 accumulation, the result float32. Parameters,
    optimizer state, elementwise work and the loss stay float32. The weights that a
    window multiplies at every step (a layer's W_hh and its transpose) are rounded once
    per window (keep); every other operand at its product."""

    name = "mkl"
    precision = "bf16"

    def __init__(self, mkl):
        self.mkl, self.kept = mkl, {}  # name -> (the float32 array, its bfloat16 bits)

    def describe(self):
        return f"{self.mkl.describe()} in bfloat16"

    def keep(self, name, *weights):
        for k, w in enumerate(weights):
            self.kept[f"{name}.{k}"] = (w, to_bf16(w))

    def _bits(self, x):
        """x as bfloat16: kept (the very array keep() was given), else rounded now."""
        return next((bits for array, bits in self.kept.values() if array is x), None) \
            if x.ndim == 2 else None

    def matmul(self, a, b, out=None):
        if a.dtype != np.float32 or b.dtype != np.float32:
            return self.mkl.matmul(a, b, out)  # float64 (gradient checks) stays exact
        if out is None:
            out = np.empty(a.shape[:-1] + b.shape[-1:] if b.ndim == 2 else
                           (b.shape[0], a.shape[0], b.shape[2]), np.float32)
        a16 = self._bits(a)
        a16 = to_bf16(a) if a16 is None else a16
        if b.ndim == 3:  # a by each of a stack
            for b_t, out_t in zip(b, out):
                self._product(a16, to_bf16(b_t), out_t)
            return out
        return self._product(a16, to_bf16(b), out)

    def _product(self, a16, b16, out):
        if _layout(out) is not None and _layout(out)[0] == NO_TRANS:
            return self.mkl.matmul_bf16(a16, b16, out)
        out[...] = self.mkl.matmul_bf16(a16, b16, np.empty(out.shape, np.float32))
        return out


def _layout(x):
    """How row-major CBLAS sees a 2-D array: (NO_TRANS, its leading dimension) where its
    rows are contiguous, (TRANS, ...) where its columns are (it is a transpose), else None."""
    if x.ndim != 2:
        return None
    (rows, cols), (s0, s1), size = x.shape, x.strides, x.itemsize
    if (s1 == size or cols == 1) and s0 % size == 0 and s0 // size >= max(cols, 1):
        return NO_TRANS, s0 // size
    if (s0 == size or rows == 1) and s1 % size == 0 and s1 // size >= max(rows, 1):
        return TRANS, s1 // size
    return None


def to_bf16(x):
    """float32 -> bfloat16, rounded to nearest even, as the uint16 of its bits."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def find_mkl():
    """The path of MKL's single dynamic library (mkl_rt), or None: the one the package
    `mkl` installs beside Python (pip install 'rnnlm[mkl]'), else the system's."""
    for prefix in (sys.prefix, sys.base_prefix):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[0]
    return ctypes.util.find_library("mkl_rt")


def provider(name):
    """The library called `name` (PROVIDERS), or a one-line error saying what is missing."""
    if name == "openblas":
        return NumPyBLAS()
    if name != "mkl":
        raise RnnlmError(f"RNNLM_BLAS must be one of {', '.join(PROVIDERS)}, got {name!r}")
    path = find_mkl()
    if path is None:
        raise RnnlmError("the BLAS 'mkl' needs Intel's MKL: pip install 'rnnlm[mkl]'")
    try:
        return MKL(path)
    except (OSError, AttributeError) as e:
        raise RnnlmError(f"MKL at {path} cannot be loaded: {e}") from None


active = NumPyBLAS()  # until load() chooses


def available():
    """The libraries this machine can run the products on."""
    return [NumPyBLAS()] + ([provider("mkl")] if find_mkl() else [])


# The products timed to choose: a recurrent step's (GRU 256: 768 x 256 by 32 columns),
# its backward (256 x 768 by 32), and a window's input or output product (768 x 256 by
# 2,048 columns): the default model's, whose shapes are typical of rnnlm's.
SHAPES = ((768, 256, 32), (256, 768, 32), (768, 256, 2048))


def rate(product, m, k, n, bf16=False, seconds=0.05):
    """GFLOP/s of product(a, b, out) on (m, k) by (k, n) float32 operands (bfloat16 bits,
    to_bf16's, where bf16): the best of three timings of repeated products, about
    `seconds` each."""
    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
    if bf16:
        a, b = to_bf16(a), to_bf16(b)
    out = np.empty((m, n), np.float32)
    product(a, b, out)  # warm: the library's threads and buffers
    started = time.perf_counter()
    product(a, b, out)
    reps = max(1, int(seconds / max(time.perf_counter() - started, 1e-7)))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(reps):
            product(a, b, out)
        best = min(best, (time.perf_counter() - started) / reps)
    return 2 * m * k * n / best / 1e9


def measure(libraries, seconds=0.05):
    """Each library's time for one of each SHAPES product (in seconds, as rates say), the
    fastest first: [(library, seconds)]."""
    times = [(lib, sum(2 * m * k * n / (rate(lib.matmul, m, k, n, seconds=seconds) * 1e9)
                       for m, k, n in SHAPES)) for lib in libraries]
    return sorted(times, key=lambda pair: pair[1])


def load(name=None, notify=None, precision="float32"):
    """Make a library the active one and return it: `name`, else $RNNLM_BLAS, else the
    one this machine's measurement chose (measured now, the first time, in about a
    second); with precision "bf16", MKL's bfloat16 products. notify(message) hears the
    measurement where one is made."""
    global active
    if precision == "bf16":
        active = bf16()
        return active
    name = name or os.environ.get("RNNLM_BLAS")
    if name:
        active = provider(name)
        return active
    libraries = available()
    active = libraries[0] if len(libraries) == 1 else _chosen(libraries, notify)
    return active


def bf16():
    """MKL's bfloat16 products, or a one-line error saying what is missing."""
    if find_mkl() is None:
        raise RnnlmError("precision bf16 runs on Intel's MKL: pip install 'rnnlm[mkl]'")
    return BF16(provider("mkl"))


# CPU flags of units that multiply bfloat16 (Linux's names): AMX's tiles, AVX-512's
# dot products.
BF16_UNITS = ("amx_bf16", "avx512_bf16")


def bf16_pays(notify=None):
    """precision "auto": whether bfloat16 products are worth using here: the CPU has
    units for them, MKL is installed, and they run a step's and a window's products
    faster than the float32 library would (each at its best thread count)."""
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    if not any(unit in flags for unit in BF16_UNITS) or find_mkl() is None:
        return False
    libraries = [load(notify=notify), bf16()]
    return _remembered("precision", "precision auto", libraries,
                       lambda lib: lib.precision, notify) == "bf16"


def _chosen(libraries, notify):
    """The faster of `libraries` on this machine, as remembered, else measured now."""
    name = _remembered("blas", "matrix products", libraries, lambda lib: lib.name, notify)
    return next(lib for lib in libraries if lib.name == name)


def _remembered(kind, saying, libraries, key, notify):
    """key() of the faster of `libraries` on this machine: as remembered (in the kernels'
    cache directory, a file `kind`-<the libraries and the machine>), else measured now,
    said to notify(message) as `saying`: ..., and remembered. Measured once per machine,
    so that every process there decides alike."""
    from rnnlm.fast.kernels import cache_dir

    memo = cache_dir() / f"{kind}-{_signature(libraries)}"
    try:
        remembered = memo.read_text().split()[0]
        if remembered in {key(lib) for lib in libraries}:
            return remembered
    except (OSError, IndexError):
        pass
    times = _at_best_threads(libraries)
    chosen = key(times[0][0])
    (notify or (lambda message: None))(
        f"{saying}: " + ", ".join(f"{lib.describe()} {seconds * 1e3:.2f} ms"
                                  for lib, seconds in times)
        + f" (the products of a step and of a window): using {chosen}")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(" ".join([chosen] + [f"{key(lib)}={seconds:.6f}"
                                             for lib, seconds in times]) + "\n")
    except OSError:
        pass  # measured again by the next run
    return chosen


def cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _at_best_threads(libraries):
    """measure(), each library at its best thread count (one, or every core: a pool that
    synchronises in every small product can be slower than one thread)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return measure(libraries, seconds=0.015)
    best = {}
    for threads in sorted({1, cores()}):
        with threadpool_limits(threads, user_api="blas"):
            for lib, seconds in measure(libraries, seconds=0.015):
                best[lib] = min(best.get(lib, seconds), seconds)
    return sorted(best.items(), key=lambda pair: pair[1])


def _signature(libraries):
    """What the choice depends on: the libraries, and the machine."""
    cpu = ""
    if os.path.exists("/proc/cpuinfo"):
        cpu = next((line for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    text = " ".join([lib.describe() for lib in libraries]
                    + [cpu, str(cores()), platform.machine()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
