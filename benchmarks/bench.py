"""Training and sampling speed and peak memory of rnnlm, side by side with PyTorch.

    python benchmarks/bench.py                 # every configuration, both kernel paths
    python benchmarks/bench.py --quick         # fewer steps, ~3 minutes
    python benchmarks/bench.py --only rnn256   # one configuration
    python benchmarks/bench.py --quick --textbook --only lstm2x256   # the engines compared
    python benchmarks/bench.py --versus ../old-checkout              # before and after
    python benchmarks/bench.py --smoke         # a few steps of everything: it runs, no figures
    python benchmarks/bench.py --gemm          # the GEMM rates of each BLAS rnnlm can use

rnnlm is measured on each of its kernel paths (RNNLM_KERNELS=numba where Numba is
installed, and numpy). Each measurement runs in a fresh subprocess, so its peak RSS is its
own. Training is
measured through rnnlm's own training loop (windows from B streams, forward, BPTT, global
norm clipping, the optimizer update); PyTorch runs the same windows through
nn.RNN/LSTM/GRU + nn.Linear on one-hot input with the same optimizer and clipping.
Throughput is characters per second of full steps after a warm-up; sampling is batch 1,
one character at a time, temperature 1. The machine's float32 GEMM rate is measured in
rnnlm's process right after its training run, and the rate rnnlm achieved (its GEMM FLOPs
per second) is shown as a share of it. PyTorch is optional: without it, its columns are
blank.

The machine's speed drifts by several percent over minutes, so each configuration is
measured in `--rounds` rounds, rnnlm and PyTorch alternating, and the table gives the
medians: chars/s, and the ratio as the median of each round's rnnlm/PyTorch ratio (runs
next to each other in time share the machine's state), followed by the lowest and highest
of those ratios.
"""
import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# name -> settings; vocab 65 (tiny Shakespeare) unless said, batch 32, windows of 64, adam.
CONFIGS = {
    "rnn128": dict(cell="rnn", hidden=128),
    "rnn256": dict(cell="rnn", hidden=256),
    "rnn512": dict(cell="rnn", hidden=512),
    "gru256": dict(cell="gru", hidden=256),
    "lstm2x256": dict(cell="lstm", hidden=256, layers=2),
    "rnn256-v6000": dict(cell="rnn", hidden=256, vocab=6000),
    "min-char-rnn": dict(cell="rnn", hidden=100, seq_len=25, batch_size=1,
                         optimizer="adagrad", lr=0.1, clip_norm=0.0, clip_value=5.0),
}
SAMPLED = ("rnn512", "lstm2x256", "rnn256")


def settings(name):
    s = dict(cell="rnn", hidden=256, layers=1, vocab=65, batch_size=32, seq_len=64,
             optimizer="adam", lr=2e-3, clip_norm=5.0, clip_value=0.0)
    s.update(CONFIGS[name])
    return s


def corpus(vocab_size):
    """(characters, ids): tiny Shakespeare for V=65, else Zipf-distributed text over
    vocab_size CJK characters (a Chinese corpus's shape)."""
    if vocab_size == 65 and SHAKESPEARE.exists():
        from rnnlm.io import corpus as corpus_lib
        text = corpus_lib.read([SHAKESPEARE])
        return text.vocab.chars, text.ids
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, vocab_size + 1)
    ids = rng.choice(vocab_size, size=1_200_000, p=weights / weights.sum())
    ids[:vocab_size] = np.arange(vocab_size)  # every character occurs
    chars = "".join(chr(0x4E00 + i) for i in range(vocab_size))
    return chars, ids.astype(np.min_scalar_type(vocab_size - 1))


def gemm_flops_per_char(s):
    """Multiply-adds x 2 of every GEMM in one training step, per character: forward,
    backward to activations, and weight gradients (3 GEMMs per weight matrix; the
    one-hot input product is a lookup and not counted)."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[s["cell"]]
    H, V, L = s["hidden"], s["vocab"], s["layers"]
    macs = L * G * H * H + (L - 1) * G * H * H + H * V  # W_hh, deeper W_ih, output
    return 2 * 3 * macs


def rss_mb():
    """This process's peak resident set, MB. /proc's VmHWM, not getrusage's ru_maxrss,
    which a child inherits from the parent that forked it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- workers: one measurement each, in its own process --------------------------------

