"""How many threads the matrix products run on, chosen by the run from its own updates.

A BLAS thread pool synchronises inside each of the hundreds of small products of an
update, so one thread that the OS deschedules (another program wants the core) stalls them
all: beside one busy core, two threads ran at half the speed of one (README, "More
cores"). Which is fastest depends on what else the machine is doing, and that changes
during a run. So the run measures: it tries each thread count on a few real updates,
keeps the fastest, and tries again when its speed falls well below what that count gave,
when the CPU time other programs take changes (Neighbours), and at intervals (SOON to
LATEST seconds).

Threads decide only the speed: OpenBLAS splits a product's output between its threads,
never a sum, so every number the run computes is the same with any count
(tests/test_threads.py holds a float64 trajectory to that, bit for bit).
"""
import os
import statistics
import time
from dataclasses import dataclass

# The variables through which a BLAS takes its thread count as it loads: --threads sets
# them (rnnlm/__main__.py), so do the workers' launcher and a user who pins the count.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
PROBE_UPDATES = 3  # updates timed at each count while probing: their median decides
SLOWER = 0.7  # a speed below this share of the best at the current count: probe again
# A count whose first timed update takes this many times the fastest count's so far is
# not timed further: a probe beside a busy core costs two slow updates, not four.
HOPELESS = 1.5
# Seconds of training until the next probe, where the speed says nothing: SOON after a
# probe that changed the count (the load is changing), twice as long after each one that
# kept it, up to LATEST: for what Neighbours cannot see (no /proc/stat; memory bandwidth
# that a program on another core takes).
SOON, LATEST = 5.0, 60.0
# Where the cores that other programs keep busy change by this many (a program starts or
# ends; read every SAMPLE seconds of training), the run probes at once: one thread beside
# a busy core runs as fast as on a quiet machine, so its speed cannot say that the other
# program has ended. Beside a load busy 10 s of every 30, the run went back to two threads
# within a second of each load's end (metrics.csv, docs/results.md "More cores"), where
# the probes at intervals alone would wait 5 to 60 s.
NEIGHBOURS_CHANGED, SAMPLE = 0.5, 1.0


@dataclass
class Change:
    """A new thread count and the two speeds (updates per second) that decided it."""
    threads: int
    was: int
    speed: float  # at the new count, as probed
    speed_was: float  # at the old one, as probed

    def describe(self, chars_per_update):
        """The change in one line, with the speeds that decided it."""
        now, before = self.speed * chars_per_update, self.speed_was * chars_per_update
        return (f"threads: {self.was} -> {self.threads} (measured {now:,.0f} chars/s on "
                f"{self.threads}, {before:,.0f} on {self.was})")


def tuner():
    """A Tuner of this process's BLAS threads; Pinned where the count is pinned (a thread
    variable is set: --threads, the workers' launcher, the user; or a limit set in this
    process leaves one thread), where one core is all there is, or where the count cannot
    change in a running process (threadpoolctl, of the extra rnnlm[fast], missing)."""
    # imported here: rnnlm/__main__.py reads this module before NumPy may load
    from rnnlm.engines import cores
    if any(name in os.environ for name in THREAD_VARIABLES) or cores() < 2:
        return Pinned(current())
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return Pinned(current())
    blas = ThreadpoolController().select(user_api="blas")
    if not blas.lib_controllers:
        return Pinned(None)
    most = min(cores(), max(c.num_threads for c in blas.lib_controllers))
    # a controller made once switches in 7 us; threadpool_limits() took 0.2 ms (measured)
    if most < 2:
        return Pinned(most)
    return Tuner(range(1, most + 1), lambda n: blas.limit(limits=n),
                 neighbours=Neighbours().busy if Neighbours.available() else None)


class Neighbours:
    """The cores' worth of CPU time that other programs took on this process's cores,
    between calls: those cores' busy time (Linux: /proc/stat, a line per core) less this
    process's own CPU time (os.times), over the wall time."""

    STAT = "/proc/stat"

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK")
        self.mine = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        self.last = self._read()

    @classmethod
    def available(cls):
        return os.path.exists(cls.STAT) and hasattr(os, "sched_getaffinity")

    def _read(self):
        """(wall time, seconds of busy CPU time on this process's cores, its own), now."""
        busy = 0
        with open(self.STAT) as f:
            for line in f:
                name, *ticks = line.split()
                if name in self.mine:  # user nice system idle iowait irq softirq steal
                    busy += sum(int(t) for t in ticks[:8]) - int(ticks[3]) - int(ticks[4])
        own = os.times()
        return time.monotonic(), busy / self.hz, own.user + own.system

    def busy(self):
        now = self._read()
        (wall, busy, own), self.last = [b - a for a, b in zip(self.last, now)], now
        return max(busy - own, 0.0) / wall if wall > 0 else None


