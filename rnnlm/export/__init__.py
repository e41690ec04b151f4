"""Models that leave Python: an ONNX graph, a safetensors file, and one HTML page that
writes text in the browser. Each is written from the checkpoint's named parameters (the
names and gate order of PyTorch's state_dict), and the tests hold each to rnnlm's own
numbers in the runtime it targets (onnxruntime, PyTorch, Chromium).

No export writes over a file that is not an earlier export of the same format, nor over
the checkpoint it reads; each is written to a temporary file and renamed into place.
The onnx package (the extra rnnlm[onnx]) is imported here only.
"""
import base64
import json
import struct
from pathlib import Path

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.version import __version__
from rnnlm.io import outputs
from rnnlm.params import layer_keys

FORMATS = ("onnx", "safetensors", "html")
SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors", "html": ".html"}
PRODUCER = "rnnlm"  # ONNX producer_name, safetensors' metadata "format"
HTML_MARK = '<meta name="generator" content="rnnlm export html">'


def export(model, fmt, out_path, float16=False):
    """Write model (api.Model) as fmt to out_path. float16 halves html and safetensors.
    Returns (out_path, its size in bytes)."""
    check_format(fmt, float16)
    out_path = Path(out_path)
    outputs.check_target(out_path, f"{fmt} export", lambda p: is_export(p, fmt),
                         inputs=[model.checkpoint.path])
    dtype = np.float16 if float16 else np.float32
    content = {"onnx": onnx_bytes, "safetensors": safetensors_bytes, "html": html_page}[fmt]
    data = content(model) if fmt == "onnx" else content(model, dtype)
    outputs.write_atomically(out_path, data.encode("utf-8") if isinstance(data, str) else data)
    return out_path, out_path.stat().st_size


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
        _onnx()


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