def rnnlm_layout():
    """(Step, train, Vocab) from the rnnlm imported, whichever its layout: a --versus
    checkout may be from before run/ and io/ (its modules then sat in rnnlm/ itself)."""
    import importlib

    import rnnlm
    here = Path(rnnlm.__file__).parent
    if (here / "run").is_dir():
        training, data = "rnnlm.run.training", "rnnlm.io.data"
    else:
        training = "rnnlm.training" if (here / "training.py").exists() else "rnnlm.train"
        data = "rnnlm.data"
    training, data = importlib.import_module(training), importlib.import_module(data)
    return training.Step, training.train, data.Vocab


def worker_rnnlm(name, steps, sample_chars, engine="fast"):
    from rnnlm.config import Config
    from rnnlm.sample import generate
    Step, train, Vocab = rnnlm_layout()

    s = settings(name)
    chars, ids = corpus(s["vocab"])
    cfg = Config(cell=s["cell"], hidden=s["hidden"], layers=s["layers"],
                 batch_size=s["batch_size"], seq_len=s["seq_len"], optimizer=s["optimizer"],
                 lr=s["lr"], clip_norm=s["clip_norm"], clip_value=s["clip_value"], dropout=0.0,
                 max_steps=steps + 5, max_seconds=0.0, eval_every=10 ** 9, log_every=10 ** 9,
                 sample_length=0,
                 **({} if engine == "fast" else {"engine": engine}))
    vocab = Vocab(chars)
    products, precision = "", os.environ.get("BENCH_PRECISION", "float32")
    try:  # the BLAS a user's run chooses (fast/blas.py); a --versus checkout may predate it
        from rnnlm import engines
        engines.load_kernels(**({"precision": precision} if precision != "float32" else {}))
        products = engines.describe(engine)
    except (ImportError, AttributeError):
        pass
    if precision != "float32":
        cfg = dataclasses.replace(cfg, precision=precision)
    base = rss_mb()
    times = []
    with tempfile.TemporaryDirectory() as out:
        run = train(cfg, vocab, ids, out)
        for event in run:
            if isinstance(event, Step):
                times.append(time.perf_counter())
                if event.step == cfg.max_steps:
                    break
    chars_per_step = cfg.batch_size * cfg.seq_len
    train_cps = chars_per_step * (len(times) - 6) / (times[-1] - times[5])
    peak = rss_mb()  # before the GEMM timing allocates arrays of its own
    result = dict(train_cps=train_cps, peak_mb=peak, base_mb=base, gemm=gemm_rate(),
                  products=products)
    if sample_chars:
        from rnnlm.params import Spec, init_params
        spec = Spec(cfg.cell, vocab.size, cfg.hidden, cfg.layers)  # any --versus checkout's
        params = init_params(spec, np.random.default_rng(0))
        rng = np.random.default_rng(0)
        gen = generate(params, spec, vocab, rng, prime=chars[0], length=sample_chars + 100,
                       **({} if engine == "fast" else {"engine": engine}))
        for _ in range(100):
            next(gen)
        t0 = time.perf_counter()
        for _ in gen:
            pass
        result["sample_cps"] = sample_chars / (time.perf_counter() - t0)
    return result


