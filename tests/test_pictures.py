"""Pictures: learning curves (rnnlm plot, curves.png) and the inspection page (rnnlm
inspect), the page checked in a real browser, headless Chromium driven by Playwright."""
import json
import re
import sys

import numpy as np
import pytest

from rnnlm.io import checkpoint
from rnnlm import inspection, plots
from rnnlm.cli import cli

from conftest import CONFIGS, chromium_page
from helpers import assert_one_line_error

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--config", str(CONFIGS / "tiny.yaml")]


@pytest.fixture
def runs(runner, corpus, tmp_path):
    """Three short runs, one of each cell."""
    out = {}
    for cell in ("rnn", "lstm", "gru"):
        out[cell] = tmp_path / cell
        result = runner.invoke(cli, ["train", str(corpus), "--out", str(out[cell]), "-q",
                                     "--set", f"cell={cell}", "--max-steps", "30"] + TINY)
        assert result.exit_code == 0, result.output
    return out


def test_plot_draws_one_or_several_runs_and_says_where(runner, runs, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    one = runner.invoke(cli, ["plot", str(runs["rnn"])])
    assert one.exit_code == 0, one.output
    assert one.stderr.strip() == f"wrote {runs['rnn'] / 'curves.png'}"
    assert (runs["rnn"] / "curves.png").read_bytes().startswith(PNG)
    monkeypatch.chdir(tmp_path)
    several = runner.invoke(cli, ["plot", str(runs["rnn"]), str(runs["gru"]), "--log-x"])
    assert several.exit_code == 0, several.output
    assert (tmp_path / "curves-rnn-vs-gru.png").read_bytes().startswith(PNG)
    named = runner.invoke(cli, ["plot", *map(str, runs.values()), "-o", "all.png"])
    assert named.exit_code == 0 and (tmp_path / "all.png").stat().st_size > 5000


def test_plot_reads_the_metrics_it_draws(runs):
    m = plots.read_metrics(runs["lstm"])
    assert m["step"] == [5, 10, 15, 20, 25, 30]
    assert [v is not None for v in m["val"]] == [False, True, False, True, False, True]
    assert m["seconds"] == sorted(m["seconds"])
    assert plots.smooth([1.0, 0.0, 0.0], 0.5) == [1.0, 0.5, 0.25]


def test_training_draws_curves_where_matplotlib_is_installed(runs):
    assert (runs["gru"] / "curves.png").exists() == plots.available()


def test_without_matplotlib_plot_names_the_extra_and_training_goes_on(runner, corpus, runs,
                                                                      tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert_one_line_error(runner.invoke(cli, ["plot", str(runs["rnn"])]),
                          "pip install 'rnnlm[plot]'")
    out = tmp_path / "bare"
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(out)] + TINY)
    assert result.exit_code == 0 and "curves" not in result.stderr
    assert not (out / "curves.png").exists()


@pytest.mark.parametrize("name", [b"\xff\xfe", "莎士比亚".encode()], ids=["not-utf8", "cjk"])
def test_a_run_of_any_name_draws_its_curves_and_says_nothing_of_fonts(corpus, tmp_path, name):
    """A corpus or run named in bytes that are not UTF-8 (its name is the run's label)
    once killed the run at its first evaluation; a name in Chinese made Matplotlib warn of
    missing glyphs at every evaluation."""
    import os
    import subprocess
    from helpers import rnnlm_cmd
    pytest.importorskip("matplotlib")
    text = tmp_path / os.fsdecode(name + b".txt")
    text.write_bytes(corpus.read_bytes())
    out = tmp_path / os.fsdecode(name)
    args = ["train", str(text), "--out", str(out), "--max-steps", "30"] + TINY
    result = subprocess.run(rnnlm_cmd(*args), capture_output=True, cwd=tmp_path)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, err
    assert checkpoint.load(out / "last.npz").meta.step == 30
    assert (out / "curves.png").read_bytes().startswith(PNG)
    assert "Glyph" not in err and "Warning" not in err and "curves" not in err, err
    again = subprocess.run(rnnlm_cmd("plot", str(out), "-o", str(tmp_path / "again.png")),
                           capture_output=True)
    assert again.returncode == 0 and (tmp_path / "again.png").exists(), again.stderr
    assert b"Warning" not in again.stderr


def test_plot_of_something_that_is_not_a_run_is_one_line(runner, tmp_path):
    assert_one_line_error(runner.invoke(cli, ["plot", str(tmp_path)]), "has no metrics.csv")


# --- the inspection page --------------------------------------------------------------