def _raw(array, dtype):
    """array's values as little-endian bytes of dtype, row-major (safetensors, the page)."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


# --- safetensors -------------------------------------------------------------------------

def safetensors_bytes(model, dtype=np.float32):
    """The safetensors format, written directly (it is a length, a JSON header and the raw
    little-endian arrays): the checkpoint's names, and metadata() as __metadata__."""
    header, blobs, offset = {"__metadata__": metadata(model)}, [], 0
    for name, p in model.params.items():
        blob = _raw(p, dtype)
        header[name] = {"dtype": "F16" if dtype == np.float16 else "F32",
                        "shape": list(p.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the arrays start 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


# --- ONNX ---------------------------------------------------------------------------------

# ONNX's recurrent operators stack their gates in another order than PyTorch's:
# LSTM i, o, f, c (PyTorch i, f, g, o), GRU z, r, h (PyTorch r, z, n).
ONNX_GATE_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
ONNX_OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
OPSET = 17


def _onnx():
    try:
        import onnx
    except ImportError:
        raise RnnlmError("exporting ONNX needs the onnx package: pip install 'rnnlm[onnx]'") from None
    return onnx


def _onnx_gates(a, cell, hidden):
    """Rows of a gate-stacked array, reordered from PyTorch's gate order to ONNX's."""
    return np.concatenate([a[g * hidden:(g + 1) * hidden] for g in ONNX_GATE_ORDER[cell]])


def onnx_model(model):
    """The model as an ONNX graph (ModelProto). Inputs: ids (batch, seq) int64, h0
    (layers, batch, H) and, for the LSTM, c0. Outputs: logits (batch, seq, V), hn (and
    cn): the state to feed back for the next characters. Each layer is ONNX's own
    RNN/LSTM/GRU operator (the GRU with linear_before_reset=1, PyTorch's formula)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    s, p = model.spec, model.params
    H, V, lstm = s.hidden, s.vocab_size, s.cell == "lstm"
    inits = [numpy_helper.from_array(np.array(V, np.int64), "depth"),
             numpy_helper.from_array(np.array([0, 1], np.float32), "onehot_values"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.ascontiguousarray(p["out.weight"].T), "out_weight_t"),
             numpy_helper.from_array(p["out.bias"], "out_bias")]
    nodes = [helper.make_node("Transpose", ["ids"], ["ids_tb"], perm=[1, 0]),  # (seq, batch)
             helper.make_node("OneHot", ["ids_tb", "depth", "onehot_values"], ["x0"], axis=-1)]
    layer_input, finals = "x0", {"h": [], "c": []}
    for layer in range(s.layers):
        layer_inits, layer_nodes, outputs = _onnx_layer(model, layer, layer_input)
        inits += layer_inits
        nodes += layer_nodes
        layer_input = f"x{layer + 1}"  # (seq, batch, H): the next layer's input
        for kind, name in zip("hc", outputs[1:]):
            finals[kind].append(name)
    nodes += [helper.make_node("MatMul", [layer_input, "out_weight_t"], ["scores"]),
              helper.make_node("Add", ["scores", "out_bias"], ["logits_tb"]),
              helper.make_node("Transpose", ["logits_tb"], ["logits"], perm=[1, 0, 2])]
    nodes += [helper.make_node("Concat", finals[kind], [f"{kind}n"], axis=0)
              for kind in ("h", "c") if finals[kind]]
    state = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                       [s.layers, "batch", H])
    graph = helper.make_graph(
        nodes, f"rnnlm_{s.cell}",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
         state("h0")] + ([state("c0")] if lstm else []),
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", V]),
         state("hn")] + ([state("cn")] if lstm else []),
        inits)
    proto = helper.make_model(graph, producer_name=PRODUCER, producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 8  # what onnxruntime releases of the last years read
    helper.set_model_props(proto, metadata(model))
    onnx.checker.check_model(proto)
    return proto


def _onnx_layer(model, layer, layer_input):
    """One layer as ONNX's own operator: (its initialisers, its nodes, its outputs: y, hn
    and for the LSTM cn). The layer reads layer_input (seq, batch, features) and its slice
    of h0 (and c0); it writes x<layer+1>, its output without the directions axis."""
    from onnx import helper, numpy_helper
    s, H = model.spec, model.spec.hidden
    w_ih, w_hh, b_ih, b_hh = (model.params[k] for k in layer_keys(layer))
    inits = [numpy_helper.from_array(_onnx_gates(w_ih, s.cell, H)[None], f"W{layer}"),
             numpy_helper.from_array(_onnx_gates(w_hh, s.cell, H)[None], f"R{layer}"),
             numpy_helper.from_array(np.concatenate([_onnx_gates(b_ih, s.cell, H),
                                                     _onnx_gates(b_hh, s.cell, H)])[None],
                                     f"B{layer}"),
             numpy_helper.from_array(np.array([layer], np.int64), f"at{layer}"),
             numpy_helper.from_array(np.array([layer + 1], np.int64), f"to{layer}")]
    kinds = ("h", "c")[:s.state_size]
    nodes = [helper.make_node("Slice", [f"{kind}0", f"at{layer}", f"to{layer}"],
                              [f"{kind}0_l{layer}"]) for kind in kinds]  # this layer's h0
    outputs = [f"y{layer}"] + [f"{kind}n_l{layer}" for kind in kinds]
    extra = {"linear_before_reset": 1} if s.cell == "gru" else {}
    if s.cell == "rnn":
        extra["activations"] = ["Tanh"]
    nodes.append(helper.make_node(ONNX_OPS[s.cell],
                                  [layer_input, f"W{layer}", f"R{layer}", f"B{layer}", "",
                                   *(f"{kind}0_l{layer}" for kind in kinds)],
                                  outputs, hidden_size=H, **extra))
    nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
    return inits, nodes, outputs


def onnx_bytes(model):
    return onnx_model(model).SerializeToString()


# --- A page that writes in the browser ----------------------------------------------------

def html_page(model, dtype=np.float32):
    """One self-contained page: the weights inline (base64), a JavaScript step of the
    network, and controls for the prime, temperature, top-k, top-p, length and seed."""
    tensors, blobs, offset = {}, [], 0
    for name, p in model.params.items():
        blobs.append(_raw(p, dtype))
        tensors[name] = [offset, list(p.shape)]
        offset += p.size
    s, info = model.spec, model.checkpoint.meta
    best = info.best_val_loss
    about = (f"{s.name}, {s.vocab_size} characters; {info.step or 0:,} updates"
             + (f", validation loss {best:.4f} nats/char" if best is not None else ""))
    facts = {"spec": {"cell": s.cell, "hidden": s.hidden, "layers": s.layers},
             "vocab": model.vocab.chars, "dtype": np.dtype(dtype).name, "tensors": tensors,
             "about": about, "name": Path(model.checkpoint.path or "model").parent.name}
    weights = base64.b64encode(b"".join(blobs)).decode("ascii")
    page = _PAGE.replace("{{MARK}}", HTML_MARK)
    page = page.replace("{{MODEL}}", json.dumps(facts, ensure_ascii=True).replace("</", "<\\/"))
    return page.replace("{{WEIGHTS}}", weights)


_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
{{MARK}}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rnnlm: a character-level model that writes here</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.3rem; margin-bottom: .2rem; }
.about { color: #555; margin-top: 0; }
textarea { width: 100%; height: 4.5rem; font: 14px/1.4 ui-monospace, monospace; }
.controls { display: flex; flex-wrap: wrap; gap: .6rem 1.2rem; align-items: end; margin: .6rem 0; }
.controls label { display: flex; flex-direction: column; font-size: .85rem; color: #444; }
.controls input[type=number] { width: 6rem; }
button { font-size: 1rem; padding: .3rem 1rem; }
#out { white-space: pre-wrap; font: 14px/1.45 ui-monospace, monospace; background: #f6f6f2;
       border: 1px solid #ddd; padding: .8rem; min-height: 8rem; }
#out .prime { color: #777; }
#status { color: #a00; min-height: 1.2rem; }
</style>
</head>
<body>
<h1>rnnlm: a model that writes in this page</h1>
<p class="about" id="about"></p>
<label for="prime">Prime: the text it continues (empty: the start of a line)</label>
<textarea id="prime"></textarea>
<div class="controls">
  <label>temperature <input id="temperature" type="number" value="0.8" min="0.05" step="0.05"></label>
  <label>top-k (0: all) <input id="topk" type="number" value="0" min="0" step="1"></label>
  <label>top-p (1: all) <input id="topp" type="number" value="1" min="0.01" max="1" step="0.05"></label>
  <label>length <input id="length" type="number" value="500" min="1" step="50"></label>
  <label>seed <input id="seed" type="number" value="1" min="0" step="1"></label>
  <label><span><input id="instant" type="checkbox"> all at once</span></label>
  <button id="write">Write</button>
  <button id="stop" disabled>Stop</button>
</div>
<div id="status" role="status"></div>
<div id="out" aria-live="polite"></div>
<script type="application/json" id="model">{{MODEL}}</script>
<script type="application/octet-stream" id="weights">{{WEIGHTS}}</script>
<script>
"use strict";
// The network, as rnnlm computes it (PyTorch's equations and gate order), one character
// at a time; every weight is a row-major array named as in the checkpoint.
const MODEL = JSON.parse(document.getElementById("model").textContent);
const CELL = MODEL.spec.cell, H = MODEL.spec.hidden, L = MODEL.spec.layers;
const CHARS = Array.from(MODEL.vocab), V = CHARS.length;
const GATES = {rnn: 1, lstm: 4, gru: 3}[CELL];
const ID = new Map(CHARS.map((ch, i) => [ch, i]));

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return sign * f * Math.pow(2, -24);
  if (e === 31) return f ? NaN : sign * Infinity;
  return sign * (1 + f / 1024) * Math.pow(2, e - 15);
}

function readWeights() {
  const text = atob(document.getElementById("weights").textContent.trim());
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  let all;
  if (MODEL.dtype === "float16") {
    const half = new Uint16Array(bytes.buffer);
    all = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) all[i] = halfToFloat(half[i]);
  } else {
    all = new Float32Array(bytes.buffer);
  }
  const w = {};
  for (const [name, [offset, shape]] of Object.entries(MODEL.tensors)) {
    const size = shape.reduce((a, b) => a * b, 1);
    w[name] = {data: all.subarray(offset, offset + size), cols: shape.length > 1 ? shape[1] : 1};
  }
  return w;
}
const W = readWeights();
const sigmoid = a => 1 / (1 + Math.exp(-a));

function newState() {
  const state = [];
  for (let l = 0; l < L; l++) state.push({h: new Float64Array(H), c: new Float64Array(H)});
  return state;
}

// W_ih x + b_ih and W_hh h + b_hh, every gate's rows; x is a character id for layer 0.
function preActivations(l, x, h) {
  const wih = W["rnn.weight_ih_l" + l], whh = W["rnn.weight_hh_l" + l];
  const bih = W["rnn.bias_ih_l" + l].data, bhh = W["rnn.bias_hh_l" + l].data;
  const gi = new Float64Array(GATES * H), gh = new Float64Array(GATES * H);
  for (let r = 0; r < GATES * H; r++) {
    let a = bih[r];
    if (l === 0) a += wih.data[r * wih.cols + x];  // a one-hot input: one column
    else for (let k = 0, row = r * wih.cols; k < H; k++) a += wih.data[row + k] * x[k];
    let b = bhh[r];
    for (let k = 0, row = r * H; k < H; k++) b += whh.data[row + k] * h[k];
    gi[r] = a; gh[r] = b;
  }
  return [gi, gh];
}

// One character in, the logits of the next out; state is updated in place.
function step(state, id) {
  let x = id;
  for (let l = 0; l < L; l++) {
    const s = state[l], [gi, gh] = preActivations(l, x, s.h), h = new Float64Array(H);
    for (let j = 0; j < H; j++) {
      if (CELL === "rnn") {
        h[j] = Math.tanh(gi[j] + gh[j]);
      } else if (CELL === "lstm") {
        const i = sigmoid(gi[j] + gh[j]), f = sigmoid(gi[H + j] + gh[H + j]);
        const g = Math.tanh(gi[2 * H + j] + gh[2 * H + j]), o = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
        s.c[j] = f * s.c[j] + i * g;
        h[j] = o * Math.tanh(s.c[j]);
      } else {  // gru: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        const r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[H + j] + gh[H + j]);
        const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
        h[j] = (1 - z) * n + z * s.h[j];
      }
    }
    s.h = h;
    x = h;
  }
  const out = W["out.weight"].data, bias = W["out.bias"].data, logits = new Float64Array(V);
  for (let v = 0; v < V; v++) {
    let a = bias[v];
    for (let k = 0, row = v * H; k < H; k++) a += out[row + k] * x[k];
    logits[v] = a;
  }
  return logits;
}

function softmax(z) {
  let top = -Infinity;
  for (const v of z) top = Math.max(top, v);
  const p = z.map(v => Math.exp(v - top)), sum = p.reduce((a, b) => a + b, 0);
  return p.map(v => v / sum);
}

function encode(text) {
  const chars = Array.from(text), unknown = [...new Set(chars.filter(ch => !ID.has(ch)))];
  if (unknown.length) throw new Error("not in the model's vocabulary: " + JSON.stringify(unknown.join("")));
  return chars.map(ch => ID.get(ch));
}

// The distribution of the character after prime, in vocabulary order (as rnnlm's
// Model.probabilities): an empty prime means the start of a line.
function probabilities(prime) {
  const state = newState();
  let logits = null;
  for (const id of encode(prime || "\n")) logits = step(state, id);
  return Array.from(softmax(logits));
}

// A small seeded generator (mulberry32): the same seed gives the same text in this page.
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// rnnlm's sampling rule: logits / temperature, then top-k, then top-p (nucleus).
function pick(logits, random, temperature, topK, topP) {
  const z = Array.from(logits, v => v / temperature);
  if (topK > 0 && topK < z.length) {
    const cut = [...z].sort((a, b) => b - a)[topK - 1];
    for (let i = 0; i < z.length; i++) if (z[i] < cut) z[i] = -Infinity;
  }
  const p = softmax(z);
  if (topP < 1) {
    const order = p.map((v, i) => i).sort((a, b) => p[b] - p[a] || a - b);
    let sum = 0, keep = order.length;
    for (let k = 0; k < order.length; k++) { sum += p[order[k]]; if (sum >= topP) { keep = k + 1; break; } }
    for (const i of order.slice(keep)) p[i] = 0;
  }
  const total = p.reduce((a, b) => a + b, 0);
  let u = random() * total;
  for (let i = 0; i < p.length; i++) { u -= p[i]; if (u < 0) return i; }
  return p.length - 1;
}

// Characters one by one: a generator the page draws from at reading pace.
function* generate(prime, length, temperature, topK, topP, seed) {
  const random = generator(seed), state = newState();
  let ids = encode(prime);
  if (!ids.length) {
    if (ID.has("\n")) ids = [ID.get("\n")];
    else { const first = Math.floor(random() * V); ids = [first]; yield CHARS[first]; length--; }
  }
  let logits = null;
  for (const id of ids) logits = step(state, id);
  for (let n = 0; n < length; n++) {
    const id = pick(logits, random, temperature, topK, topP);
    yield CHARS[id];
    logits = step(state, id);
  }
}

window.rnnlm = {vocab: CHARS, probabilities, generate};

const $ = id => document.getElementById(id);
$("about").textContent = MODEL.about + ". It runs in this page: nothing is sent anywhere.";
const PACE_MS = 35;  // about a reader's pace
let timer = null;

function stop() {
  clearTimeout(timer);
  timer = null;
  $("write").disabled = false;
  $("stop").disabled = true;
}

function number(id, min, max, integer) {
  const v = Number($(id).value);
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v)))
    throw new Error(`${id} must be ${integer ? "a whole number" : "a number"} from ${min} to ${max}`);
  return v;
}

function write() {
  stop();
  $("status").textContent = "";
  let chars, first;
  try {
    const temperature = number("temperature", 1e-6, 1e6, false);
    const topK = number("topk", 0, V, true), topP = number("topp", 1e-6, 1, false);
    const length = number("length", 1, 1e6, true), seed = number("seed", 0, 4294967295, true);
    chars = generate($("prime").value, length, temperature, topK, topP, seed);
    first = chars.next();  // a prime outside the vocabulary fails here, before anything shows
  } catch (e) {
    $("status").textContent = e.message;
    return;
  }
  const out = $("out");
  out.textContent = "";
  const prime = document.createElement("span");
  prime.className = "prime";
  prime.textContent = $("prime").value;
  const text = document.createTextNode(first.done ? "" : first.value);
  out.append(prime, text);
  $("write").disabled = true;
  $("stop").disabled = false;
  const instant = $("instant").checked;
  const tick = () => {
    const burst = instant ? 200 : 1;
    for (let k = 0; k < burst; k++) {
      const next = chars.next();
      if (next.done) { stop(); out.dataset.done = "1"; return; }
      text.appendData(next.value);
    }
    timer = setTimeout(tick, instant ? 0 : PACE_MS);
  };
  out.dataset.done = "";
  timer = setTimeout(tick, 0);
}

$("write").addEventListener("click", write);
$("stop").addEventListener("click", stop);
</script>
</body>
</html>
"""
