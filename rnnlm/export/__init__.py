"""Models that leave Python: an ONNX graph, a safetensors file, and one HTML page that
writes text in the browser. Each is written from the checkpoint's named parameters (the
names and gate order of PyTorch's state_dict), and the tests hold each to rnnlm's own
numbers in the runtime it targets (onnxruntime, PyTorch, Chromium).

No export writes over a file that is not an earlier export of the same format, nor over
the checkpoint it reads; each is written to a temporary file and renamed into place.
Each format has its module (onnx.py, safetensors.py, html.py and its page.html); what
they share is formats.py.
"""
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.export import html, onnx, safetensors
from rnnlm.export.formats import FORMATS, SUFFIXES, is_export, source, source_of
from rnnlm.io import outputs


class Written(NamedTuple):
    path: Path      # the file written (where -o named a link, the file it points to)
    size: int       # its size in bytes
    replaced: bool  # whether it replaced an earlier export of the same checkpoint


def export(model, fmt, out_path, float16=False):
    """Write model (api.Model) as fmt to out_path. float16 halves html and safetensors.
    An earlier export at out_path is replaced only where it came from the same checkpoint.
    Returns Written."""
    check_format(fmt, float16)
    out_path = outputs.check_target(out_path, f"{fmt} export", lambda p: is_export(p, fmt),
                                    inputs=[model.checkpoint.path])
    replaced = out_path.exists()
    earlier = source_of(out_path, fmt) if replaced else None
    if earlier is not None and earlier.split()[0] != source(model).split()[0]:
        raise RnnlmError(f"{out_path} is an export of another checkpoint "
                         f"({earlier.partition(' ')[2]}): choose another -o, or remove it")
    if float16:
        check_half(model)
    dtype = np.float16 if float16 else np.float32
    content = {"onnx": onnx.onnx_bytes, "safetensors": safetensors.safetensors_bytes,
               "html": html.html_page}[fmt]
    data = content(model) if fmt == "onnx" else content(model, dtype)
    outputs.write_atomically(out_path, data.encode("utf-8") if isinstance(data, str) else data)
    return Written(out_path, out_path.stat().st_size, replaced)


def check_half(model):
    """Raise RnnlmError where a weight is beyond float16's range (65,504): it would be
    written as infinity."""
    for name, p in model.params.items():
        big = float(np.max(np.abs(p))) if p.size else 0.0
        if big > float(np.finfo(np.float16).max):
            raise RnnlmError(f"{name} holds {big:.4g}, beyond float16's largest value "
                             f"(65,504): export without --float16")


def default_target(model, fmt):
    """Where an export goes without -o: the run's name with the format's suffix, here."""
    name = Path(model.checkpoint.path).resolve().parent.name or "model"
    return Path(name + SUFFIXES.get(fmt, ""))


def check_format(fmt, float16=False):
    """Raise RnnlmError unless fmt can be written here, as asked (before a model loads)."""
    if fmt not in FORMATS:
        raise RnnlmError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    if float16 and fmt == "onnx":
        raise RnnlmError("--float16 is for html and safetensors; the ONNX graph is float32")
    if fmt == "onnx":
        onnx.library()
