"""Analytic gradients against finite differences and against an independent per-step BPTT."""
import numpy as np
import pytest

from rnnlm import cells, gradcheck, model


def test_gradcheck_passes_for_every_cell_depth_and_dropout():
    rows = gradcheck.check_all()
    assert len(rows) == 3 * (6 * 2 + 10 * 2)  # 3 cells x (1 layer + 2 layers) x 2 dropouts
    worst = max(rows, key=lambda r: r.max_rel_error)
    assert all(r.ok for r in rows), worst


def test_gradcheck_fails_on_a_wrong_backward(monkeypatch):
    def wrong_rnn_backward(t, buf, w, dstate, dgx, dgh, dprev):
        (dh,), h = dstate, buf["h"][t + 1]
        np.subtract(1.0, h, out=dgx)  # the tanh derivative is 1 - h^2, not 1 - h
        dgx *= dh
        np.dot(w.hh_t, dgx, out=dprev[0])

    monkeypatch.setattr(cells.RNN, "backward", staticmethod(wrong_rnn_backward))
    rows = gradcheck.check("rnn")
    failed = {r.name for r in rows if not r.ok}
    assert {"rnn.weight_hh_l0", "rnn.weight_ih_l0", "rnn.bias_hh_l0"} <= failed
    assert "out.bias" not in failed  # the output layer's own gradient is still right


def test_gradcheck_fails_on_a_wrong_gru_gate(monkeypatch):
    right = cells.GRU.backward

    def wrong_gru_backward(t, buf, w, dstate, dgx, dgh, dprev):
        right(t, buf, w, dstate, dgx, dgh, dprev)
        dgh[...] = dgx  # forgets that r scales the hidden side of n

    monkeypatch.setattr(cells.GRU, "backward", staticmethod(wrong_gru_backward))
    rows = gradcheck.check("gru")
    assert not next(r for r in rows if r.name == "rnn.weight_hh_l0").ok
    assert next(r for r in rows if r.name == "rnn.weight_ih_l0").ok


# An independent reference: one time step at a time, one-hot vectors multiplied out, the
# output layer and every weight gradient accumulated inside the loop, as in min-char-rnn.

