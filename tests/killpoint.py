"""Run the rnnlm CLI and stop dead at a chosen moment, so that a test can SIGKILL it there.

    python tests/killpoint.py PHASE N rnnlm-arguments...

At the N-th time the child reaches PHASE it writes "AT PHASE N" on stderr and sleeps until
it is killed. Phases of a checkpoint save (rnnlm/io/checkpoint.py): "open" (the temporary
file is created, nothing written), "written" (np.savez has returned: the data is in the
temporary file, not fsynced), "rename" (fsynced, about to replace the target), "renamed"
(replaced, the directory not yet fsynced); and "update" (between two training updates,
outside any save).
"""
import os
import sys
import time

from rnnlm.io import checkpoint
from rnnlm.run import optim
from rnnlm.cli import main

phase, target = sys.argv[1], int(sys.argv[2])
seen = {}


def reached(name):
    seen[name] = seen.get(name, 0) + 1
    if name == phase and seen[name] == target:
        sys.stderr.write(f"AT {name} {target}\n")
        sys.stderr.flush()
        time.sleep(3600)


def wrap(owner, attr, before=None, after=None):
    real = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        if before:
            reached(before)
        result = real(*args, **kwargs)
        if after:
            reached(after)
        return result
    setattr(owner, attr, wrapper)


wrap(checkpoint.np, "savez", before="open", after="written")
wrap(os, "replace", before="rename", after="renamed")
wrap(optim.Optimizer, "step", before="update")
sys.argv = ["rnnlm"] + sys.argv[3:]
main()
