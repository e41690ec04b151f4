"""What a time budget planned against what the run made (rnnlm/run/plan.py): a run that
made far fewer updates than its sizing promised says so, and why; its checkpoints keep
the plan for `rnnlm info`."""
import json
import re
import time

from rnnlm.run import training
from rnnlm.run.plan import SHORT, Made, Plan, shortfall


def made(updates, seconds_each, threads):
    made = Made(chars_per_update=1000)
    for n in threads * (updates // len(threads)):
        made.add(seconds_each, n)
    return made


def test_a_run_well_short_of_its_plan_says_what_speed_and_threads_it_saw():
    plan = Plan(updates=3707, chars_per_sec=45000)
    line = shortfall(plan, 1101, made(1100, 0.1, [1, 1, 1, 2]))
    assert line == ("made 1,101 of the 3,707 updates planned (30%): it trained at 10,000 "
                    "chars/s, mostly on 1 BLAS thread (75% of the updates), where the start "
                    "measured 45,000: the machine was busier than when the run was sized "
                    "(metrics.csv has the speed and threads of every interval)")


def test_a_run_near_its_plan_or_without_one_says_nothing():
    plan = Plan(updates=1000, chars_per_sec=45000)
    assert shortfall(plan, int(SHORT * 1000), made(700, 0.1, [2])) is None
    assert shortfall(plan, int(SHORT * 1000) - 1, made(699, 0.1, [2])) is not None
    assert shortfall(None, 10, made(10, 0.1, [2])) is None  # a budget in updates: no plan


def test_a_run_slowed_after_its_sizing_says_so_at_its_end_and_info_shows_the_plan(
        corpus, tmp_path, runner, monkeypatch):
    """The speed is measured at the start; then every update takes 30 ms longer (a
    simulated busy machine): the run ends far short of its plan and says so; the
    checkpoint holds planned and made."""
    from rnnlm.cli import cli
    real = training._gradients

    def slowed(run, streams):
        time.sleep(0.03)
        return real(run, streams)

    monkeypatch.setattr(training, "_gradients", slowed)
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(corpus), "--out", str(out), "--time", "4s",
                                 "--set", "cell=rnn", "--set", "hidden=16", "--set", "layers=1",
                                 "--set", "batch_size=4", "--set", "seq_len=8"])
    assert result.exit_code == 0, result.output
    said = re.search(r"made ([\d,]+) of the ([\d,]+) updates planned \((\d+)%\): it trained "
                     r"at [\d,]+ chars/s, mostly on \d BLAS threads? \(\d+% of the updates\), "
                     r"where the start measured [\d,]+", result.stderr)
    assert said, result.stderr
    facts = json.loads(runner.invoke(cli, ["info", str(out / "last.npz"), "--json"]).stdout)
    assert facts["updates"]["planned"] == int(said[2].replace(",", ""))
    assert facts["updates"]["made"] == int(said[1].replace(",", "")) == facts["step"]
    assert facts["updates"]["planned_at_chars_per_sec"] > 0


def test_a_budget_in_updates_plans_nothing(trained, runner):
    from rnnlm.cli import cli
    facts = json.loads(runner.invoke(cli, ["info", str(trained / "last.npz"), "--json"]).stdout)
    assert facts["updates"] is None