def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference_loss_and_grads(params, spec, x, y, state, masks=None):
    B, T = x.shape
    H, V, L = spec.hidden, spec.vocab_size, spec.layers
    p = params
    eye = np.eye(V)
    hs = {(l, -1): state[l][0] for l in range(L)}
    cs = {(l, -1): state[l][1] for l in range(L)} if spec.cell == "lstm" else {}
    acts, inputs, probs, loss = {}, {}, {}, 0.0
    for t in range(T):
        inp = eye[x[:, t]]  # (B, V) one-hot
        for l in range(L):
            inputs[l, t] = inp
            Wi, Wh = p[f"rnn.weight_ih_l{l}"], p[f"rnn.weight_hh_l{l}"]
            bi, bh = p[f"rnn.bias_ih_l{l}"], p[f"rnn.bias_hh_l{l}"]
            gx, gh, hp = inp @ Wi.T + bi, hs[l, t - 1] @ Wh.T + bh, hs[l, t - 1]
            if spec.cell == "rnn":
                h = np.tanh(gx + gh)
            elif spec.cell == "lstm":
                a = gx + gh
                i, f, g, o = sig(a[:, :H]), sig(a[:, H:2*H]), np.tanh(a[:, 2*H:3*H]), sig(a[:, 3*H:])
                cs[l, t] = f * cs[l, t - 1] + i * g
                h = o * np.tanh(cs[l, t])
                acts[l, t] = (i, f, g, o)
            else:
                r = sig(gx[:, :H] + gh[:, :H])
                z = sig(gx[:, H:2*H] + gh[:, H:2*H])
                n = np.tanh(gx[:, 2*H:] + r * gh[:, 2*H:])
                h = (1 - z) * n + z * hp
                acts[l, t] = (r, z, n, gh[:, 2*H:])
            hs[l, t] = h
            inp = h * masks[l][t].T if masks is not None else h  # masks are (T, H, B)
        logits = inp @ p["out.weight"].T + p["out.bias"]
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs[t] = e / e.sum(1, keepdims=True)
        inputs[L, t] = inp
        loss -= np.log(probs[t][np.arange(B), y[:, t]]).sum()
    N = B * T
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dh_next = {l: np.zeros((B, H)) for l in range(L)}
    dc_next = {l: np.zeros((B, H)) for l in range(L)}
    for t in reversed(range(T)):
        dlogits = probs[t].copy()
        dlogits[np.arange(B), y[:, t]] -= 1
        dlogits /= N
        grads["out.weight"] += dlogits.T @ inputs[L, t]
        grads["out.bias"] += dlogits.sum(0)
        dinp = dlogits @ p["out.weight"]
        for l in reversed(range(L)):
            if masks is not None:
                dinp = dinp * masks[l][t].T
            dh = dinp + dh_next[l]
            Wi, Wh = p[f"rnn.weight_ih_l{l}"], p[f"rnn.weight_hh_l{l}"]
            hp = hs[l, t - 1]
            if spec.cell == "rnn":
                da = dh * (1 - hs[l, t] ** 2)
                dgx = dgh = da
                dh_next[l] = da @ Wh
            elif spec.cell == "lstm":
                i, f, g, o = acts[l, t]
                tc = np.tanh(cs[l, t])
                dc = dc_next[l] + dh * o * (1 - tc ** 2)
                da = np.concatenate([dc * g * i * (1 - i), dc * cs[l, t - 1] * f * (1 - f),
                                     dc * i * (1 - g ** 2), dh * tc * o * (1 - o)], axis=1)
                dgx = dgh = da
                dc_next[l] = dc * f
                dh_next[l] = da @ Wh
            else:
                r, z, n, ghn = acts[l, t]
                dn = dh * (1 - z) * (1 - n ** 2)
                dgx = np.concatenate([dn * ghn * r * (1 - r), dh * (hp - n) * z * (1 - z), dn], 1)
                dgh = np.concatenate([dgx[:, :2*H], dn * r], 1)
                dh_next[l] = dgh @ Wh + dh * z
            grads[f"rnn.weight_ih_l{l}"] += dgx.T @ inputs[l, t]
            grads[f"rnn.weight_hh_l{l}"] += dgh.T @ hp
            grads[f"rnn.bias_ih_l{l}"] += dgx.sum(0)
            grads[f"rnn.bias_hh_l{l}"] += dgh.sum(0)
            dinp = dgx @ Wi
    return loss / N, grads


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers,dropout", [(1, 0.0), (3, 0.0), (2, 0.4)])
def test_vectorised_bptt_matches_a_per_step_loop(cell, layers, dropout):
    rng = np.random.default_rng(5)
    spec = model.Spec(cell, 11, 9, layers)
    params = model.init_params(spec, rng, np.float64)
    B, T = 4, 13
    x, y = rng.integers(0, 11, (B, T)), rng.integers(0, 11, (B, T))
    state = [tuple(rng.normal(0, 0.5, (B, 9)) for _ in s) for s in model.zero_state(spec, B)]
    masks = model.dropout_masks(spec, B, T, dropout, rng, np.float64)
    loss, grads, _ = model.loss_and_grads(params, spec, x, y, state, masks)
    ref_loss, ref_grads = reference_loss_and_grads(params, spec, x, y, state, masks)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_state_carried_across_windows_equals_one_long_window(cell):
    rng = np.random.default_rng(0)
    spec = model.Spec(cell, 6, 8, 2)
    params = model.init_params(spec, rng, np.float64)
    x, y = rng.integers(0, 6, (3, 20)), rng.integers(0, 6, (3, 20))
    state = model.zero_state(spec, 3, np.float64)
    whole, _, end_whole = model.loss_and_grads(params, spec, x, y, state)
    first, _, mid = model.loss_and_grads(params, spec, x[:, :12], y[:, :12], state)
    second, _, end = model.loss_and_grads(params, spec, x[:, 12:], y[:, 12:], mid)
    assert (12 * first + 8 * second) / 20 == pytest.approx(whole, rel=1e-12)
    for a, b in zip(end_whole, end):
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, rtol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_inference_forward_matches_training_forward(cell):
    rng = np.random.default_rng(1)
    spec = model.Spec(cell, 7, 10, 2)
    params = model.init_params(spec, rng, np.float64)
    x, y = rng.integers(0, 7, (2, 9)), rng.integers(0, 7, (2, 9))
    state = [tuple(rng.normal(0, 0.5, (2, 10)) for _ in s) for s in model.zero_state(spec, 2)]
    loss, _, st1 = model.loss_and_grads(params, spec, x, y, state)
    logits, st2 = model.forward(params, spec, x, state)
    ce, _ = model.softmax_cross_entropy(logits.reshape(-1, 7).T.copy(), y.reshape(-1))
    assert ce == pytest.approx(loss, rel=1e-12)
    for a, b in zip(st1, st2):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_overfits_a_short_string(cell):
    from rnnlm import optim
    from rnnlm.data import text_corpus

    vocab, ids = text_corpus("hello world, hello rnn! ")
    spec = model.Spec(cell, vocab.size, 32, 1)
    rng = np.random.default_rng(0)
    params = model.init_params(spec, rng)
    opt = optim.Adam(params, beta1=0.9, beta2=0.999, eps=1e-8)
    x, y = ids[None, :-1], ids[None, 1:]
    for _ in range(300):
        loss, grads, _ = model.loss_and_grads(params, spec, x, y, model.zero_state(spec, 1))
        optim.clip_gradients(grads, 5.0)
        opt.step(params, grads, 1e-2)
    assert loss < 0.05  # from log(V) = 2.6: the string is memorised


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reused_window_buffers_leak_nothing_between_calls(cell):
    """The model keeps its window buffers from one call to the next (model._scratch): what
    a call returns must not change when later calls, of other shapes and dtypes, reuse them,
    and repeating a call must repeat its results exactly."""
    rng = np.random.default_rng(2)
    spec = model.Spec(cell, 7, 10, 2)
    params = model.init_params(spec, rng, np.float64)
    x, y = rng.integers(0, 7, (3, 8)), rng.integers(0, 7, (3, 8))
    state = [tuple(rng.normal(0, 0.5, (3, 10)) for _ in s) for s in model.zero_state(spec, 3)]
    masks = model.dropout_masks(spec, 3, 8, 0.3, rng, np.float64)
    loss, grads, new_state = model.loss_and_grads(params, spec, x, y, state, masks)
    kept = {k: g.copy() for k, g in grads.items()}
    kept_state = [tuple(a.copy() for a in s) for s in new_state]

    model.loss_and_grads(params, spec, y, x, new_state, masks)  # same shapes, other data
    params32 = {k: v.astype(np.float32) for k, v in params.items()}  # other dtype and shapes
    model.loss_and_grads(params32, spec, x[:2, :5], y[:2, :5], model.zero_state(spec, 2))
    model.forward(params, spec, x[:1], model.zero_state(spec, 1, np.float64))

    for name in grads:
        np.testing.assert_array_equal(grads[name], kept[name], err_msg=name)
    for a, b in zip(new_state, kept_state):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    again, grads_again, _ = model.loss_and_grads(params, spec, x, y, state, masks)
    assert again == loss
    for name in grads:
        np.testing.assert_array_equal(grads_again[name], kept[name], err_msg=name)
