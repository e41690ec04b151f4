"""Twenty data-parallel updates in float64 with rnnlm's own training step, for
tests/test_workers.py: run it as one process or under mpiexec -n N.

    python tests/mpi_trajectory.py OUT.npz CELL [step|locked]

step: dropout with a new mask every step; locked: locked dropout and weight drop.

Worker 0 writes the parameters after the updates, the validation loss as the workers
measure it together, and every stream's carried state (gathered), to OUT.npz.
"""
import math
import sys

import numpy as np

from rnnlm.run import training
from rnnlm.config import Config
from rnnlm.io.data import Streams, split, text_corpus
from rnnlm.params import Spec, init_params

out, cell = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "step"
text = "It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 12
vocab, ids = text_corpus(text)
train_ids, val_ids = split(ids, 0.1)
cfg = Config(cell=cell, hidden=6, layers=2, dropout=0.25, dropout_mode=mode,
             weight_drop=0.25 if mode == "locked" else 0.0, batch_size=4, seq_len=5, lr=1e-2,
             max_steps=20, max_seconds=0, seed=7)
spec = Spec(cell, vocab.size, cfg.hidden, cfg.layers)
rng = np.random.default_rng(cfg.seed)
run = training.Run(cfg, spec, vocab, init_params(spec, rng, np.float64), rng)
streams = Streams(train_ids, cfg.batch_size, cfg.seq_len)
for _ in range(cfg.max_steps):
    *_, why, _, _ = training._update(run, streams, None, False, (0.0, math.inf),
                                     lambda: (False, False, False))
    assert why is None, why
val = training._validation_loss(run, val_ids)
checkpoint = run.to_checkpoint()
if checkpoint is not None:
    np.savez(out, val=val, **run.params,
             **{f"state{l}_{i}": a for l, s in enumerate(checkpoint.state) for i, a in enumerate(s)})
