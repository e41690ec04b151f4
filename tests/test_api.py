"""The Python API (rnnlm.load, rnnlm.train): the calls a notebook makes, and the ones the
commands are built on, so that each gives what its command prints."""
import json
import math

import numpy as np
import pytest

import rnnlm
from rnnlm import RnnlmError, api
from rnnlm.io import checkpoint
from rnnlm.cli import cli
from rnnlm.fast import engine
from rnnlm.params import zero_state

from conftest import CONFIGS, read_corpus

TINY = CONFIGS / "tiny.yaml"


@pytest.fixture
def run_dir(corpus, tmp_path):
    return rnnlm.train(corpus, tmp_path / "run", config_file=TINY, cell="gru", max_steps=30)


def test_train_runs_a_whole_run_and_returns_where_it_wrote(run_dir, corpus):
    """Everything `rnnlm train` writes, curves.png included where Matplotlib is there."""
    from rnnlm import plots
    written = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    assert {"best.npz", "config.yaml", "last.npz", "metrics.csv"} <= written
    assert ("curves.png" in written) == plots.available()
    saved = checkpoint.load(run_dir / "last.npz")
    assert saved.meta.step == 30 and saved.meta.config["cell"] == "gru"
    assert saved.meta.corpus["paths"] == [str(corpus)]


def test_train_takes_settings_as_keywords_and_names_a_bad_one(corpus, tmp_path):
    with pytest.raises(RnnlmError, match="hiden"):
        rnnlm.train(corpus, tmp_path / "a", config_file=TINY, hiden=8)
    with pytest.raises(RnnlmError, match="hidden"):
        rnnlm.train(corpus, tmp_path / "b", config_file=TINY, hidden="many")
    out = rnnlm.train(corpus, tmp_path / "c", config_file=TINY, time="2s")
    assert checkpoint.load(out / "last.npz").meta.step > 20  # time alone lifts tiny's 20


def test_the_api_samples_what_the_command_prints(runner, run_dir):
    model = rnnlm.load(run_dir)
    result = runner.invoke(cli, ["sample", "--ckpt", str(run_dir), "--prime", "the ", "-n",
                                 "120", "--seed", "5", "--temperature", "0.9", "--top-k", "5"])
    assert result.exit_code == 0, result.output
    text = model.sample("the ", 120, temperature=0.9, top_k=5, seed=5)
    assert len(text) == 120
    assert result.stdout == "the " + text + "\n"
    several = runner.invoke(cli, ["sample", "--ckpt", str(run_dir), "-n", "40", "--seed", "5",
                                  "--num-samples", "3", "--top-p", "0.9"])
    samples = several.stdout.split("-" * 40 + "\n")
    assert samples == [model.sample(n=40, seed=5 if k == 0 else [5, k], top_p=0.9) + "\n"
                       for k in range(3)]
    assert "".join(model.chars("the ", 50, seed=1)) == model.sample("the ", 50, seed=1)


def test_the_api_scores_text_as_eval_does(runner, run_dir, corpus):
    model = rnnlm.load(run_dir)
    nats = model.loss(corpus.read_text())
    result = runner.invoke(cli, ["eval", "--ckpt", str(run_dir), str(corpus)])
    assert f"{nats:.4f} nats/char" in result.stdout
    _, ids = read_corpus(corpus)
    from rnnlm.evaluate import evaluate
    streams = rnnlm.api.streams(len(ids), 32)  # each with 256 characters of context
    assert streams == len(ids) // 256 < 32
    assert nats == pytest.approx(evaluate(model.params, model.spec, ids, streams), rel=1e-12)
    with pytest.raises(RnnlmError, match="not in the vocabulary: '~'"):
        model.loss("the ~ fox")
    assert model.loss("the ~ fox", skip_unknown=True) == pytest.approx(model.loss("the  fox"))


def test_probabilities_are_the_next_character_distribution(run_dir):
    model = rnnlm.load(run_dir)
    p = model.probabilities("the quick brown ")
    assert list(p) == list(model.vocab.chars)  # every character, in the vocabulary's order
    assert sum(p.values()) == pytest.approx(1.0, abs=1e-12) and min(p.values()) > 0
    ids = model.vocab.encode("the quick brown ")[0]
    logits, _ = engine.forward(model.params, model.spec, ids[None], zero_state(model.spec, 1))
    z = logits[0, -1].astype(np.float64)
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(list(p.values()), expected, rtol=1e-5)
    greedy = model.sample("the quick brown ", 1, argmax=True)
    assert greedy == max(p, key=p.get)
    assert model.probabilities("") == model.probabilities("\n")  # the start of a line
    with pytest.raises(RnnlmError, match="not in the model's vocabulary"):
        model.probabilities("~")