def test_the_unit_score_finds_a_unit_that_tracks_a_feature():
    text = 'he said "yes (and no)" then left\n' * 20
    feats = inspection.features(text)
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(len(text), 6))
    acts[:, 4] = feats["inside brackets"] * 0.9 + rng.normal(0, 0.05, len(text))
    acts[:, 2] = feats["position in line"] / 40
    best = inspection.best_units(acts, feats, 2)
    assert {(u, f) for u, _, f in best} == {(4, "inside brackets"), (2, "position in line")}
    assert all(score > 0.95 for _, score, _ in best)
    assert feats["inside quotes"][text.index("yes")] == 1
    assert feats["inside quotes"][text.index("then")] == 0


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_inspect_writes_a_self_contained_page(runner, runs, corpus, tmp_path, cell):
    page = tmp_path / f"{cell}.html"
    result = runner.invoke(cli, ["inspect", "--ckpt", str(runs[cell]), str(corpus), "-o",
                                 str(page), "--chars", "300", "--units", "3"])
    assert result.exit_code == 0, result.output
    assert f"wrote {page}: 300 characters shown" in result.stderr
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)  # nothing fetched
    found = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>',
                                 html, re.S).group(1))
    assert found["text"] == corpus.read_text()[:300]
    assert len(found["predictions"]) == 300 and found["predictions"][0] is None
    assert all(len(p["top"]) == 5 for p in found["predictions"][1:])
    kinds = 2 if cell == "lstm" else 1  # the LSTM's cell state too
    assert [g["name"] for g in found["groups"]][:kinds] == (
        ["layer 1 output", "layer 1 cell state"] if cell == "lstm" else ["layer 1 output"])
    assert all(len(g["units"]) == 3 and len(g["units"][0]["acts"]) == 300
               for g in found["groups"])
    for group in found["groups"]:  # outputs as they are; each cell-state unit by its largest
        peaks = [max(abs(a) for a in unit["acts"]) for unit in group["units"]]
        assert all(p == 1.0 for p in peaks) if "cell state" in group["name"] else max(peaks) < 1
    evaluated = checkpoint.load(runs[cell] / "best.npz")
    from rnnlm.evaluate import evaluate
    from conftest import read_corpus
    _, ids = read_corpus(corpus)
    assert found["summary"]["nats_per_char"] == pytest.approx(
        evaluate(evaluated.params, evaluated.spec, ids), rel=1e-5)  # over the whole text


def test_inspect_reports_unknown_characters_as_eval_does(runner, runs, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("the quick brown fox: 42\n" * 10)
    result = runner.invoke(cli, ["inspect", "--ckpt", str(runs["rnn"]), str(other), "-o",
                                 str(tmp_path / "x.html")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and "3 character(s) not in the model's vocabulary" in lines[-1]
    skipped = runner.invoke(cli, ["inspect", "--ckpt", str(runs["rnn"]), str(other), "-o",
                                  str(tmp_path / "x.html"), "--skip-unknown"])
    assert skipped.exit_code == 0 and "30 unknown characters skipped" in skipped.stderr


def test_the_page_in_a_real_browser(runner, runs, corpus, tmp_path):
    page_file = tmp_path / "page.html"
    assert runner.invoke(cli, ["inspect", "--ckpt", str(runs["lstm"]), str(corpus), "-o",
                               str(page_file), "--chars", "400", "--units", "4"]).exit_code == 0
    with chromium_page() as (page, errors, requests):
        page.goto(page_file.as_uri())
        chars = page.locator("#surprisal span")
        assert chars.count() == 400  # one element per character shown
        chars.nth(25).hover()
        tip = page.locator("#tip")
        assert tip.is_visible()
        assert tip.locator(".cand").count() == 5
        actual = corpus.read_text()[25]
        assert f"actual {actual if actual != ' ' else chr(0x2423)}" in tip.inner_text()
        chars.nth(30).focus()  # the keyboard reaches the same
        assert tip.is_visible() and tip.locator(".cand").count() == 5
        shaded = page.locator("#activations span").nth(50)
        before = shaded.evaluate("s => s.style.background")
        page.locator("#units button").nth(1).click()
        after = shaded.evaluate("s => s.style.background")
        assert before != after  # another unit, another shading
        page.select_option("#group", index=1)  # the cell state of layer 1
        assert "cell state" in page.locator("#group option:checked").inner_text()
        assert page.locator("#summary tr").count() >= 3
    assert errors == []
    assert [u for u in requests if not u.startswith("file:")] == []  # nothing from the network


def test_pictures_and_pages_never_write_over_what_rnnlm_did_not_make(runner, runs, corpus,
                                                                       tmp_path):
    pytest.importorskip("matplotlib")
    mine = tmp_path / "holiday.png"
    mine.write_bytes(PNG + b"my photo")
    assert_one_line_error(runner.invoke(cli, ["plot", str(runs["rnn"]), "-o", str(mine)]),
                          "exists and is not an rnnlm learning-curves picture")
    assert_one_line_error(runner.invoke(cli, ["plot", str(runs["rnn"]), "-o",
                                              str(tmp_path / "curves.npz")]), "name a .png file")
    assert mine.read_bytes() == PNG + b"my photo" and not (tmp_path / "curves.npz").exists()
    again = tmp_path / "again.png"
    for _ in range(2):  # its own picture, drawn again
        assert runner.invoke(cli, ["plot", str(runs["rnn"]), "-o", str(again)]).exit_code == 0
    text = corpus.read_text()
    best = runs["rnn"] / "best.npz"
    before = best.read_bytes()
    for target, fragment in [(corpus, "is this command's input"),
                             (best, "is this command's input"),
                             (mine, "exists and is not an rnnlm inspect page")]:
        result = runner.invoke(cli, ["inspect", "--ckpt", str(best), str(corpus), "-o",
                                     str(target)])
        assert_one_line_error(result, fragment)
    assert corpus.read_text() == text and best.read_bytes() == before
    page = tmp_path / "page.html"
    for _ in range(2):  # its own page, written again
        result = runner.invoke(cli, ["inspect", "--ckpt", str(best), str(corpus), "-o", str(page)])
        assert result.exit_code == 0, result.output
