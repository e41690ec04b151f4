import dataclasses

import pytest

from rnnlm import RnnlmError, config
from rnnlm.config import Config

from conftest import CONFIGS


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_live_in_one_place():
    assert config.build() == Config()


def test_precedence_defaults_then_file_then_set_then_flags(tmp_path):
    path = write(tmp_path, "hidden: 32\nlr: 1e-3\nseed: 5\nmax_steps: 10\n")
    cfg = config.build(file=path, assignments=["lr=0.5", "seed=6"], seed=7)
    assert cfg.hidden == 32  # file over default
    assert cfg.lr == 0.5  # --set over file
    assert cfg.seed == 7  # flag over --set
    assert cfg.max_steps == 10
    assert cfg.cell == Config.cell  # untouched default
    assert config.build(file=path, seed=None).seed == 5  # an absent flag changes nothing


def test_yaml_scientific_notation_strings_become_numbers(tmp_path):
    cfg = config.build(file=write(tmp_path, "lr: 1e-3\nmax_steps: 1e4\neps: 1.0e-6\n"))
    assert cfg.lr == 1e-3 and cfg.max_steps == 10000 and isinstance(cfg.max_steps, int)


def test_every_shipped_config_loads():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"tiny.yaml", "shakespeare.yaml", "min-char-rnn.yaml"} <= names
    for path in CONFIGS.glob("*.yaml"):
        config.build(file=path)
    mcr = config.build(file=CONFIGS / "min-char-rnn.yaml")
    assert (mcr.hidden, mcr.seq_len, mcr.batch_size, mcr.optimizer, mcr.lr, mcr.clip_value) == \
        (100, 25, 1, "adagrad", 0.1, 5.0)


@pytest.mark.parametrize("text,message", [
    ("hiden: 3\n", r"unknown config key 'hiden' \(did you mean 'hidden'\?\)"),
    ("hidden: abc\n", "hidden must be an integer, got 'abc'"),
    ("hidden: 2.5\n", "hidden must be an integer, got 2.5"),
    ("hidden: true\n", "hidden must be an integer, got True"),
    ("hidden: 0\n", "hidden must be >= 1, got 0"),
    ("hidden: -4\n", "hidden must be >= 1, got -4"),
    ("lr: -0.1\n", "lr must be > 0, got -0.1"),
    ("lr: nan\n", "lr must be a number"),
    ("lr: [1, 2]\n", "lr must be a number"),
    ("cell: transformer\n", "cell must be one of rnn, lstm, gru, got 'transformer'"),
    ("cell: 3\n", "cell must be a string, got 3"),
    ("val_fraction: 1\n", r"val_fraction must be in \[0, 1\), got 1.0"),
    ("seq_len: 0\n", "seq_len must be >= 1, got 0"),
    ("dropout: 1.0\n", r"dropout must be in \[0, 1\)"),
    ("weight_drop: 1\n", r"weight_drop must be in \[0, 1\), got 1.0"),
    ("dropout_mode: variational\n", "dropout_mode must be one of step, locked, got 'variational'"),
    ("hidden: [\n", "invalid YAML at line 2"),
    ("- a\n- b\n", "must hold a mapping of key: value, not a list"),
    ("1: 2\n", "key 1 is not a string"),
])
def test_bad_files_name_the_key(tmp_path, text, message):
    with pytest.raises(RnnlmError, match=message) as err:
        config.build(file=write(tmp_path, text))
    assert "c.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_empty_file_means_defaults(tmp_path):
    assert config.build(file=write(tmp_path, "")) == Config()


@pytest.mark.parametrize("assignment,message", [
    ("nokey", "--set expects KEY=VALUE"),
    ("=3", "--set expects KEY=VALUE"),
    ("colour=red", "unknown config key 'colour'"),
    ("batch_size=many", "batch_size must be an integer"),
    ("optimizer=adamw", "optimizer must be one of sgd, adagrad, rmsprop, adam"),
])
def test_bad_assignments(assignment, message):
    with pytest.raises(RnnlmError, match=message):
        config.build(assignments=[assignment])


@pytest.mark.parametrize("problem,message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "is a directory"),
    (lambda p: (p.write_bytes(b"lr: \xff\n"), p)[1], "not UTF-8"),
])
def test_unreadable_config_files(tmp_path, problem, message):
    with pytest.raises(RnnlmError, match=message):
        config.build(file=problem(tmp_path / "x.yaml"))


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = config.build(assignments=["cell=gru", "lr=3e-4", "layers=2"])
    path = write(tmp_path, config.to_yaml(cfg))
    assert config.build(file=path) == cfg


def test_named_choices_match_what_implements_them():
    from rnnlm import engines, params
    from rnnlm.run import optim
    assert tuple(optim.OPTIMIZERS) == config.OPTIMIZERS
    assert tuple(engines.ENGINES) == config.ENGINES
    from rnnlm.fast.cells import STEPS
    assert tuple(params.CELLS) == tuple(STEPS) == ("rnn", "lstm", "gru")


def test_a_checkpoint_from_before_shifted_windows_resumes_on_the_fixed_windows_it_had():
    saved = dataclasses.asdict(config.Config())
    del saved["windows"]  # what a checkpoint saved before the setting existed holds
    assert config.from_dict(saved).windows == "fixed"
    assert config.Config().windows == "shifted"  # new runs shift them
    assert config.from_dict({**saved, "windows": "shifted"}).windows == "shifted"
