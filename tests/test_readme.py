"""The README's promises, checked: its commands, its PyTorch snippet, its Python example,
its figures' sources; and the config table of docs/configuration.md."""
import dataclasses
import re

import numpy as np
import pytest

from rnnlm.cli import cli
from rnnlm.config import Config

from conftest import CONFIGS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(lang=""):
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_two_commands_and_ci_runs_the_test_command():
    commands = [b.strip() for b in code_blocks() if b.strip().startswith("python3 -m venv")]
    assert len(commands) == 2
    assert commands[0].endswith('pip install -e ".[fast]" && rnnlm train')
    test_command = commands[1].split(" && ")[-1]
    assert test_command == "python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test,fast,plot,onnx,mpi,mkl]"' in ci
    assert 'pip install -e ".[test,fast,plot,onnx,mpi,mkl]"' in commands[1]
    assert re.search(rf"^{re.escape(test_command)}$", ci, re.M)


def test_the_first_command_ends_when_the_readme_says():
    """`rnnlm train` with no arguments is bounded by a time budget, the one the README
    states, and not by a number of updates whose duration depends on the machine."""
    minutes = re.search(r"Training ends after (\d+) minutes, the default time budget", README)
    assert minutes and Config().max_seconds == 60 * int(minutes.group(1))
    assert Config().max_steps == 0 and Config().schedule in ("cosine", "linear")


def test_every_config_key_is_documented_with_its_default_and_meaning():
    table = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = {k: (d, m) for k, d, m in re.findall(r"^\| `(\w+)` \| `([^`]*)` \| (.*) \|$",
                                               table, re.M)}
    from rnnlm.config import described
    for key, default, meaning in described():  # the comments in config.py, once
        assert key in rows, key
        assert rows[key] == (str(default), meaning.replace("|", "\\|")), key


def test_the_pytorch_snippet_loads_a_checkpoint(trained, monkeypatch):
    torch = pytest.importorskip("torch")
    snippet = next(b for b in code_blocks("python") if "load_state_dict" in b)
    monkeypatch.chdir(trained.parent)
    scope = {}
    exec(snippet.replace("runs/shk/best.npz", str(trained / "best.npz")), scope)
    z = np.load(trained / "best.npz", allow_pickle=False)
    np.testing.assert_array_equal(scope["model"]["out"].weight.detach().numpy(), z["out.weight"])


def test_the_python_api_example_runs(corpus, tmp_path, monkeypatch, capsys):
    snippet = next(b for b in code_blocks("python") if "rnnlm.load" in b)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("Dear friend. A line to score. " * 40)
    quick = snippet.replace('time="1m", hidden=128', f"config_file={str(CONFIGS / 'tiny.yaml')!r}")
    assert quick != snippet
    exec(quick, {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and len(printed[0]) == 200  # the sample, the prime not included
    assert printed[1].endswith("nats/char")
    assert (tmp_path / "runs" / "notes" / "best.npz").exists()


def test_the_chinese_sample_corpus_trains_and_samples(runner, tmp_path):
    out = tmp_path / "poems"
    result = runner.invoke(cli, ["train", str(ROOT / "data" / "tang-poems.txt"), "--config",
                                 str(CONFIGS / "tiny.yaml"), "--out", str(out), "-q",
                                 "--set", "max_steps=60"])
    assert result.exit_code == 0, result.output
    sampled = runner.invoke(cli, ["sample", "--ckpt", str(out / "last.npz"), "--prime", "床前",
                                  "-n", "20", "--seed", "1"])
    assert sampled.exit_code == 0
    assert sampled.stdout.endswith("\n")
    text = sampled.stdout[:-1]  # the generated text may itself end in newlines
    assert text.startswith("床前") and len(text) == 22
    assert all("\u3000" <= ch <= "\u9fff" or ch in "\n，。　" or ch.isalpha() for ch in text)


def test_every_test_the_bad_inputs_table_names_exists():
    table = (ROOT / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", table)
    assert len(named) > 40
    for module, test in named:
        source = (ROOT / "tests" / module).read_text(encoding="utf-8")
        assert re.search(rf"^def {test}\(", source, re.M), f"{module}::{test}"


def test_the_readme_is_a_front_door_and_every_figure_links_to_where_it_is_measured():
    assert README.count("\n") <= 400
    results = README.split("## Results, in short", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in results.splitlines() if r.startswith("| ") and not r.startswith("| what")]
    assert len(rows) >= 4
    for row in rows:
        links = re.findall(r"\]\((docs/[\w.-]+\.md)(#[\w-]+)?\)", row)
        assert links, row
        for doc, _ in links:
            assert (ROOT / doc).exists(), doc


def test_every_document_the_readme_links_to_exists():
    for target in re.findall(r"\]\(((?:docs|rnnlm)/[^)#]+)", README):
        assert (ROOT / target).exists(), target
