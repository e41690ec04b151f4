"""Properties that must hold for any input, checked by hypothesis."""
import string

import numpy as np
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from rnnlm import RnnlmError, config
from rnnlm.io import data

from conftest import read_corpus

TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1)


@given(TEXT)
def test_encode_decode_round_trip(text):
    vocab, ids = data.text_corpus(text)
    assert vocab.decode(ids) == text
    assert ids.dtype == np.min_scalar_type(vocab.size - 1)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(text=st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                    min_size=1), chunk=st.integers(1, 9))
def test_reading_a_file_in_chunks_round_trips(tmp_path, monkeypatch, text, chunk):
    monkeypatch.setattr(data, "CHUNK_BYTES", chunk)
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    vocab, ids = read_corpus(path)
    assert vocab.decode(ids) == text


@given(n=st.integers(2, 3000), batch=st.integers(1, 16), seq_len=st.integers(1, 40),
       shifted=st.booleans(), epoch=st.integers(0, 200))
def test_an_epoch_visits_every_character_once_and_reports_the_rest(n, batch, seq_len, shifted,
                                                                   epoch):
    ids = np.arange(n)  # each id is its own position
    if n // batch < seq_len + 1:
        try:
            data.Streams(ids, batch, seq_len, shifted)
        except RnnlmError as e:
            assert f"at least {batch * (seq_len + 1)}" in str(e)
            return
        raise AssertionError("a too-short text was accepted")
    streams = data.Streams(ids, batch, seq_len, shifted)
    windows = [streams.window(k, epoch) for k in range(streams.windows)]
    seen = np.concatenate([x.ravel() for x, _ in windows])
    assert len(seen) == len(set(seen.tolist())) == streams.chars_per_epoch
    targets = np.concatenate([y.ravel() for _, y in windows])
    np.testing.assert_array_equal(targets, seen + 1)  # each target is its input's successor
    trimmed = n - streams.chars_per_epoch  # what `rnnlm train` reports as not visited
    assert trimmed == n - len(seen)
    # at most a partial window per stream (and the window given up to shift), + n mod B
    assert trimmed < batch * seq_len * (1 + streams.shifted) + batch


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["1e-3", "adam", "lstm", "-1", "nan"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
KEYS = st.one_of(st.sampled_from(list(config.FIELDS)), st.text(max_size=10), st.integers())


def build(**kwargs):
    """(Config, None) or (None, the one-line message of the RnnlmError it raised); any
    other exception fails the test."""
    try:
        return config.build(**kwargs), None
    except RnnlmError as e:
        assert "\n" not in str(e), str(e)
        return None, str(e)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_a_config_file_is_taken_as_written_or_refused_naming_it(tmp_path, mapping):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(mapping), encoding="utf-8")
    cfg, error = build(file=path)
    if error is not None:
        assert error.startswith(f"config file {path}")
        return
    for key, value in mapping.items():  # every key given is a setting, now holding its value
        assert getattr(cfg, key) == config.coerce(key, value)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=string.printable + "é中🙂\x00", max_size=60))
@example("seed: 2001-13-45")  # PyYAML raises ValueError for an impossible date
@example("hidden: !!python/object/apply:os.system ['true']")
@example("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[")
def test_arbitrary_yaml_text_is_a_config_or_an_error_naming_the_file(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    cfg, error = build(file=path)
    if error is not None:
        assert error.startswith(f"config file {path}")
        return
    again = tmp_path / "again.yaml"  # what was accepted survives a round trip
    again.write_text(config.to_yaml(cfg), encoding="utf-8")
    assert config.build(file=again) == cfg


@given(st.lists(st.text(max_size=30), max_size=4))
def test_set_assignments_are_applied_or_refused_naming_the_option(assignments):
    cfg, error = build(assignments=assignments)
    if error is not None:
        assert error.startswith("--set")
        return
    for text in assignments:  # the last assignment of a key wins
        key, value = config.parse_assignment(text)
        last = [config.parse_assignment(t)[1] for t in assignments
                if config.parse_assignment(t)[0] == key][-1]
        assert getattr(cfg, key) == config.coerce(key, last)
