import numpy as np
import pytest

from rnnlm import RnnlmError, evaluate, sample, textbook
from rnnlm.io.data import text_corpus
from rnnlm.fast import engine
from rnnlm.params import Spec, init_params, zero_state


@pytest.fixture
def lm():
    vocab, _ = text_corpus("abcdefgh\n ")
    spec = Spec("gru", vocab.size, 12, 2)
    return init_params(spec, np.random.default_rng(3)), spec, vocab


def gen(lm, seed, **kw):
    params, spec, vocab = lm
    return "".join(sample.generate(params, spec, vocab, np.random.default_rng(seed), **kw))


def test_same_seed_same_text_and_length_counts_generated(lm):
    a = gen(lm, 7, prime="abc", length=300)
    assert len(a) == 300
    assert a == gen(lm, 7, prime="abc", length=300)
    assert a != gen(lm, 8, prime="abc", length=300)


@pytest.mark.parametrize("stepper", [engine.stepper, textbook.stepper])
def test_each_engines_stepper_matches_the_window_forward(lm, stepper, kernel_path):
    params, spec, vocab = lm
    ids = vocab.encode("abcabc hgf\n")[0]
    step = stepper(params, spec)
    stepped = np.stack([step(i) for i in ids])
    logits, _ = engine.forward(params, spec, ids[None], zero_state(spec, 1))
    np.testing.assert_allclose(stepped, logits[0], rtol=1e-5, atol=1e-6)


def test_both_engines_sample_the_same_text(lm):
    assert gen(lm, 4, prime="ab", length=200) == gen(lm, 4, prime="ab", length=200,
                                                      engine="textbook")


def test_top_k_and_argmax(lm):
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 3.0, 1.0, 2.0, -1.0])
    draws = {sample.pick(logits, rng, top_k=2) for _ in range(500)}
    assert draws == {1, 3}
    assert sample.pick(logits, rng, argmax=True) == 1
    cold = [sample.pick(logits, rng, temperature=0.05) for _ in range(200)]
    assert cold.count(1) >= 199
    assert gen(lm, 1, prime="ab", length=50, argmax=True) == gen(lm, 2, prime="ab", length=50,
                                                               argmax=True)


def test_temperature_one_follows_the_softmax():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    counts = np.bincount([sample.pick(logits, rng) for _ in range(20000)], minlength=3)
    np.testing.assert_allclose(counts / 20000, [0.5, 0.3, 0.2], atol=0.015)


def test_bad_prime_and_temperature(lm):
    with pytest.raises(RnnlmError, match="prime has 2 character.*'x' 'z'"):
        gen(lm, 0, prime="axbz")
    with pytest.raises(RnnlmError, match="temperature must be a number > 0"):
        gen(lm, 0, temperature=0.0)


def test_evaluate_matches_the_mean_cross_entropy(lm):
    params, spec, vocab = lm
    ids = vocab.encode("abcdefgh\n hgfedcba " * 5)[0]
    whole = evaluate.evaluate(params, spec, ids, batch=1, seq_len=7)
    logits, _ = engine.forward(params, spec, ids[None, :-1], zero_state(spec, 1))
    ce, _ = engine.softmax_cross_entropy(logits[0].T.astype(np.float64), ids[1:])
    assert whole == pytest.approx(ce, rel=1e-5)
    # more streams cut the context at their starts but still count every character once
    assert evaluate.evaluate(params, spec, ids, batch=4) == pytest.approx(ce, rel=0.05)
    assert evaluate.evaluate(params, spec, ids, batch=4, engine="textbook") == pytest.approx(
        evaluate.evaluate(params, spec, ids, batch=4), rel=1e-5)
