"""An ONNX graph of the model, for onnxruntime and other runtimes: the one place rnnlm
imports the onnx package (the extra rnnlm[onnx])."""
import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.export.formats import PRODUCER, metadata
from rnnlm.params import layer_keys
from rnnlm.version import __version__

# ONNX's recurrent operators stack their gates in another order than PyTorch's:
# LSTM i, o, f, c (PyTorch i, f, g, o), GRU z, r, h (PyTorch r, z, n).
ONNX_GATE_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
ONNX_OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
OPSET = 17


def library():
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
    onnx = library()
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