def worker_torch(name, steps, sample_chars):
    import torch
    import torch.nn.functional as F

    from rnnlm.io.data import Streams

    s = settings(name)
    chars, ids = corpus(s["vocab"])
    V, H, L, B, T = s["vocab"], s["hidden"], s["layers"], s["batch_size"], s["seq_len"]
    torch.manual_seed(0)
    if os.environ.get("BENCH_PRECISION") == "bf16":  # PyTorch's own switch (2.9+)
        torch.backends.mkldnn.rnn.fp32_precision = "bf16"
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[s["cell"]](V, H, L)
    out = torch.nn.Linear(H, V)
    params = list(rnn.parameters()) + list(out.parameters())
    opt = {"adam": lambda: torch.optim.Adam(params, lr=s["lr"]),
           "adagrad": lambda: torch.optim.Adagrad(params, lr=s["lr"])}[s["optimizer"]]()
    n_train = len(ids) - int(round(len(ids) * 0.1))
    streams = Streams(ids[:n_train], B, T)
    zeros = torch.zeros(L, B, H)
    state = (zeros, zeros.clone()) if s["cell"] == "lstm" else zeros
    base = rss_mb()
    times = []
    window = 0
    for _ in range(steps + 5):
        x, y = streams.window(window)
        window = (window + 1) % streams.windows
        xt = torch.from_numpy(x.T.astype(np.int64))
        yt = torch.from_numpy(y.T.astype(np.int64))
        hs, state = rnn(F.one_hot(xt, V).float(), state)
        loss = F.cross_entropy(out(hs).reshape(-1, V), yt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        if s["clip_norm"]:
            torch.nn.utils.clip_grad_norm_(params, s["clip_norm"])
        if s["clip_value"]:
            torch.nn.utils.clip_grad_value_(params, s["clip_value"])
        opt.step()
        state = tuple(h.detach() for h in state) if isinstance(state, tuple) else state.detach()
        times.append(time.perf_counter())
    train_cps = B * T * (len(times) - 6) / (times[-1] - times[5])
    blas = next((part.split("=", 1)[1] for part in torch.__config__.show().replace(",", " ").split()
                 if part.startswith("BLAS_INFO=")), "?")
    result = dict(train_cps=train_cps, peak_mb=rss_mb(), base_mb=base,
                  products=f"torch {torch.__version__}, BLAS {blas}, threads "
                           f"{torch.get_num_threads()}")
    if sample_chars:
        with torch.no_grad():
            h = torch.zeros(L, 1, H)
            h = (h, h.clone()) if s["cell"] == "lstm" else h
            current = 0
            for i in range(sample_chars + 100):
                if i == 100:
                    t0 = time.perf_counter()
                x = F.one_hot(torch.tensor([[current]]), V).float()
                hs, h = rnn(x, h)
                probs = torch.softmax(out(hs[0, 0]) / 1.0, dim=-1)
                current = int(torch.multinomial(probs, 1))
            result["sample_cps"] = sample_chars / (time.perf_counter() - t0)
    return result


def worker_memory(size_mb, steps, _):
    size_mb = int(size_mb)
    """Train with `rnnlm train` on a corpus of size_mb MB (tiny Shakespeare repeated, or
    generated text) and report this process's peak RSS against the corpus and model."""
    from rnnlm.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        unit = SHAKESPEARE.read_bytes() if SHAKESPEARE.exists() else (
            "".join(chr(32 + i % 90) for i in range(10 ** 6)).encode())
        with open(path, "wb") as f:
            for _ in range(size_mb * 2 ** 20 // len(unit)):
                f.write(unit)
            f.write(unit[:size_mb * 2 ** 20 % len(unit)])
        del unit  # the benchmark's, not rnnlm's
        corpus_mb = path.stat().st_size / 2 ** 20
        out = Path(tmp) / "run"
        cli.main(["train", str(path), "--out", str(out), "--max-steps", str(steps), "-q"],
                 standalone_mode=False)
        model_mb = (out / "last.npz").stat().st_size / 2 ** 20  # parameters + optimizer slots
    return dict(corpus_mb=corpus_mb, model_mb=model_mb, peak_mb=rss_mb())


def gemm_rate():
    """The machine's float32 GEMM rate, GFLOP/s: the best of a few timings of large square
    sizes, about half a second in all."""
    best = 0.0
    for n in (1024, 2048):
        a = np.random.default_rng(0).random((n, n), np.float32)
        c = np.empty_like(a)
        np.dot(a, a, out=c)
        reps = max(3, int(2e10 / (2 * n ** 3)))
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                np.dot(a, a, out=c)
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


# The products of issue 31's table: a large square; a recurrent step's (G*H x H by B
# columns), its transpose's, and a window's input or output product (by T*B columns).
GEMM_SHAPES = ((2048, 2048, 2048), (768, 256, 32), (32, 256, 768), (2048, 256, 768))


# A GRU 256 step's product by the columns of an update: the streams (batch) it runs.
COLUMNS = tuple((768, 256, n) for n in (16, 32, 64, 128, 256))


def gemm_table(seconds):
    """GFLOP/s of each library that can run rnnlm's products (fast/blas.py), on one thread
    and on every core, float32 and (MKL) bfloat16 in, float32 out: for GEMM_SHAPES, and
    for a step's product by more or fewer columns (COLUMNS)."""
    from threadpoolctl import threadpool_limits

    from rnnlm.fast import blas
    from rnnlm.engines import cores

    counts = sorted({1, cores()})
    libraries = [(lib, "float32", lib.matmul) for lib in blas.available()]
    libraries += [(lib, "bf16", lambda a, b, out, lib=lib: lib.matmul_bf16(a, b, out))
                  for lib in blas.available() if lib.name == "mkl"]
    for title, shapes in (("GEMM rates", GEMM_SHAPES), ("a step's product by columns", COLUMNS)):
        print(f"\n{title}, GFLOP/s (m x k by n columns), threads " + " / ".join(map(str, counts)))
        print(f"{'library':<46}" + "".join(f"{f'{m}x{k} by {n}':>22}" for m, k, n in shapes))
        for lib, precision, product in libraries:
            cells = []
            for m, k, n in shapes:
                rates = []
                for count in counts:
                    with threadpool_limits(count, user_api="blas"):
                        rates.append(blas.rate(product, m, k, n, precision == "bf16", seconds))
                cells.append(" / ".join(f"{r:.0f}" for r in rates))
            print(f"{lib.describe() + ', ' + precision:<46}" + "".join(f"{c:>22}" for c in cells),
                  flush=True)


def measure(impl, name, steps, sample_chars, env=None):
    cmd = [sys.executable, __file__, "--worker", impl, name, str(steps), str(sample_chars)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})))
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{impl} {name} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_extensions():
    """The vector extensions NumPy's speed depends on (AVX2, AVX-512)."""
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return "extensions unknown"
    return "+".join(name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"),
                                            ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX"))
                    if flag in flags) or "no AVX2"


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return ", ".join(f"{i['internal_api']} {i.get('architecture', '')} x{i['num_threads']}"
                         for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        return "threadpoolctl not installed"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps of every configuration and side, one round, a 1 MB "
                             "memory check: that everything runs (CI); no figures to quote")
    parser.add_argument("--only", action="append", choices=list(CONFIGS))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--memory", type=int, default=100, metavar="MB",
                        help="corpus size for the memory check; 0 skips it [100]")
    parser.add_argument("--rounds", type=int, default=3, metavar="N",
                        help="alternating measurements of each side per configuration [3]")
    parser.add_argument("--textbook", action="store_true",
                        help="measure the textbook engine too (slow: use --quick)")
    parser.add_argument("--versus", type=Path, metavar="DIR",
                        help="another checkout of rnnlm (e.g. a git worktree of an earlier "
                             "commit), measured alongside: before/after figures in one run")
    parser.add_argument("--bf16", action="store_true",
                        help="also rnnlm with precision bf16 (MKL) and PyTorch with its "
                             "bf16 switch for RNNs (torch.backends.mkldnn.rnn.fp32_precision)")
    parser.add_argument("--gemm", action="store_true",
                        help="only the GEMM rates of each BLAS rnnlm can use, on rnnlm's shapes")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.memory = 1, min(args.memory, 1)
    if args.worker:
        impl, name, steps, sample_chars = args.worker
        work = {"rnnlm": worker_rnnlm, "torch": worker_torch, "memory": worker_memory,
                "textbook": lambda *a: worker_rnnlm(*a, engine="textbook")}[impl]
        print(json.dumps(work(name, int(steps), int(sample_chars))))
        return

    if args.gemm:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({cpu_extensions()})")
        gemm_table(0.001 if args.smoke else 0.1)
        if args.smoke:
            print("\nsmoke run: every library ran; its figures are not measurements")
        return
    try:
        import torch
        torch_version = None if args.no_torch else torch.__version__
    except ImportError:
        torch_version = None
    # The sides measured in each round, one after another: (label, worker, environment):
    # rnnlm on each kernel path (fast/kernels.py), and the peers.
    try:
        import numba  # noqa: F401  (only to know whether the numba path can run)
        sides = [("numba", "rnnlm", {"RNNLM_KERNELS": "numba"})]
    except ImportError:
        sides = []
    sides.append(("numpy", "rnnlm", {"RNNLM_KERNELS": "numpy"}))
    if args.textbook:  # the textbook engine, the specification: how much the fast one buys
        sides.append(("textbook", "textbook", {}))
    if args.versus:  # another checkout of rnnlm, imported ahead of this one
        sides.append((args.versus.name, "rnnlm", {"PYTHONPATH": str(args.versus.resolve())}))
    if args.bf16:
        sides.insert(1, ("bf16", "rnnlm", {"BENCH_PRECISION": "bf16"}))
    if torch_version:
        sides.append(("torch", "torch", {}))
        if args.bf16:
            sides.append(("torch-bf16", "torch", {"BENCH_PRECISION": "bf16"}))
    names = args.only or list(CONFIGS)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({cpu_extensions()}); "
          f"numpy {np.__version__} ({blas_info()}); torch {torch_version or 'absent'}")
    print("OPENBLAS_CORETYPE=" + os.environ.get("OPENBLAS_CORETYPE", "(unset)")
          + " OPENBLAS_L2_SIZE=" + os.environ.get("OPENBLAS_L2_SIZE", "(unset)"))
    versus = [label for label, _, _ in sides[1:]]
    print(f"medians of {args.rounds} rounds, the sides ({', '.join(l for l, _, _ in sides)}) "
          f"measured one after another in each; 'vs X': the median of the rounds' ratios to "
          f"side X [their lowest-highest]; GEMM: numpy's float32 rate on large squares "
          f"(GFLOP/s), measured in rnnlm's process right after its run, and the share of it "
          f"that rnnlm's training step achieved\n")
    header = (f"{'config':<14}{'side':<10}{'chars/s':>10}"
              + "".join(f"{'vs ' + v:>20}" for v in versus)
              + f"{'GEMM':>6}{'share':>6}{'MB':>6}{'sample/s':>10}"
              + "".join(f"{'vs ' + v:>13}" for v in versus))
    print(header)
    print("-" * len(header))
    for name in names:
        s = settings(name)
        steps = {"min-char-rnn": 2000}.get(name, 40 if args.quick else 120)
        if args.quick and name == "min-char-rnn":
            steps = 600
        sample_chars = (1000 if args.quick else 4000) if name in SAMPLED else 0
        if args.smoke:
            steps, sample_chars = 2, min(sample_chars, 20)
        rounds = [{label: measure(worker, name, steps, sample_chars, env)
                   for label, worker, env in sides} for _ in range(args.rounds)]

        def median(label, key):
            values = [r[label][key] for r in rounds if key in r[label]]
            return statistics.median(values) if values else None

        def ratio(label, other, key, spread=True):
            values = [r[label][key] / r[other][key] for r in rounds
                      if key in r[label] and key in r[other]]
            if label == other or not values:
                return ""
            text = f"{statistics.median(values):.2f}x"
            return text + (f" [{min(values):.2f}-{max(values):.2f}]" if spread else "")

        for i, (label, _, _) in enumerate(sides):
            gemm = median(label, "gemm")
            share = (statistics.median(r[label]["train_cps"] * gemm_flops_per_char(s) / 1e9
                                       / r[label]["gemm"] for r in rounds) if gemm else None)
            sample = median(label, "sample_cps")
            print(f"{name if i == 0 else '':<14}{label:<10}{median(label, 'train_cps'):>10,.0f}"
                  + "".join(f"{ratio(label, v, 'train_cps'):>20}" for v in versus)
                  + (f"{gemm:>6.0f}{share:>6.0%}" if gemm else f"{'':>12}")
                  + f"{median(label, 'peak_mb'):>6.0f}"
                  + (f"{sample:>10,.0f}" if sample else f"{'':>10}")
                  + "".join(f"{ratio(label, v, 'sample_cps', False):>13}" for v in versus),
                  flush=True)
        if name == names[0]:  # which BLAS and threads each side ran its products on
            for label, _, _ in sides:
                print(f"{'':<14}{label:<10}{rounds[0][label].get('products') or '?'}")
    if args.memory:
        memory_steps = 2 if args.smoke else 20
        m = measure("memory", str(args.memory), memory_steps, 0)
        limit = 2 * m["corpus_mb"] + m["model_mb"]
        print(f"\nmemory: rnnlm train on a {m['corpus_mb']:.0f} MB corpus (defaults, {memory_steps} steps "
              f"and a full validation pass): peak RSS {m['peak_mb']:.0f} MB; 2 x corpus + "
              f"model = {limit:.0f} MB; {'within' if m['peak_mb'] < limit else 'OVER'}")
    if args.smoke:
        print("\nsmoke run: every configuration and side ran; its figures are not measurements")


if __name__ == "__main__":
    main()
