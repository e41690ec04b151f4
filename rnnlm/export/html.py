"""One self-contained page that writes text in the browser, offline: the weights inline
(base64), a JavaScript step of the network (page.html, package data), and controls."""
import base64
import json
from importlib import resources
from pathlib import Path

import numpy as np

from rnnlm.export.formats import HTML_MARK, html_source, raw


def html_page(model, dtype=np.float32):
    """One self-contained page: the weights inline (base64), a JavaScript step of the
    network, and controls for the prime, temperature, top-k, top-p, length and seed."""
    tensors, blobs, offset = {}, [], 0
    for name, p in model.params.items():
        blobs.append(raw(p, dtype))
        tensors[name] = [offset, list(p.shape)]
        offset += p.size
    s, info = model.spec, model.checkpoint.meta
    best = info.best_val_loss
    about = (f"{s.name}, {s.vocab_size} characters; {info.step or 0:,} updates"
             + (f", validation loss {best:.4f} nats/char" if best is not None else ""))
    facts = {"spec": {"cell": s.cell, "hidden": s.hidden, "layers": s.layers,
                      "gates": s.gates},
             "vocab": model.vocab.chars, "dtype": np.dtype(dtype).name, "tensors": tensors,
             "about": about, "name": Path(model.checkpoint.path or "model").parent.name}
    weights = base64.b64encode(b"".join(blobs)).decode("ascii")
    page = _template().replace("{{MARK}}", HTML_MARK + "\n" + html_source(model))
    page = page.replace("{{MODEL}}", json.dumps(facts, ensure_ascii=True).replace("</", "<\\/"))
    return page.replace("{{WEIGHTS}}", weights)


def _template():
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
