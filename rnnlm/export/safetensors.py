"""The safetensors format, written directly: a length, a JSON header and the raw
little-endian arrays, under the checkpoint's (PyTorch's) names."""
import json
import struct

import numpy as np

from rnnlm.export.formats import metadata, raw


def safetensors_bytes(model, dtype=np.float32):
    """The safetensors format, written directly (it is a length, a JSON header and the raw
    little-endian arrays): the checkpoint's names, and metadata() as __metadata__."""
    header, blobs, offset = {"__metadata__": metadata(model)}, [], 0
    for name, p in model.params.items():
        blob = raw(p, dtype)
        header[name] = {"dtype": "F16" if dtype == np.float16 else "F32",
                        "shape": list(p.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the arrays start 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)
