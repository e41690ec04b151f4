"""The table of cells (params.CELLS), held to both engines: what it says of each cell's
gates, their activations, its states and its window buffers is what the engines do."""
import numpy as np
import pytest

from rnnlm import textbook
from rnnlm.fast import engine
from rnnlm.fast.cells import STEPS
from rnnlm.params import CELLS, Spec, init_params, layer_keys, param_shapes, zero_state


@pytest.mark.parametrize("cell", CELLS)
def test_the_parameters_states_and_textbook_names_follow_the_table(cell):
    facts, H = CELLS[cell], 3
    spec = Spec(cell, 5, H, 2)
    assert param_shapes(spec)["rnn.weight_hh_l1"] == (len(facts.gates) * H, H)
    assert [len(s) for s in zero_state(spec, 4)] == [len(facts.states)] * 2
    params = init_params(spec, np.random.default_rng(0), np.float64)
    layers, _ = textbook.to_textbook(params, spec)
    assert list(layers[0]) == textbook.parameter_names(cell)
    assert len(list(textbook.blocks(cell))) == len(facts.gates)
    back = textbook.from_textbook(layers, textbook.to_textbook(params, spec)[1], spec)
    for name in layer_keys(0)[:2]:  # the blocks go back where they came from
        assert np.array_equal(back[name], params[name])


@pytest.mark.parametrize("cell", CELLS)
def test_the_fast_engines_steps_and_buffers_follow_the_table(cell):
    facts, step = CELLS[cell], STEPS[cell]
    assert (step.gates, step.state_names) == (len(facts.gates), facts.states)
    assert sorted(step.order) == list(range(len(facts.gates)))
    assert step.fold_hidden_bias == (not facts.separate_biases)
    spec, T, B = Spec(cell, 5, 4, 1), 3, 2
    params = init_params(spec, np.random.default_rng(1), np.float64)
    buf, _ = engine._layer_forward(step, params, 0, np.zeros((T, B), np.int64),
                                   zero_state(spec, B, np.float64)[0])
    assert {k: v.shape for k, v in buf.items()} == facts.window_shapes(T, B, 4)
    assert (step.gradient_buffers(buf) is None) == facts.own_gradients


@pytest.mark.parametrize("cell", CELLS)
def test_each_gates_activation_is_the_one_the_table_names(cell):
    """With every weight zero and every input bias -50, a sigmoid gate reads 0 and a tanh
    gate -1: the fast engine's gate blocks, put back in PyTorch's order, say which is which."""
    facts, step, H = CELLS[cell], STEPS[cell], 4
    spec = Spec(cell, 5, H, 1)
    params = {k: np.zeros(v) for k, v in param_shapes(spec).items()}
    params["rnn.bias_ih_l0"][:] = -50.0
    buf, _ = engine._layer_forward(step, params, 0, np.zeros((1, 2), np.int64),
                                   zero_state(spec, 2, np.float64)[0])
    gates = step.input_slots(buf)[0]  # after the step: each gate's activation
    seen = {}
    for k, gate in enumerate(step.order):
        value = gates[k * H:(k + 1) * H].mean()
        seen[facts.gates[gate]] = {0.0: "sigmoid", -1.0: "tanh"}[round(float(value), 6)]
    assert tuple(seen[g] for g in facts.gates) == facts.activations
