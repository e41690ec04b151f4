"""Dynamic evaluation (rnnlm eval --dynamic; Krause et al., 2018): a model that keeps
learning the text it scores, one window after another, and never scores a character it
has learned from."""
import numpy as np
import pytest

import rnnlm
from rnnlm import RnnlmError, evaluate
from rnnlm.cli import cli

from conftest import CONFIGS

TINY = CONFIGS / "tiny.yaml"
# A text the tiny model has never seen, one new phrase over and over: a model that adapts
# as it reads learns it, one that does not keeps paying the same price for each repeat
# (the tiny model's text is a pangram: it knows every letter).
REPEATS = "zebras quiz jovial vexed nymphs. " * 40


@pytest.fixture
def model(corpus, tmp_path):
    return rnnlm.load(rnnlm.train(corpus, tmp_path / "run", config_file=TINY, max_steps=30))


def test_without_learning_it_is_the_ordinary_loss_in_one_stream(model):
    ids, _ = model.vocab.encode("the quick brown fox jumps over the lazy dog.\n" * 5)
    still = evaluate.dynamic(model.params, model.spec, ids, lr=0.0, decay=0.0)
    assert still == pytest.approx(evaluate.evaluate(model.params, model.spec, ids, batch=1),
                                  rel=1e-5)


def test_a_model_that_learns_as_it_reads_scores_a_repeated_phrase_better(model):
    static, dynamic = model.loss(REPEATS, batch_size=1), model.loss(REPEATS, dynamic=True)
    assert dynamic < static - 0.1, (static, dynamic)


def test_it_leaves_the_model_as_it_was(model):
    before = {k: v.copy() for k, v in model.params.items()}
    model.loss("the quick brown fox", dynamic=True)
    assert all(np.array_equal(before[k], model.params[k]) for k in before)


def test_eval_dynamic_says_what_it_measured(runner, trained, corpus):
    done = runner.invoke(cli, ["eval", "--ckpt", str(trained / "best.npz"), str(corpus),
                               "--dynamic"])
    assert done.exit_code == 0, done.output
    nats = rnnlm.load(trained / "best.npz").loss(corpus.read_text(), dynamic=True)
    assert f"{nats:.4f} nats/char" in done.stdout
    assert "dynamic evaluation: the model learned the text as it read it" in done.stdout


def test_one_character_has_no_loss_to_measure(model):
    with pytest.raises(RnnlmError, match="at least 2 characters"):
        model.loss("t", dynamic=True)
