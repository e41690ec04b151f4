"""rnnlm gradflow: how far back the gradient reaches, measured with the textbook engine's
own backward pass; the linear RNN's exact answer, a^k, and the textbook's rnn_backward."""
import numpy as np
import pytest

from rnnlm import gradflow, textbook
from rnnlm.cli import cli
from rnnlm.params import Spec, init_params, layer_keys

from conftest import CONFIGS
from helpers import assert_one_line_error


def text_ids(n=3000, vocab=7, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, n)


@pytest.mark.parametrize("a", [0.9, 1.1])  # vanishing and exploding
def test_the_linear_rnns_gradient_is_w_to_the_power_k(a):
    spec = Spec("rnn", 7, 6, 1)
    params = init_params(spec, np.random.default_rng(1), np.float64)
    params["rnn.weight_hh_l0"] = a * np.eye(6)
    flow = gradflow.measure(params, spec, text_ids(), "linear", distance=70, positions=5,
                            seq_len=10, activation="identity")
    np.testing.assert_allclose(flow.ratios[:, 0], a ** np.arange(71), rtol=1e-12)
    assert flow.sigma == [pytest.approx(a)]
    assert flow.reach() == (66 if a < 1 else None)  # 0.9**65 > 1e-3 > 0.9**66


def test_the_scale_option_multiplies_every_recurrent_weight():
    spec = Spec("gru", 7, 5, 2)
    params = init_params(spec, np.random.default_rng(2), np.float64)
    doubled = gradflow.scaled(params, spec, 2.0)
    for layer in range(2):
        w_ih, w_hh, _, _ = layer_keys(layer)
        assert np.array_equal(doubled[w_hh], 2 * params[w_hh])
        assert doubled[w_ih] is params[w_ih]
    plain = gradflow.measure(params, spec, text_ids(), "x", distance=5, positions=3, seq_len=4)
    big = gradflow.measure(params, spec, text_ids(), "x", distance=5, positions=3, seq_len=4,
                           scale_whh=2.0)
    assert big.sigma == pytest.approx([2 * s for s in plain.sigma])