def test_info_is_what_rnnlm_info_prints(runner, run_dir):
    model = rnnlm.load(run_dir / "best.npz")
    result = runner.invoke(cli, ["info", str(run_dir / "best.npz"), "--json"])
    assert json.loads(result.stdout) == json.loads(json.dumps(model.info))
    assert model.info["model"] == "GRU 1 x 16"
    assert repr(model).startswith("<rnnlm.Model GRU 1 x 16")


def test_load_says_which_checkpoint_a_run_directory_means(run_dir):
    heard = []
    rnnlm.load(run_dir, notify=heard.append)
    assert heard == [f"using {run_dir / 'best.npz'}"]
    with pytest.raises(RnnlmError, match="does not exist"):
        rnnlm.load(run_dir / "nothing.npz")
    with pytest.raises(RnnlmError, match="engine must be one of fast, textbook"):
        rnnlm.load(run_dir, engine="quick")


def test_both_engines_give_the_same_numbers_through_the_api(run_dir, corpus):
    fast, textbook = rnnlm.load(run_dir), rnnlm.load(run_dir, engine="textbook")
    assert fast.sample("the ", 60, seed=3) == textbook.sample("the ", 60, seed=3)
    assert fast.loss("the lazy dog.") == pytest.approx(textbook.loss("the lazy dog."), rel=1e-5)
    assert math.isclose(sum(textbook.probabilities("t").values()), 1.0)


# Every public function checks its arguments as the command line does: RnnlmError naming
# the argument, never a ValueError or TypeError from deep inside.
MISUSES = [
    (lambda m: m.sample("a", 5, seed=-1), "seed must be >= 0"),
    (lambda m: m.sample("a", 5, seed="7"), "seed must be a whole number"),
    (lambda m: m.sample("a", 5, top_k=2.5), "top-k must be a whole number"),
    (lambda m: m.sample("a", "10"), "n must be a whole number"),
    (lambda m: m.sample("a", -5), "n must be >= 0"),
    (lambda m: m.sample("a", 5, temperature="0.8"), "temperature must be a number"),
    (lambda m: m.sample("a", 5, temperature=None), "temperature must be a number"),
    (lambda m: m.sample("a", 5, top_p=float("nan")), "top-p must be a finite number"),
    (lambda m: m.sample(None, 5), "prime must be a str"),
    (lambda m: m.sample(b"ab", 5), "prime must be a str, got bytes"),
    (lambda m: m.loss(None), "text must be a str"),
    (lambda m: m.loss(b"x"), "text must be a str, got bytes"),
    (lambda m: m.loss("abc", batch_size=0), "batch_size must be >= 1"),
    (lambda m: m.loss_of_file(""), "path is an empty path"),
    (lambda m: m.probabilities(3), "prime must be a str"),
    (lambda m: rnnlm.load(None), "path must be a path"),
    (lambda m: rnnlm.load(""), "path is an empty path"),
    (lambda m: rnnlm.train(123), "corpus must be a path"),
    (lambda m: rnnlm.train(b"x.txt"), "got bytes"),
    (lambda m: rnnlm.train(""), "corpus is an empty path"),
    (lambda m: rnnlm.train("x.txt", out=123), "out must be a path"),
    (lambda m: rnnlm.train(None, resume=""), "resume is an empty path"),
    (lambda m: api.choose(""), "corpus is an empty path"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """One briefly trained model, for the tests that only call it."""
    root = tmp_path_factory.mktemp("api")
    text = root / "corpus.txt"
    text.write_text("It was the best of times, it was the worst of times;\n" * 30)
    return rnnlm.load(rnnlm.train(text, root / "run", config_file=TINY, max_steps=5))


@pytest.mark.parametrize("misuse,message", MISUSES, ids=[m for _, m in MISUSES])
def test_a_public_function_given_a_wrong_argument_names_it(model, misuse, message):
    with pytest.raises(RnnlmError, match=message.replace("(", r"\(")):
        misuse(model)


def test_a_model_without_a_newline_samples_nothing_when_asked_for_nothing(tmp_path):
    text = tmp_path / "abc.txt"
    text.write_text("abcabcabcab" * 300, encoding="utf-8")
    run = rnnlm.train(text, tmp_path / "run", config_file=CONFIGS / "tiny.yaml", max_steps=5)
    model = rnnlm.load(run)
    assert model.sample("", 0, seed=1) == "" and model.sample("a", 0, seed=1) == ""
    assert len(model.sample("", 3, seed=1)) == 3
    with pytest.raises(RnnlmError, match="no newline, so an empty prime has no start"):
        model.probabilities("")
