"""What every export shares: the formats and their suffixes, the marks by which rnnlm
knows its own earlier exports, the metadata a runtime needs, and the arrays' bytes."""
import hashlib
import html
import json
import os
import re
import struct
from pathlib import Path

import numpy as np

from rnnlm.io import outputs
from rnnlm.version import __version__

FORMATS = ("onnx", "safetensors", "html")
SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "html": ".html"}
PRODUCER = "rnnlm"  # ONNX producer_name, safetensors' metadata "format"
HTML_MARK = '<meta name="generator" content="rnnlm export html">'
HTML_SOURCE = '<meta name="rnnlm-source" content="{}">'  # source(), HTML-escaped


def metadata(model):
    """What a runtime needs beside the weights (the vocabulary in id order, the shape), and
    the checkpoint it came from (source())."""
    s = model.spec
    return {"format": PRODUCER, "rnnlm": __version__, "cell": s.cell, "hidden": str(s.hidden),
            "layers": str(s.layers), "vocab": json.dumps(model.vocab.chars, ensure_ascii=False),
            "source": source(model)}


def source(model):
    """Which checkpoint an export came from, as "<fingerprint> <run>/<file>": the
    fingerprint is of the checkpoint's absolute path (so two runs both named shk differ)
    without writing that path, which may say more about the user's disk than they share."""
    path = model.checkpoint.path
    if path is None:
        return "-"
    path = Path(os.path.realpath(path))
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return f"{digest} {outputs.readable_name(path.parent.name + '/' + path.name)}"


# --- Which files are earlier exports -----------------------------------------------------

def is_export(path, fmt):
    """Whether the file at path is an earlier rnnlm export of this format, by its mark."""
    start = outputs.head(path)
    if fmt == "html":
        return HTML_MARK.encode() in start
    if fmt == "onnx":  # ModelProto: ir_version (field 1), then producer_name (field 2)
        return b"\x12" + bytes([len(PRODUCER)]) + PRODUCER.encode() in start[:32]
    return _safetensors_metadata(path).get("format") == PRODUCER


def source_of(path, fmt):
    """The source() an earlier export at path recorded, or None (exports of rnnlm before
    0.9 recorded none)."""
    if fmt == "html":
        found = re.search(HTML_SOURCE.format("([^\"]*)").encode(), outputs.head(path))
        return html.unescape(found.group(1).decode("utf-8", "replace")) if found else None
    if fmt == "onnx":
        import onnx  # an onnx export is only made where the onnx package is installed
        try:
            props = onnx.load(str(path), load_external_data=False).metadata_props
        except Exception:  # noqa: BLE001 - any file onnx cannot read recorded nothing
            return None
        return next((p.value for p in props if p.key == "source"), None)
    return _safetensors_metadata(path).get("source")


def html_source(model):
    """The page's record of source(): a meta tag in its head, where source_of finds it."""
    return HTML_SOURCE.format(html.escape(source(model)))


def _safetensors_metadata(path):
    """The __metadata__ of a safetensors file (a length, then a JSON header), or {} where
    the file is not one."""
    try:
        size = struct.unpack("<Q", outputs.head(path, 8))[0]
        if not 0 < size <= 100 << 20:
            return {}
        with open(path, "rb") as f:
            f.seek(8)
            metadata = json.loads(f.read(size)).get("__metadata__", {})
        return metadata if isinstance(metadata, dict) else {}
    except (OSError, ValueError, AttributeError, struct.error):
        return {}


def raw(array, dtype):
    """array's values as little-endian bytes of dtype, row-major (safetensors, the page)."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
