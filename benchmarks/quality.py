"""The best model in the same wall-clock time: rnnlm against a panel of peers, side by side.

    python benchmarks/quality.py --time 5m --seeds 1 2     # the rule's model, every peer
    python benchmarks/quality.py --time 3m --kb 30 --only rnnlm --only gpt
    python benchmarks/quality.py --time 3m --kb 300        # the first 300 KB
    python benchmarks/quality.py --time 5m --config configs/shakespeare.yaml --only rnnlm
    python benchmarks/quality.py --smoke       # every side for 4 s: that it runs (CI)

Each side trains on ../shared/data/tinyshakespeare.txt (or its first --kb KB) for the same
budget, one after the other on this machine, and the table gives each run's best
validation loss in nats/char on the same 10% tail, measured the same way. The sides:
- rnnlm: `rnnlm train` with --config, or, by default, none: the model the rule chooses
  for the text, the budget and this machine (sizing.rule);
- defaults: `rnnlm train --config configs/shakespeare.yaml`, the fixed defaults every run
  had before the rule (GRU 2 x 256, no dropout, Adam 6e-3 annealed over the budget);
- torch: what a user writes in PyTorch 2.13 (CPU): the model rnnlm trained (its cell,
  width, depth and rate, read from its run) as nn.LSTM/GRU/RNN + nn.Linear on one-hot
  input, with plain dropout at rnnlm's rate (between layers and on the top layer's output;
  PyTorch's modules cannot drop W_hh without extra code), Adam, global-norm clipping, the
  same streams and carried state in windows fixed for every pass (rnnlm shifts them each
  pass, docs/results.md "Ideas measured"; a user's loop does not), the same learning-rate
  schedule over the same wall-clock budget, and the same evaluations: as many, evenly
  spaced in the budget, the last inside it, each over every character of the validation
  tail in 32 streams (rnnlm's evaluate(), whose windows and loss this script uses for
  PyTorch's model too). --peer-set changes its settings (e.g. cell=lstm dropout=0.25).
- charrnn: the classic char-rnn a user writes in PyTorch, the same way: LSTM 2 x 256,
  dropout 0.25, Adam 2e-3 without a schedule, clip 5 (CHARRNN);
- gpt: a small decoder-only Transformer in PyTorch, the nanoGPT architecture at its
  published CPU settings (run_gpt), scored on the same tail in non-overlapping windows of
  its block (its best, in the table) and in sliding windows (a line under it).
PyTorch is never a dependency of rnnlm: without it, its rows are absent.
"""
import argparse
import csv
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
sys.path.insert(0, str(ROOT))

from rnnlm import config as config_lib
from rnnlm.io import corpus as corpus_lib
from rnnlm.io.data import Streams, eval_windows, split  # noqa: E402
from rnnlm.run.optim import learning_rate  # noqa: E402


def run_rnnlm(corpus, cfg_file, seconds, seed, overrides, keep, name):
    """`rnnlm train` for the budget; its metrics.csv and config.yaml say the rest."""
    out = Path(keep or tempfile.mkdtemp()) / f"{name}-seed{seed}"
    cmd = [sys.executable, "-m", "rnnlm", "train", str(corpus), "--time", f"{seconds}s",
           "--seed", str(seed), "--out", str(out), "-q"]
    cmd += ["--config", str(cfg_file)] if cfg_file else []
    for kv in overrides:
        cmd += ["--set", kv]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    vals = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    trained = config_lib.build(file=out / "config.yaml")
    return dict(best=min(vals), dynamic=dynamic_loss(corpus, out / "best.npz"), steps=int(rows[-1]["step"]), epochs=float(rows[-1]["epoch"]),
                elapsed=float(rows[-1]["elapsed_s"]), wall=wall, cfg=trained,
                model=describe(trained))


def dynamic_loss(corpus, ckpt):
    """best.npz's loss on the same tail with dynamic evaluation (rnnlm eval --dynamic):
    its own column, never the comparison, after the budget."""
    import rnnlm
    from rnnlm.evaluate import dynamic
    model = rnnlm.load(ckpt).ready()
    return dynamic(model.params, model.spec, split(corpus_lib.read([corpus]).ids, 0.1)[1],
                   engine=model.engine)


def describe(cfg):
    reg = f"dropout {cfg.dropout:g}" + (" locked" if cfg.dropout_mode == "locked" else "")
    reg += f", weight drop {cfg.weight_drop:g}" if cfg.weight_drop else ""
    return f"{cfg.cell} {cfg.layers}x{cfg.hidden}, {reg}, lr {cfg.lr:g}"


