"""What a time budget promised and what the machine made of it.

A run with a time budget is sized (sizing.py) from a speed measured in its first second:
that speed times the budget is the number of updates it plans. The machine may then be
busier than it was (other programs take the cores); a run that made far fewer updates
says so at its end, with the speed it saw and the threads it ran, and its checkpoints
keep the plan, so that `rnnlm info` shows planned against made.
"""
import math
from collections import Counter
from dataclasses import dataclass

SHORT = 0.7  # made below this share of the planned updates: the run says why


@dataclass
class Plan:
    updates: int  # what the budget was to buy the chosen model
    chars_per_sec: float  # the training speed that promise came from, measured at the start


def to_meta(plan):
    """The plan as a checkpoint's Meta fields."""
    return {} if plan is None else {"planned_updates": plan.updates,
                                    "planned_speed": plan.chars_per_sec}


def from_meta(meta):
    """The plan a checkpoint's Meta holds, or None."""
    return None if meta.planned_updates is None else Plan(meta.planned_updates,
                                                           meta.planned_speed)


class Made:
    """This process's updates as they go: how many, how long they took (in all, the last,
    the fastest) and on how many threads."""

    def __init__(self, chars_per_update):
        self.chars_per_update = chars_per_update
        self.updates, self.seconds, self.threads = 0, 0.0, Counter()
        self.last, self.fastest = 0.0, math.inf

    def add(self, seconds, threads=None):
        self.updates, self.seconds = self.updates + 1, self.seconds + seconds
        self.last, self.fastest = seconds, min(self.fastest, seconds)
        if threads:
            self.threads[threads] += 1

    def speed(self):
        """Characters per second of this process's updates."""
        return self.chars_per_update * self.updates / max(self.seconds, 1e-9)


def shortfall(plan, step, made):
    """Where the run (at update `step`) made below SHORT of its plan: why, in one line;
    else None. made: this process's Made."""
    if plan is None or step >= SHORT * plan.updates or made.updates == 0:
        return None
    threads = ""
    if made.threads:
        most, times = made.threads.most_common(1)[0]
        threads = (f", mostly on {most} BLAS thread{'s' if most > 1 else ''} "
                   f"({times / made.updates:.0%} of the updates)")
    return (f"made {step:,} of the {plan.updates:,} updates planned ({step / plan.updates:.0%}): "
            f"it trained at {made.speed():,.0f} chars/s{threads}, where the start measured "
            f"{plan.chars_per_sec:,.0f}: the machine was busier than when the run was sized "
            f"(metrics.csv has the speed and threads of every interval)")
