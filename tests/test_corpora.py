"""Corpora as users keep them (files, directories, standard input), fine-tuning across
vocabularies, and the small things: info, config, run directories as --ckpt, sampling
options, byte-order marks and line ends."""
import json
import subprocess
import sys

import numpy as np
import pytest

from rnnlm.io import checkpoint, corpus
from rnnlm import params as params_lib
from rnnlm.cli import cli

from conftest import CONFIGS
from helpers import assert_one_line_error

TINY = ["--config", str(CONFIGS / "tiny.yaml")]
LINE = "the quick brown fox jumps over the lazy dog.\n"


def tree(root):
    """A source tree: two packages, a hidden directory, a hidden file, a binary file."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "pkg" / "a.py").write_text("def a():\n    return 1\n" * 30)
    (root / "pkg" / "sub" / "b.py").write_text("def b():\n    return 2\n" * 30)
    (root / "pkg" / "notes.txt").write_text("notes, not code\n" * 30)
    (root / ".git" / "config.py").write_text("hidden = True\n")
    (root / "pkg" / ".secret.py").write_text("token = 1\n")
    (root / "pkg" / "logo.py").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 20)
    return root


def test_a_directory_is_walked_in_sorted_order_with_globs_and_skips(tmp_path):
    src = tree(tmp_path / "src")
    text = corpus.read([src], globs=["*.py"])
    assert [s.path for s in text.sources] == [str(src / "pkg" / "a.py"),
                                              str(src / "pkg" / "sub" / "b.py")]
    assert text.skipped == {"hidden": 1, "undecodable or binary": 1}
    joined = text.vocab.decode(text.ids)
    a, b = (src / "pkg" / "a.py").read_text(), (src / "pkg" / "sub" / "b.py").read_text()
    assert joined == a + corpus.SEPARATOR + b  # documents joined by the separator
    assert text.sources[0].sha256 == __import__("hashlib").sha256(a.encode()).hexdigest()
    everything = corpus.read([src])  # without a glob: every text file, notes.txt too
    assert len(everything.sources) == 3


def test_several_paths_files_and_directories_and_errors_name_the_file(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("first\n")
    src = tree(tmp_path / "src")
    text = corpus.read([one, src], globs=["*.txt"])
    assert [s.path for s in text.sources] == [str(one), str(src / "pkg" / "notes.txt")]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\xff\xfe")
    with pytest.raises(Exception, match="bad.txt is not valid utf-8: undecodable byte at offset 2"):
        corpus.read([one, bad])  # a file named explicitly must decode
    with pytest.raises(Exception, match="holds no text matching"):
        corpus.read([src], globs=["*.rs"])


def test_a_byte_order_mark_is_dropped_and_line_ends_reported_or_normalised(tmp_path):
    path = tmp_path / "windows.txt"
    path.write_bytes(b"\xef\xbb\xbf" + b"line one\r\nline two\r\n" * 20)
    kept = corpus.read([path])
    assert "\ufeff" not in kept.vocab.chars and "\r" in kept.vocab.chars
    notes = " ".join(kept.notes())
    assert "dropped the byte-order mark at the start of 1 file(s)" in notes
    assert "\\r\\n line ends" in notes and "--set newline=lf" in notes
    lf = corpus.read([path], newline="lf")
    assert "\r" not in lf.vocab.chars
    assert lf.vocab.decode(lf.ids) == "line one\nline two\n" * 20


def test_train_on_a_source_tree_records_its_files_and_resume_checks_them(runner, tmp_path):
    src = tree(tmp_path / "src")
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(src), "--glob", "*.py", "--out", str(out)] + TINY)
    assert result.exit_code == 0, result.output
    assert "2 files under" in result.stderr and "skipped 1 hidden file(s)" in result.stderr
    recorded = checkpoint.load(out / "last.npz").meta.corpus
    assert recorded["globs"] == ["*.py"] and len(recorded["files"]) == 2
    assert "sha256" in (out / "config.yaml").read_text()
    resumed = runner.invoke(cli, ["train", "--resume", str(out), "--max-steps", "25", "-q"])
    assert resumed.exit_code == 0, resumed.output  # the corpus re-read from the record
    (src / "pkg" / "a.py").write_text("def a():\n    return 3\n" * 30)
    changed = runner.invoke(cli, ["train", "--resume", str(out), "--max-steps", "30"])
    assert_one_line_error(changed, "a.py changed since the run started")
    # config.yaml, corpus record and all, is a valid --config
    again = runner.invoke(cli, ["train", str(src), "--glob", "*.py", "--out",
                                str(tmp_path / "again"), "--config", str(out / "config.yaml"),
                                "-q"])
    assert again.exit_code == 0, again.output


# --- fine-tuning -----------------------------------------------------------------------

@pytest.fixture
def shakespeare_run(runner, tmp_path, corpus):
    out = tmp_path / "base"
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(out), "-q", "--set",
                                 "cell=lstm", "--set", "layers=2", "--max-steps", "30"] + TINY)
    assert result.exit_code == 0, result.output
    return out


def new_text(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("THE QUICK BROWN FOX: 42! " * 80)  # capitals, digits, ':' and '!' are new
    return path


def test_fine_tuning_keeps_old_characters_rows_and_adds_new_ones(shakespeare_run):
    old = checkpoint.load(shakespeare_run / "best.npz")
    new_chars = "".join(sorted(set(old.vocab.chars) | set("XYZ!")))
    spec = params_lib.Spec("lstm", len(new_chars), old.spec.hidden, old.spec.layers)
    fresh = params_lib.init_params(spec, np.random.default_rng(0))
    carried = params_lib.carry_over({k: v.copy() for k, v in fresh.items()}, old.params,
                                    old.vocab.chars, new_chars)
    for ch in old.vocab.chars:  # old characters: their column of W_ih, their output row
        i, j = old.vocab.chars.index(ch), new_chars.index(ch)
        np.testing.assert_array_equal(carried["rnn.weight_ih_l0"][:, j],
                                      old.params["rnn.weight_ih_l0"][:, i])
        np.testing.assert_array_equal(carried["out.weight"][j], old.params["out.weight"][i])
        assert carried["out.bias"][j] == old.params["out.bias"][i]
    for ch in "XYZ!":  # new characters: freshly initialised
        j = new_chars.index(ch)
        np.testing.assert_array_equal(carried["out.weight"][j], fresh["out.weight"][j])
    np.testing.assert_array_equal(carried["rnn.weight_hh_l1"], old.params["rnn.weight_hh_l1"])


def test_fine_tuning_trains_a_new_run_that_samples_new_characters_and_resumes_exactly(
        runner, shakespeare_run, tmp_path):
    text = new_text(tmp_path)
    a, b = tmp_path / "tuned", tmp_path / "split"
    args = ["train", str(text), "--init-from", str(shakespeare_run), "--set", "lr=0.02",
            "--set", "eval_every=20", "--set", "batch_size=4", "--set", "seq_len=8",
            "--set", "schedule=constant", "-q", "--max-steps"]
    assert runner.invoke(cli, args + ["60", "--out", str(a)]).exit_code == 0
    tuned = checkpoint.load(a / "last.npz")
    assert tuned.meta.init_from["path"] == str(shakespeare_run / "best.npz")
    assert set("THE:42!") <= set(tuned.vocab.chars) and set("abc") <= set(tuned.vocab.chars)
    sampled = runner.invoke(cli, ["sample", "--ckpt", str(a / "last.npz"), "-n", "300",
                                  "--seed", "1", "--prime", "THE"])
    assert set("QUICK") & set(sampled.stdout[3:])  # it writes the new characters
    # a fine-tuned run resumes bit-identically
    assert runner.invoke(cli, args + ["25", "--out", str(b)]).exit_code == 0
    assert runner.invoke(cli, ["train", "--resume", str(b), "--max-steps", "60", "-q"]
                         ).exit_code == 0
    split = checkpoint.load(b / "last.npz")
    for name in tuned.params:
        assert np.array_equal(tuned.params[name], split.params[name]), name


def test_fine_tuning_keeps_the_model_shape(runner, shakespeare_run, tmp_path):
    result = runner.invoke(cli, ["train", str(new_text(tmp_path)), "--init-from",
                                 str(shakespeare_run / "best.npz"), "--set", "hidden=32"])
    assert_one_line_error(result, "fine-tuning keeps the model of", "hidden is 16 there")
    both = runner.invoke(cli, ["train", "--init-from", str(shakespeare_run), "--resume",
                               str(shakespeare_run)])
    assert_one_line_error(both, "give one of them")


# --- info, config, run directories as --ckpt, the end of train ---------------------------

def test_info_describes_a_checkpoint(runner, trained):
    text = runner.invoke(cli, ["info", str(trained)])
    assert text.exit_code == 0, text.output
    assert f"using {trained / 'best.npz'}" in text.stderr
    for fragment in ("model: RNN 1 x 16", "vocabulary_size: 29", "\\n",
                     "step: 20", "nats_per_char", "config:", "hidden: 16", "corpus:"):
        assert fragment in text.stdout, fragment
    facts = json.loads(runner.invoke(cli, ["info", str(trained / "last.npz"), "--json"]).stdout)
    assert facts["parameters"] == 29 * 16 + 16 * 16 + 2 * 16 + 29 * 16 + 29  # V = 29
    assert facts["vocabulary"].startswith("\\n ") and facts["size_bytes"] > 0
    assert facts["corpus"]["files"][0]["path"].endswith("corpus.txt")


def test_config_prints_every_key_its_meaning_and_the_resolved_value(runner, tmp_path):
    from rnnlm.config import Config
    result = runner.invoke(cli, ["config", "--config", str(CONFIGS / "shakespeare.yaml"),
                                 "--set", "hidden=512"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(Config.__dataclass_fields__)
    hidden = next(line for line in lines if line.startswith("hidden "))
    assert "512" in hidden and "units per layer" in hidden and "(default 256)" in hidden
    assert "rnnlm config" in runner.invoke(cli, ["train", "--help"]).output


def test_a_run_directory_as_ckpt_means_its_best_and_train_says_what_to_run_next(
        runner, corpus, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(out)] + TINY)
    assert f"sample from it: rnnlm sample --ckpt {out / 'best.npz'}" in result.stderr
    sampled = runner.invoke(cli, ["sample", "--ckpt", str(out), "-n", "10", "--seed", "1"])
    direct = runner.invoke(cli, ["sample", "--ckpt", str(out / "best.npz"), "-n", "10",
                                 "--seed", "1"])
    assert sampled.exit_code == 0 and sampled.stdout == direct.stdout
    assert f"using {out / 'best.npz'}" in sampled.stderr
    evaluated = runner.invoke(cli, ["eval", "--ckpt", str(out), str(corpus)])
    assert evaluated.exit_code == 0 and "nats/char" in evaluated.stdout


# --- sampling options ----------------------------------------------------------------

def test_prime_file_and_several_samples_each_reproducible(runner, trained, tmp_path):
    ckpt = str(trained / "best.npz")
    prime = tmp_path / "prime.txt"
    prime.write_text("the lazy ")
    three = runner.invoke(cli, ["sample", "--ckpt", ckpt, "--prime-file", str(prime), "-n", "30",
                                "--num-samples", "3", "--seed", "5"])
    assert three.exit_code == 0, three.output
    samples = three.stdout.split("-" * 40 + "\n")
    assert len(samples) == 3 and all(s.startswith("the lazy ") for s in samples)
    assert all(len(s) == len("the lazy ") + 30 + 1 for s in samples)
    one = runner.invoke(cli, ["sample", "--ckpt", ckpt, "--prime", "the lazy ", "-n", "30",
                              "--seed", "5"])
    assert one.stdout == samples[0]  # the first is what --seed 5 alone gives
    again = runner.invoke(cli, ["sample", "--ckpt", ckpt, "--prime-file", str(prime), "-n",
                                "30", "--num-samples", "3", "--seed", "5"])
    assert again.stdout == three.stdout and len(set(samples)) == 3
    both = runner.invoke(cli, ["sample", "--ckpt", ckpt, "--prime", "a", "--prime-file",
                               str(prime)])
    assert_one_line_error(both, "not both")


def test_top_p_draws_only_from_the_nucleus():
    from rnnlm.sample import pick
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.1]))
    draws = [pick(logits, rng, top_p=0.7) for _ in range(3000)]
    assert set(draws) == {0, 1}  # 0.5 + 0.25 reach 0.7; 0.15 and 0.1 are out
    assert abs(draws.count(0) / 3000 - 2 / 3) < 0.03  # renormalised over the nucleus
    assert {pick(logits, rng, top_p=0.4) for _ in range(200)} == {0}
    with_k = {pick(logits, rng, top_k=3, top_p=0.99) for _ in range(2000)}
    assert with_k == {0, 1, 2}  # top-k first, then the nucleus of what is left


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_top_p_is_validated(runner, trained, value):
    result = runner.invoke(cli, ["sample", "--ckpt", str(trained / "best.npz"), "--top-p", value])
    assert_one_line_error(result, "top-p must be in (0, 1], got")


def test_corpus_from_standard_input_via_the_console(tmp_path, corpus):
    done = subprocess.run([sys.executable, "-m", "rnnlm", "train", "-", "--out",
                           str(tmp_path / "r"), *TINY, "-q"], input=corpus.read_bytes(),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    recorded = checkpoint.load(tmp_path / "r" / "last.npz").meta.corpus
    assert recorded["paths"] == ["-"] and recorded["files"][0]["path"] == "-"
    again = subprocess.run([sys.executable, "-m", "rnnlm", "train", "--resume",
                            str(tmp_path / "r"), "--max-steps", "30"], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 1 and "cannot be read again; give the corpus" in again.stderr


def test_a_utf8_text_read_as_latin1_is_said_to_be_utf8(runner, tmp_path):
    """Latin-1 decodes every byte, so a UTF-8 text read as latin-1 is no error: each
    accented letter becomes two characters (mojibake). The log says so; a real Latin-1
    text, or the UTF-8 one read as UTF-8, hears nothing of it."""
    text = tmp_path / "fr.txt"
    text.write_text("Le café est très bon, à la française.\n" * 60, encoding="utf-8")
    tiny = ["--config", str(CONFIGS / "tiny.yaml"), "--max-steps", "3"]
    misread = runner.invoke(cli, ["train", str(text), "--encoding", "latin-1",
                                  "--out", str(tmp_path / "a")] + tiny)
    assert misread.exit_code == 0, misread.output
    assert '"Ã©" would be "é"' in misread.stderr and "leave out --encoding" in misread.stderr
    latin = tmp_path / "latin.txt"
    latin.write_bytes(text.read_text(encoding="utf-8").encode("latin-1"))
    for path, encoding, out in [(latin, "latin-1", "b"), (text, "utf-8", "c")]:
        read = runner.invoke(cli, ["train", str(path), "--encoding", encoding,
                                   "--out", str(tmp_path / out)] + tiny)
        assert read.exit_code == 0 and "reads as UTF-8" not in read.stderr