def run_torch(corpus, cfg, seconds, seed):
    """The same model, data, schedule and evaluations in PyTorch, for the same budget."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    text = corpus_lib.read([corpus])  # as `rnnlm train` reads it
    vocab, ids = text.vocab, text.ids
    train_ids, val_ids = split(ids, cfg.val_fraction)
    V, H, L, B, T = vocab.size, cfg.hidden, cfg.layers, cfg.batch_size, cfg.seq_len
    cell = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cfg.cell]
    rnn = cell(V, H, L, dropout=cfg.dropout if L > 1 else 0.0)
    out = torch.nn.Linear(H, V)
    params = list(rnn.parameters()) + list(out.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    streams = Streams(train_ids, B, T)

    def zeros(batch):
        h = torch.zeros(L, batch, H)
        return (h, h.clone()) if cfg.cell == "lstm" else h

    def detach(state):
        return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()

    def evaluate():
        """rnnlm's evaluate(), with PyTorch's forward: the same windows, the same loss."""
        rnn.eval()
        total, count, state = 0.0, 0, zeros(min(32, len(val_ids) - 1))
        with torch.no_grad():
            for x, y, mask in eval_windows(val_ids, 32, 64):  # as rnnlm.evaluate
                onehot = F.one_hot(torch.from_numpy(x.T.astype(np.int64)), V).float()
                hs, state = rnn(onehot, state)
                logits = out(hs).double()  # (t, B, V)
                target = torch.from_numpy(y.T.astype(np.int64))
                ce = torch.logsumexp(logits, 2) - logits.gather(2, target[..., None])[..., 0]
                m = torch.from_numpy(mask.T)
                total += float((ce * m).sum())
                count += int(m.sum())
        rnn.train()
        return total / count

    started = time.perf_counter()
    elapsed = lambda: time.perf_counter() - started  # noqa: E731
    state, window, step, epoch, best, eval_seconds = zeros(B), 0, 0, 0, math.inf, 0.0
    interval = seconds / cfg.evaluations
    while True:
        t0 = time.perf_counter()
        if window == 0:
            state = zeros(B)
        x, y = streams.window(window)
        onehot = F.one_hot(torch.from_numpy(x.T.astype(np.int64)), V).float()
        hs, state = rnn(onehot, state)
        hs = F.dropout(hs, cfg.dropout, training=True)  # the top layer's output, as rnnlm
        loss = F.cross_entropy(out(hs).reshape(-1, V),
                               torch.from_numpy(y.T.reshape(-1).astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        dt = time.perf_counter() - t0
        reserve = eval_seconds or len(val_ids) * dt / (3 * B * T) + 1.0
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step, elapsed(), reserve)
        opt.step()
        state = detach(state)
        step, window = step + 1, window + 1
        if window == streams.windows:
            window, epoch = 0, epoch + 1
        dt = time.perf_counter() - t0
        now = elapsed()
        last = now + dt + reserve >= seconds
        if last or now // interval > (now - dt) // interval:
            t_eval = time.perf_counter()
            best = min(best, evaluate())
            eval_seconds = max(eval_seconds, time.perf_counter() - t_eval)
        if last:
            return dict(best=best, steps=step, epochs=epoch + window / streams.windows,
                        elapsed=elapsed(), wall=elapsed(),
                        model=f"nn.{cell.__name__} {L}x{H}, plain dropout {cfg.dropout:g}, "
                              f"lr {cfg.lr:g}")


def run_gpt(corpus, seconds, seed, evaluations=8):
    """A small decoder-only Transformer in PyTorch: the nanoGPT architecture (pre-norm
    blocks of causal self-attention and a 4x GELU MLP, learned positions, the output tied
    to the input embedding) at its published CPU settings for Shakespeare by characters (4
    layers, 4 heads, 128 wide, block 64, batch 12, AdamW lr 1e-3 with betas 0.9/0.99 and
    weight decay 0.1, 100 warm-up steps, cosine to 1e-4 over the budget, clip 1.0, no
    dropout), random windows of the same training text. It is scored on the same tail as
    the others with the context it can use: in non-overlapping windows of its block (the
    first characters of each see little context: `best`, as evaluated during the run), and,
    for the best of those models, in windows sliding by 16 where each scored character sees
    48 to 63 before it (`sliding`, after the budget)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)
    text = corpus_lib.read([corpus])
    train_ids, val_ids = (torch.from_numpy(np.asarray(a, np.int64))
                          for a in split(text.ids, 0.1))
    V, C, HEADS, LAYERS, BLOCK, BATCH = text.vocab.size, 128, 4, 4, 64, 12

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (z.view(b, t, HEADS, C // HEADS).transpose(1, 2)
                       for z in self.qkv(self.ln1(x)).split(C, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, C))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(V, C), nn.Embedding(BLOCK, C)
            self.blocks = nn.Sequential(*[Block() for _ in range(LAYERS)])
            self.ln = nn.LayerNorm(C)
            self.apply(self._init)

        @staticmethod
        def _init(module):  # nanoGPT's: N(0, 0.02), zero biases
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

        def forward(self, idx):
            x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1]))
            return self.ln(self.blocks(x)) @ self.tokens.weight.T  # tied output

    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))

    def scored(stride):
        """Mean nats/char of the tail: windows of BLOCK starting every `stride`; each
        character scored once, among the last `stride` of a window (so after at least
        BLOCK - stride characters of context), the first window's all."""
        model.eval()
        total, n, starts = 0.0, 0, list(range(0, len(val_ids) - 1, stride))
        full = [s for s in starts if s + BLOCK < len(val_ids)]
        with torch.no_grad():
            groups = [full[i:i + 64] for i in range(0, len(full), 64)]
            groups += [[s] for s in starts[len(full):]]  # the ragged end, one at a time
            for group in groups:
                width = min(BLOCK, len(val_ids) - 1 - group[0])
                x = torch.stack([val_ids[s:s + width] for s in group])
                y = torch.stack([val_ids[s + 1:s + 1 + width] for s in group])
                ce = F.cross_entropy(model(x).double().transpose(1, 2), y, reduction="none")
                keep = ce[:, BLOCK - stride:] if group[0] else torch.cat(
                    [ce[0], ce[1:, BLOCK - stride:].reshape(-1)])
                total, n = total + float(keep.sum()), n + keep.numel()
        assert n == len(val_ids) - 1, (n, len(val_ids))
        model.train()
        return total / n

    started = time.perf_counter()
    elapsed = lambda: time.perf_counter() - started  # noqa: E731
    step, best, best_state, eval_seconds = 0, math.inf, None, 0.0
    interval = seconds / evaluations
    while True:
        t0 = time.perf_counter()
        budget_share = min(elapsed() / seconds, 1.0)
        lr = 1e-3 * min(1.0, (step + 1) / 100)
        lr = 1e-4 + (lr - 1e-4) * 0.5 * (1 + math.cos(math.pi * budget_share))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(len(train_ids) - BLOCK - 1, (BATCH,))
        x = torch.stack([train_ids[i:i + BLOCK] for i in starts])
        y = torch.stack([train_ids[i + 1:i + 1 + BLOCK] for i in starts])
        loss = F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        dt, now = time.perf_counter() - t0, elapsed()
        reserve = eval_seconds or 2.0
        last = now + dt + reserve >= seconds
        if last or now // interval > (now - dt) // interval:
            t_eval = time.perf_counter()
            loss = scored(BLOCK)
            if loss < best:
                best, best_state = loss, {k: v.clone() for k, v in model.state_dict().items()}
            eval_seconds = max(eval_seconds, time.perf_counter() - t_eval)
        if last:
            wall = elapsed()
            model.load_state_dict(best_state)
            params = sum(p.numel() for p in model.parameters())
            return dict(best=best, sliding=scored(16), steps=step,
                        epochs=step * BATCH * BLOCK / len(train_ids), elapsed=wall, wall=wall,
                        model=f"GPT {LAYERS} layers x {C}, {HEADS} heads, block {BLOCK}, "
                              f"{params / 1e6:.2f}M parameters")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--time", default="5m", help="the budget of each run [5m]")
    parser.add_argument("--kb", type=int, help="train on the first KB of the text only")
    parser.add_argument("--config", type=Path, help="rnnlm's settings [none: the rule's]")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="overrides of rnnlm's settings")
    parser.add_argument("--peer-set", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides of the PyTorch peer's settings")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--only", action="append", choices=SIDES, help="repeatable")
    parser.add_argument("--keep", type=Path, help="keep rnnlm's run directories here")
    parser.add_argument("--smoke", action="store_true",
                        help="each side for 4 seconds, one seed: that it runs; no figures")
    args = parser.parse_args()
    if args.smoke:
        args.time, args.seeds = "4s", args.seeds[:1]
    if not CORPUS.exists():
        raise SystemExit(f"{CORPUS} is absent")
    seconds = config_lib.parse_duration(args.time)
    sides = args.only or list(SIDES)
    try:
        import torch
        peer = torch.__version__
    except ImportError:
        peer = None
        sides = [s for s in sides if s not in ("torch", "charrnn", "gpt")]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = CORPUS
        if args.kb:
            corpus = Path(tmp) / f"tinyshakespeare-{args.kb}kb.txt"
            corpus.write_bytes(CORPUS.read_bytes()[:args.kb * 1000])
        print(f"tiny Shakespeare{f', first {args.kb} KB' if args.kb else ''}, {args.time} "
              f"each; rnnlm: {args.config.name if args.config else 'the rule'}"
              f"{' ' + ' '.join(args.overrides) if args.overrides else ''}; torch "
              f"{peer or 'absent'}{' ' + ' '.join(args.peer_set) if args.peer_set else ''}")
        print(f"{'seed':>6} {'side':<9} {'best val nats/char':>19} {'bits/char':>10} "
              f"{'updates':>8} {'epochs':>7} {'seconds':>8}  model")
        results, sliding = {side: [] for side in SIDES}, {}
        dynamics = {"rnnlm": [], "defaults": []}
        for seed in args.seeds:
            trained = None
            for side in sides:
                if side == "torch":
                    base = trained or config_lib.build(file=args.config, assignments=args.overrides)
                    cfg = config_lib.build(base=base, assignments=args.peer_set,
                                           max_seconds=seconds, max_steps=0, seed=seed)
                    r = run_torch(corpus, cfg, seconds, seed)
                elif side == "charrnn":
                    cfg = config_lib.build(assignments=list(CHARRNN), max_seconds=seconds,
                                           max_steps=0, seed=seed)
                    r = run_torch(corpus, cfg, seconds, seed)
                elif side == "gpt":
                    r = run_gpt(corpus, seconds, seed)
                    sliding[seed] = r["sliding"]
                else:
                    r = run_rnnlm(corpus, args.config if side == "rnnlm" else DEFAULTS, seconds,
                                  seed, args.overrides if side == "rnnlm" else [], args.keep, side)
                    trained = r["cfg"] if side == "rnnlm" else trained
                    dynamics[side].append(r["dynamic"])
                results[side].append(r["best"])
                print(f"{seed:>6} {side:<9} {r['best']:>19.4f} {r['best'] / math.log(2):>10.4f} "
                      f"{r['steps']:>8,} {r['epochs']:>7.1f} {r['wall']:>8.1f}  {r['model']}",
                      flush=True)
    for side, bests in results.items():
        if bests:
            print(f"{side}: mean best {np.mean(bests):.4f} over {len(bests)} seed(s), "
                  f"spread {max(bests) - min(bests):.4f}")
    for side, losses in dynamics.items():
        if losses:
            print(f"{side} with dynamic evaluation (rnnlm eval --dynamic; not the comparison): "
                  f"mean {np.mean(losses):.4f} over {len(losses)} seed(s)")
    if sliding:
        print(f"gpt scored in sliding windows (48 to 63 characters of context): mean "
              f"{np.mean(list(sliding.values())):.4f} over {len(sliding)} seed(s)")
    peers = [s for s in ("torch", "charrnn", "gpt") if results[s]]
    if results["rnnlm"] and peers:
        best = min(peers, key=lambda s: np.mean(results[s]))
        print(f"rnnlm - the best peer ({best}): "
              f"{np.mean(results['rnnlm']) - np.mean(results[best]):+.4f} nats/char")
    for other in ("defaults",) + tuple(peers):
        if results["rnnlm"] and results[other]:
            print(f"rnnlm - {other}: {np.mean(results['rnnlm']) - np.mean(results[other]):+.4f} "
                  f"nats/char")
    if args.smoke:
        print("smoke run: every side ran; its figures are not measurements")


SIDES = ("rnnlm", "defaults", "torch", "charrnn", "gpt")
# The classic char-rnn a user writes in PyTorch: LSTM 2 x 256, dropout 0.25, Adam 2e-3 (no
# schedule), clip 5, 32 streams of 64.
CHARRNN = ("cell=lstm", "hidden=256", "layers=2", "dropout=0.25", "dropout_mode=step",
           "weight_drop=0", "lr=2e-3", "schedule=constant", "clip_norm=5", "batch_size=32",
           "seq_len=64")
DEFAULTS = ROOT / "configs" / "shakespeare.yaml"  # the fixed defaults before the rule


if __name__ == "__main__":
    main()