def test_each_distances_gradient_is_what_rnn_backward_returns_for_that_window():
    """dL_t/ds_(t-k) from state_gradients equals the ds0 that the textbook's rnn_backward
    gives when the window starts after s_(t-k) and only the last step's loss is kept."""
    spec = Spec("rnn", 7, 5, 1)
    params = init_params(spec, np.random.default_rng(3), np.float64)
    ids = text_ids(3 * 13, seed=4).reshape(3, 13)  # 3 windows: 12 steps, then the target
    grads = gradflow.state_gradients(params, spec, ids)  # (12, 1, H, 3)
    (p,), out = textbook.to_textbook(params, spec)
    p = dict(p, **out)
    x = np.eye(7)[:, ids[:, :12]]  # (m, batch, T) one-hot
    s, y, _ = textbook.rnn_forward(x, np.zeros((5, 3)), p)
    dlogits = y[:, :, -1].copy()
    dlogits[ids[:, 12], np.arange(3)] -= 1  # the last step's cross-entropy, per window
    for k in range(1, 12):
        start = 12 - k  # the window after s_(11-k)
        _, _, caches = textbook.rnn_forward(x[:, :, start:], s[:, :, start - 1], p)
        ds = np.zeros((5, 3, k))
        ds[:, :, -1] = p["V"].T @ dlogits
        expected = textbook.rnn_backward(ds, caches)["ds0"]
        np.testing.assert_allclose(grads[k, 0], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_cells_gradient_matches_finite_differences_through_the_state(cell):
    """For the gated cells: dL/ds of the first layer's state k steps back, against centred
    differences of the loss with that state nudged (the rest of the forward run again)."""
    spec = Spec(cell, 6, 4, 2)
    params = init_params(spec, np.random.default_rng(5), np.float64)
    ids = text_ids(2 * 9, vocab=6, seed=6).reshape(2, 9)
    grads = gradflow.state_gradients(params, spec, ids)
    layers, out = textbook.to_textbook(params, spec)
    onehot, T, k = np.eye(6), 8, 5

    def loss(nudge):
        states = [tuple(np.zeros((4, 2)) for _ in range(spec.state_size)) for _ in range(2)]
        for t in range(T):
            inp = onehot[:, ids[:, t]]
            for l in range(2):
                states[l], _ = textbook.cell_forward(cell, inp, states[l], layers[l])
                if t == T - 1 - k and l == 0:
                    states[l] = (states[l][0] + nudge,) + states[l][1:]
                inp = states[l][0]
        probs = textbook.softmax(out["V"] @ inp + out["by"])
        return -np.log(probs[ids[:, T], np.arange(2)]).sum()

    eps, numeric = 1e-6, np.zeros((4, 2))
    for i in range(4):
        for b in range(2):
            e = np.zeros((4, 2))
            e[i, b] = eps
            numeric[i, b] = (loss(e) - loss(-e)) / (2 * eps)
    np.testing.assert_allclose(grads[k, 0], numeric, rtol=1e-6, atol=1e-9)


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    return path


def test_the_command_prints_the_table_and_draws_it(runner, text, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "flow.png"
    args = ["gradflow", str(text), "--cell", "rnn", "--cell", "gru", "--hidden", "8",
            "--distance", "70", "--positions", "4", "-o", str(png)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "RNN 2 x 8, initialised" in lines[1] and "GRU 2 x 8, initialised" in lines[1]
    assert [int(line.split()[0]) for line in lines[2:11]] == [0, 1, 2, 5, 10, 20, 50, 64, 70]
    assert lines[2].split()[1:] == ["1.000e+00", "1.000e+00"]
    assert "largest singular value of W_hh" in lines[11] and "(clip_norm 5: not clipped)" in lines[11]
    assert png.read_bytes().startswith(b"\x89PNG") and result.stderr.strip() == f"wrote {png}"
    assert runner.invoke(cli, args).exit_code == 0  # its own picture: drawn again
    exploding = runner.invoke(cli, ["gradflow", str(text), "--cell", "rnn", "--hidden", "8",
                                    "--distance", "30", "--positions", "4", "--linear",
                                    "--scale-whh", "4", "-o", str(png)])
    assert exploding.exit_code == 0, exploding.output
    assert "which clip_norm 5 would scale by" in exploding.stdout
    assert "below 1e-3 of its start nowhere up to k = 30" in exploding.stdout


def test_a_checkpoint_is_measured_with_its_own_window(runner, text, trained, tmp_path):
    result = runner.invoke(cli, ["gradflow", str(trained.parent / "corpus.txt"), "--ckpt",
                                 str(trained), "--distance", "12", "--positions", "3",
                                 "-o", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert "run (rnn, step 20)" in result.stdout.splitlines()[1]
    assert [int(line.split()[0]) for line in result.stdout.splitlines()[2:8]] == [0, 1, 2, 5, 8, 10]


def test_bad_input_is_one_line_and_overwrites_nothing(runner, text, tmp_path):
    mine = tmp_path / "holiday.png"
    mine.write_bytes(b"\x89PNG my photo")
    small = ["--hidden", "4", "--distance", "5", "--positions", "2"]
    if pytest.importorskip("matplotlib"):
        assert_one_line_error(runner.invoke(cli, ["gradflow", str(text), "--cell", "rnn", "-o",
                                                  str(mine)] + small),
                              "exists and is not an rnnlm gradflow picture")
    assert mine.read_bytes() == b"\x89PNG my photo"
    assert_one_line_error(runner.invoke(cli, ["gradflow", str(text), "--cell", "lstm",
                                              "--linear", "-o", str(tmp_path / "a.png")] + small),
                          "the identity activation (--linear) is the vanilla RNN's")
    short = tmp_path / "short.txt"
    short.write_text("abc" * 20)
    assert_one_line_error(runner.invoke(cli, ["gradflow", str(short), "--cell", "rnn",
                                              "--distance", "100", "-o", str(tmp_path / "b.png")]),
                          "too short for the measurement: 60 characters", "lower --distance")


@pytest.mark.parametrize("scale", ["nan", "inf"])
def test_a_scale_that_is_not_a_finite_number_is_refused(runner, text, tmp_path, scale):
    assert_one_line_error(runner.invoke(cli, ["gradflow", str(text), "--cell", "rnn",
                                              "--scale-whh", scale, "--hidden", "4",
                                              "-o", str(tmp_path / "g.png")]),
                          "--scale-whh must be a finite number >= 0", scale)


def test_a_gradient_beyond_float64_is_said_to_overflow_not_printed_as_nan(runner, text):
    """W_hh scaled by 40 with the identity: the states themselves leave float64's range
    (one line: nothing to measure); by 6 with tanh, the gradient alone grows beyond it
    (rows say overflow, the summary says from where); a W_hh of 1e300 prints as 1e+300,
    not 300 digits."""
    small = ["--cell", "rnn", "--hidden", "8", "--positions", "4"]
    states = runner.invoke(cli, ["gradflow", str(text), *small, "--distance", "500",
                                 "--linear", "--scale-whh", "40"])
    assert_one_line_error(states, "left float64's range", "lower --scale-whh or --distance")
    norms = np.array([[1.0], [1e200], [np.inf], [np.inf]])  # as an exploding gradient's
    flow = gradflow.Flow("x", "rnn", False, norms, [1e10], np.inf, 5.0, 2, 4)
    table = gradflow.report([flow], 3, 4)
    assert "nan" not in " ".join(table) and table[4].split()[1:] == ["overflow"]
    assert "grows beyond float64's range from k = 2" in flow.summary(3)
    spec = Spec("rnn", 7, 8, 1)
    params = init_params(spec, np.random.default_rng(1), np.float64)
    huge = gradflow.measure(params, spec, text_ids(), "x", distance=3, positions=2, seq_len=2,
                            scale_whh=1e300)
    assert "e+299" in huge.summary(3) and len(huge.summary(3)) < 200


def test_positions_beyond_the_texts_room_are_said(runner, tmp_path):
    six = tmp_path / "six.txt"
    six.write_text("abcdef")
    result = runner.invoke(cli, ["gradflow", str(six), "--cell", "rnn", "--hidden", "4",
                                 "--distance", "2", "--seq-len", "2", "--positions", "200",
                                 "-o", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith(
        "mean over 1 positions (200 asked: the text has room for no more)")


def test_a_checkpoints_text_is_read_in_the_encoding_it_was_trained_with(runner, tmp_path):
    """A model of a Latin-1 text: eval, inspect and gradflow read a Latin-1 file as its
    corpus was read, without --encoding; gradflow takes --encoding too."""
    import rnnlm
    latin = tmp_path / "latin.txt"
    latin.write_bytes(("Le cœur a ses raisons que la raison ne connaît point. " * 40)
                      .replace("œ", "oe").encode("latin-1"))
    run = rnnlm.train(latin, tmp_path / "run", config_file=CONFIGS / "tiny.yaml",
                      encoding="latin-1", max_steps=5)
    ckpt = str(run / "last.npz")
    assert runner.invoke(cli, ["eval", "--ckpt", ckpt, str(latin)]).exit_code == 0
    assert runner.invoke(cli, ["inspect", "--ckpt", ckpt, str(latin), "-o",
                               str(tmp_path / "p.html")]).exit_code == 0
    flow = runner.invoke(cli, ["gradflow", str(latin), "--ckpt", ckpt, "--distance", "5",
                               "--positions", "2", "-o", str(tmp_path / "g.png")])
    assert flow.exit_code == 0, flow.output
    as_utf8 = runner.invoke(cli, ["eval", "--ckpt", ckpt, str(latin), "--encoding", "utf-8"])
    assert_one_line_error(as_utf8, "not valid utf-8")
