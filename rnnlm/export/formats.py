"""What every export shares: the formats and their suffixes, the marks by which rnnlm
knows its own earlier exports, the metadata a runtime needs, and the arrays' bytes."""
import json
import struct

import numpy as np

from rnnlm.io import outputs
from rnnlm.version import __version__

FORMATS = ("onnx", "safetensors", "html")
SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "html": ".html"}
PRODUCER = "rnnlm"  # ONNX producer_name, safetensors' metadata "format"
HTML_MARK = '<meta name="generator" content="rnnlm export html">'


def metadata(model):
    """What a runtime needs beside the weights: the vocabulary (id order) and the shape."""
    s = model.spec
    return {"format": PRODUCER, "rnnlm": __version__, "cell": s.cell, "hidden": str(s.hidden),
            "layers": str(s.layers), "vocab": json.dumps(model.vocab.chars, ensure_ascii=False)}


# --- Which files are earlier exports -----------------------------------------------------

def is_export(path, fmt):
    """Whether the file at path is an earlier rnnlm export of this format, by its mark."""
    start = outputs.head(path)
    if fmt == "html":
        return HTML_MARK.encode() in start
    if fmt == "onnx":  # ModelProto: ir_version (field 1), then producer_name (field 2)
        return b"\x12" + bytes([len(PRODUCER)]) + PRODUCER.encode() in start[:32]
    try:  # safetensors: a length, then a JSON header whose __metadata__ names rnnlm
        size = struct.unpack("<Q", start[:8])[0]
        if not 0 < size <= 100 << 20:
            return False
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(size))
        return header.get("__metadata__", {}).get("format") == PRODUCER
    except (OSError, ValueError, AttributeError, struct.error):
        return False


def raw(array, dtype):
    """array's values as little-endian bytes of dtype, row-major (safetensors, the page)."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