class Pinned:
    """Threads the run does not choose: `threads` (None where unknown), never changed."""

    def __init__(self, threads):
        self.threads = self.in_use = threads

    def observe(self, seconds):
        return None


def current():
    """The threads the BLAS runs its products on now, or None where that cannot be known:
    as threadpoolctl reads them, else as a thread variable set them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return next((int(os.environ[name]) for name in THREAD_VARIABLES
                     if os.environ.get(name, "").isdigit()), None)
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts) if counts else None


class Tuner:
    """Chooses among thread `counts` (1 up to the cores) from the times of updates.

    observe(seconds) after each update; it calls set_threads(n) where it wants the next
    updates run on n threads, and returns a Change where the chosen count changed. A probe
    times PROBE_UPDATES updates at each count (one, where that is HOPELESS); the first
    update after a switch is not timed (the pool wakes up). soon, latest: the seconds
    between probes, where the speed says nothing. neighbours(): the cores other programs
    kept busy since the last call (Neighbours.busy), or None where that is not known."""

    def __init__(self, counts, set_threads, soon=SOON, latest=LATEST, neighbours=None):
        self.counts, self._set = sorted(counts), set_threads
        self.soon, self.latest, self.recheck = soon, latest, soon
        self.neighbours = neighbours or (lambda: None)
        self.since_sample, self.busy_beside = 0.0, None  # as the chosen count began
        self.threads = self.in_use = self.counts[-1]  # the chosen count; the one running
        self.recent, self.since_probe = [], 0.0
        self.queue, self.times = [], []
        self.measured = {}  # count -> the median update time the last probe measured
        self._probe()

    def set_threads(self, n):
        if n != self.in_use:
            self._set(n)
            self.in_use = n

    def _probe(self):
        self.queue = list(self.counts)
        self.measured, self.times, self.skip = {}, [], True
        self.set_threads(self.queue[0])

    def observe(self, seconds):
        """An update took `seconds`; returns a Change where the count changed."""
        if self.queue:
            return self._probing(seconds)
        self.since_probe += seconds
        self.recent = (self.recent + [seconds])[-PROBE_UPDATES:]
        slow = (len(self.recent) == PROBE_UPDATES and
                SLOWER * statistics.median(self.recent) > self.measured[self.threads])
        if slow or self.since_probe >= self.recheck or self._neighbours_changed(seconds):
            self._probe()
        return None

    def _neighbours_changed(self, seconds):
        """Whether other programs now keep NEIGHBOURS_CHANGED cores more or fewer busy than
        when the chosen count began (read every SAMPLE seconds)."""
        self.since_sample += seconds
        if self.since_sample < SAMPLE:
            return False
        self.since_sample, busy = 0.0, self.neighbours()
        if busy is None or self.busy_beside is None:
            self.busy_beside = busy
            return False
        return abs(busy - self.busy_beside) >= NEIGHBOURS_CHANGED

    def _probing(self, seconds):
        if self.skip:
            self.skip = False
            return None
        self.times.append(seconds)
        hopeless = self.measured and seconds > HOPELESS * min(self.measured.values())
        if len(self.times) < PROBE_UPDATES and not hopeless:
            return None
        self.measured[self.queue.pop(0)] = statistics.median(self.times)
        self.times, self.skip = [], True
        if self.queue:
            self.set_threads(self.queue[0])
            return None
        return self._choose()

    def _choose(self):
        was = self.threads
        self.threads = min(self.measured, key=self.measured.get)
        self.recent, self.since_probe = [], 0.0
        self.since_sample, self.busy_beside = 0.0, None
        self.neighbours()  # the next reading covers the chosen count's time alone
        self.set_threads(self.threads)
        if self.threads == was:
            self.recheck = min(2 * self.recheck, self.latest)
            return None
        self.recheck = self.soon
        return Change(self.threads, was, 1 / self.measured[self.threads], 1 / self.measured[was])
