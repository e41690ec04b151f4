"""Every file a command writes beside a run (exports, pictures, pages) goes through one
writer (rnnlm/io/outputs.py): on a read-only disk, through a link, into a pipe, to "-" or
to an empty name, each command says one line and writes nothing it should not."""
import contextlib
import os
import shutil
import subprocess

import pytest

import rnnlm
from rnnlm.cli import cli

from conftest import CONFIGS
from helpers import assert_one_line_error, installed


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A briefly trained run and its text."""
    root = tmp_path_factory.mktemp("writer")
    text = root / "text.txt"
    text.write_text("It was the best of times, it was the worst of times;\n" * 30)
    rnnlm.train(text, root / "run", config_file=CONFIGS / "tiny.yaml", max_steps=30)
    return root / "run", text


@contextlib.contextmanager
def read_only_copy(tmp_path, *paths):
    """A read-only file system (a tmpfs mounted read-only: EROFS, as a mounted image or a
    locked-down container gives) holding copies of paths; skips where mounting is not
    allowed."""
    mount = tmp_path / "readonly"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a file system needs root here")
    try:
        for path in paths:
            (shutil.copytree if path.is_dir() else shutil.copy)(path, mount / path.name)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_on_a_read_only_file_system_every_writer_says_one_line(runner, run, tmp_path,
                                                                monkeypatch):
    run_dir, text = run
    with read_only_copy(tmp_path, run_dir, text) as ro:
        monkeypatch.chdir(ro)
        commands = [["export", "run", "--format", fmt] for fmt in ("html", "safetensors")]
        commands += [["plot", "run"], ["inspect", "text.txt", "--ckpt", "run/best.npz"],
                     ["gradflow", "text.txt", "--ckpt", "run/best.npz", "--distance", "20",
                      "--positions", "4", "-o", "flow.png"]]
        if installed("onnx"):
            commands.append(["export", "run/best.npz", "--format", "onnx"])
        for args in commands:
            result = runner.invoke(cli, args)
            assert result.exit_code != 0, args
            assert "Traceback" not in result.output, (args, result.output)
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith("Error: ") and "read-only" in last, (args, result.stderr)
        assert sorted(p.name for p in ro.iterdir()) == ["run", "text.txt"]


def test_a_writer_that_meets_a_read_only_disk_while_writing_says_one_line(tmp_path):
    from rnnlm.errors import RnnlmError
    from rnnlm.io import outputs
    with read_only_copy(tmp_path) as ro:
        # the temporary file cannot be made, nor (EROFS, not ENOENT) removed: one error
        with pytest.raises(RnnlmError, match="Read-only file system"):
            outputs.write_atomically(ro / "x.png", b"picture")


def test_an_output_named_by_a_link_is_written_where_the_link_points(runner, run, tmp_path):
    run_dir, _ = run
    target = tmp_path / "exports" / "model.html"
    target.parent.mkdir()
    link = tmp_path / "latest.html"
    link.symlink_to(target)
    result = runner.invoke(cli, ["export", str(run_dir / "best.npz"), "--format", "html", "-o",
                                 str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.exists()
    assert f"wrote {target}" in result.stderr
    again = runner.invoke(cli, ["export", str(run_dir / "best.npz"), "--format", "html", "-o",
                                str(link)])
    assert again.exit_code == 0 and link.is_symlink() and "replaced" in again.stderr


def test_outputs_that_no_file_can_be_are_refused_in_one_line(runner, run, tmp_path):
    run_dir, text = run
    ckpt = str(run_dir / "best.npz")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    (tmp_path / "dangling.html").symlink_to(tmp_path / "gone" / "x.html")
    refusals = {"": "empty path", "-": "not to standard output",
                str(pipe): "not a regular file",
                str(text / "x.html"): "is not a directory",
                str(tmp_path / "dangling.html"): "gone is not a directory"}
    for out, fragment in refusals.items():
        for args in (["export", ckpt, "--format", "html", "-o", out],
                     ["inspect", str(text), "--ckpt", ckpt, "-o", out]):
            assert_one_line_error(runner.invoke(cli, args), fragment)
    assert_one_line_error(runner.invoke(cli, ["plot", str(run_dir), "-o", "-"]), "standard output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.html", "pipe"]
