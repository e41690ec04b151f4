"""The Python API: what a notebook user calls, and what each command is built on.

    import rnnlm
    model = rnnlm.load("runs/shk")                 # a run directory means its best.npz
    print(model.sample("ROMEO:", 200, temperature=0.8, seed=7))
    model.loss("To be, or not to be")              # nats per character
    model.probabilities("ROMEO")                   # {'\\n': 0.01, ' ': 0.2, ...}
    run_dir = rnnlm.train("notes.txt", time="1m", hidden=128)   # a whole run

Nothing here prints: what a user should hear goes to `notify(message)` where a caller
gives one (the command line gives its log).
"""
import dataclasses
import time as clock
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.io import checkpoint, data, rundir
from rnnlm import config, engines, evaluate, sample as sampling
from rnnlm.run import memory
from rnnlm.io import corpus as corpus_lib
from rnnlm.run import workers
from rnnlm.run import training
from rnnlm.params import Spec


def _silent(message):
    pass


# --- A trained model -------------------------------------------------------------------

def checkpoint_path(target, notify=_silent):
    """A checkpoint's path: a run directory means its best.npz (its last.npz where it has
    no best, as a run without a validation split), and says so."""
    path = rundir.checkpoint_of(target)
    if path != Path(target):
        notify(f"using {path}" + ("" if path.name == "best.npz" else " (the run has no best.npz)"))
    return path


def load(path, engine="fast", notify=_silent):
    """The model of a checkpoint (.npz) or of a run directory (its best.npz)."""
    return Model(_load(checkpoint_path(path, notify), notify), engine)


class Model:
    """A trained model: it samples, scores text and gives next-character probabilities.
    `engine` is "fast" or "textbook" (the same numbers, one readable step at a time)."""

    def __init__(self, ckpt, engine="fast"):
        if engine not in engines.ENGINES:
            raise RnnlmError(f"engine must be one of {', '.join(engines.ENGINES)}, got {engine!r}")
        self.checkpoint, self.engine = ckpt, engine
        self.params, self.spec, self.vocab = ckpt.params, ckpt.spec, ckpt.vocab

    def __repr__(self):
        s = self.spec
        return (f"<rnnlm.Model {s.cell}, {s.layers} layer(s) of {s.hidden}, "
                f"{s.vocab_size} characters, from {self.checkpoint.path}>")

    @property
    def info(self):
        """What the checkpoint holds (rnnlm info): model, vocabulary, step, config, corpus."""
        return checkpoint.summary(self.checkpoint)

    def chars(self, prime="", n=200, temperature=1.0, top_k=0, top_p=1.0, seed=None,
              argmax=False):
        """Yield n generated characters, one at a time, after feeding prime (not yielded).
        The same seed (an int, or a list of ints) gives the same characters."""
        return sampling.generate(self.params, self.spec, self.vocab,
                                 np.random.default_rng(seed), prime, n, temperature, top_k,
                                 argmax, self.engine, top_p)

    def sample(self, prime="", n=200, temperature=1.0, top_k=0, top_p=1.0, seed=None,
               argmax=False):
        """n characters generated after prime, as one string (the prime not included)."""
        return "".join(self.chars(prime, n, temperature, top_k, top_p, seed, argmax))

    def loss(self, text, batch_size=32, skip_unknown=False):
        """Mean cross-entropy on text in nats per character (every character but the first).
        Characters outside the vocabulary are an error naming them, or skipped."""
        ids, _ = self.vocab.encode(text, skip_unknown=skip_unknown)
        return self._loss(ids, streams(len(ids), batch_size))

    def loss_of_file(self, path, encoding="utf-8", batch_size=32, skip_unknown=False):
        """(nats per character, characters read, characters skipped, streams read in) of a
        text file."""
        ids, skipped = data.encode_file(path, self.vocab, encoding, skip_unknown)
        n = streams(len(ids), batch_size)
        return self._loss(ids, n), len(ids), skipped, n

    def _loss(self, ids, batch_size):
        return evaluate.evaluate(self.params, self.spec, ids, batch_size, engine=self.engine)

    def probabilities(self, prime=""):
        """The distribution of the character that follows prime, as {character: p} in the
        vocabulary's order. An empty prime means the start of a line, where sampling starts."""
        logits = self.logits(prime).astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return dict(zip(self.vocab.chars, p.tolist()))

    def logits(self, prime=""):
        """The logits (V,) of the character that follows prime."""
        prime = prime or "\n"
        sampling.check_prime(self.vocab, prime)
        step = engines.get(self.engine).stepper(self.params, self.spec)
        for i in self.vocab.encode(prime)[0]:
            logits = step(i)
        return logits


STREAM_CONTEXT = 256  # characters a stream of a scored text has at least, where it can


def streams(characters, batch_size):
    """The streams to score a text of `characters` in: batch_size, or fewer where each
    would otherwise see fewer than STREAM_CONTEXT characters (a stream of a few characters
    scores them with almost no context, higher than the model's real loss)."""
    return max(1, min(batch_size, characters // STREAM_CONTEXT))


# --- Training --------------------------------------------------------------------------

@dataclass
class Training:
    """A run set up and about to start: where it writes, its settings, and its events
    (training.Begin first, then Step, Eval, RolledBack, Stopped: rnnlm/run/training.py)."""
    out: Path
    config: config.Config
    events: object  # a generator


def start(corpus=None, out=None, *, config_file=None, assignments=(), time=None,
          resume=None, init_from=None, globs=(), check_memory=True, stop=lambda: False,
          notify=_silent, warn=None, began=None, **settings):
    """Set up a run, new, resumed or fine-tuned, and return it (Training) ready to go.

    corpus: a path, several, or None for the built-in corpus (for --resume, the run's
    own). settings: config keys (hidden=128, cell="lstm"); a value of None is not given.
    time ("5m", or seconds) and max_steps: given alone, each lifts the other limit.
    resume: a run directory (its last.npz) or a checkpoint; init_from: a run (its best.npz)
    or checkpoint to fine-tune. stop() is polled after every update. notify(message) hears
    what the set-up found; warn(message), default notify, what a quiet run must say too."""
    began = clock.perf_counter() if began is None else began  # a budget counts from here
    settings = _limits(time, settings)
    paths = _paths(corpus)
    if out is not None:
        if not str(out).strip():  # Path("") would be the current directory
            raise RnnlmError("--out must name a directory")
        out = Path(out)
    if resume is not None and init_from is not None:
        raise RnnlmError("--resume continues a run, --init-from starts a new one from "
                         "another's weights: give one of them")
    ckpt = base = metrics_from = record = None
    if resume is not None:
        ckpt, cfg, record, out, metrics_from = _resumed(Path(resume), out, config_file,
                                                        assignments, settings, notify, warn)
        if not paths and record is not None:
            paths, globs = _rereadable(record, ckpt.path), globs or tuple(record["globs"])
    elif init_from is not None:
        base = _load(checkpoint_path(init_from, notify), notify)
        cfg = _finetuning_config(base, config_file, assignments, settings)
    else:
        cfg = config.build(file=config_file, assignments=assignments, **settings)
    text, default_out, record = _read_corpus(paths, globs, cfg, base or ckpt, record, notify,
                                             finetuning=base is not None)
    for note in text.notes():
        notify(note)
    if ckpt is None:
        chosen = out
        out = workers.decided(lambda: rundir.for_new_run(chosen, default_out))
        given = _given(config_file, assignments, settings)
        cfg, _ = _for_text(cfg, given | set(config.SIZED) if base else given, text, began,
                           check_memory, notify)  # fine-tuning keeps its model
    elif cfg.engine == "fast":
        engines.load_kernels(notify=notify)
    events = training.train(cfg, text.vocab, text.ids, out, corpus_name=text.name,
                            corpus_record=record, resume=ckpt, stop=stop,
                            metrics_from=metrics_from, check_memory=check_memory,
                            init_from=base, began=began)
    return Training(Path(out), cfg, events)


def _resumed(resume, out, config_file, assignments, settings, notify, warn):
    """(checkpoint, settings, corpus record, run directory, metrics.csv to continue or
    None) for continuing from resume: a run directory (its last.npz) or a checkpoint."""
    ckpt_path = resume / "last.npz" if resume.is_dir() else resume
    ckpt = _load(ckpt_path, notify)
    saved = config.from_dict(ckpt.meta["config"], f"checkpoint {ckpt_path}: ")
    cfg = config.build(base=saved, file=config_file, assignments=assignments, **settings)
    config.check_resumable(saved, cfg)
    out, why = workers.decided(lambda: rundir.for_resume(ckpt_path, ckpt.meta["step"], out))
    if why:
        (warn or notify)(why)
    own = ckpt_path.parent  # its metrics.csv continues in another directory, if it is a run's
    carried = rundir.is_run(own) and Path(out).resolve() != own.resolve()
    return ckpt, cfg, _recorded_corpus(ckpt), out, own / "metrics.csv" if carried else None


def choose(corpus=None, *, config_file=None, assignments=(), time=None, globs=(),
           check_memory=True, notify=_silent, **settings):
    """What a new run on corpus would train with, without training it (rnnlm config
    CORPUS): its Config, and the rule's choice in one line (None where the user set every
    setting the rule chooses). start()'s arguments."""
    began = clock.perf_counter()
    settings = _limits(time, settings)
    cfg = config.build(file=config_file, assignments=assignments, **settings)
    text, _, _ = _read_corpus(_paths(corpus), globs, cfg, None, None, notify, finetuning=False)
    return _for_text(cfg, _given(config_file, assignments, settings), text, began,
                     check_memory, notify)


def _limits(time, settings):
    """settings without the ones not given (None), time as max_seconds; a limit given in
    one unit only lifts the other."""
    settings = {k: v for k, v in settings.items() if v is not None}
    if time is not None:
        settings["max_seconds"] = config.parse_duration(str(time))
    if ("max_steps" in settings) != ("max_seconds" in settings):
        settings.setdefault("max_steps", 0)
        settings.setdefault("max_seconds", 0)
    return settings


def _for_text(cfg, given, text, began, check_memory, notify):
    """A new run's settings for its text: fewer streams where it is short, and the model
    the rule chooses (sized), each unless `given`. Returns the Config and the choice."""
    if not {"batch_size", "seq_len"} & given:
        cfg = _fitted(cfg, len(text.ids), notify)
    if cfg.engine == "fast":
        engines.load_kernels(notify=notify)
    if set(config.SIZED) <= given:
        return cfg, None
    cfg, why = sized(cfg, given, text, began, check_memory)
    notify(why)
    return cfg, why


def train(corpus=None, out=None, **options):
    """Run a whole training run (start()'s arguments) and return the run directory."""
    run = start(corpus, out, **options)
    for _ in run.events:
        pass
    return run.out


def _given(config_file, assignments, settings):
    """The settings the user set: in the config file, with --set, or as arguments."""
    named = {config.parse_assignment(a)[0] for a in assignments} | set(settings)
    if config_file is not None:
        named |= set(config.read_yaml(config_file))
    return named


def sized(cfg, given, text, began=None, check_memory=True):
    """A new run's model chosen for its text, its budget and this machine (config.sized,
    the rule), every setting in `given` kept: each candidate's speed is measured here
    (training.speed), unless the budget is in updates only. Returns the Config and the
    choice in one line."""
    began = clock.perf_counter() if began is None else began
    train_chars = len(data.split(text.ids, cfg.val_fraction)[0])
    window = cfg.batch_size * cfg.seq_len
    candidates = config.candidates(cfg, given)
    if not cfg.max_seconds:  # updates alone say nothing of the machine: cfg's width
        candidates = [c for c in candidates if c.hidden == cfg.hidden]
    has = memory.available() if check_memory else None
    if has is not None:  # none that training would refuse
        fitting = [c for c in candidates if sum(memory.estimate(
            c, Spec(c.cell, text.vocab.size, c.hidden, c.layers)).values()) <= has]
        candidates = fitting or candidates[:1]
    updates = {}
    for candidate in candidates:  # narrowest first: where one makes too few updates,
        made = cfg.max_steps or float("inf")  # wider ones (slower) would too: not measured
        if cfg.max_seconds > 0:
            seconds = cfg.max_seconds * (1 - training.EVAL_SHARE) - (clock.perf_counter() - began)
            rate = training.speed(candidate, text.ids, text.vocab.size)
            made = min(made, rate * max(seconds, 0.0) / window)
        updates[candidate.hidden] = made
        if made < config.MIN_UPDATES:
            break
    budget = f"{_duration(cfg.max_seconds)} here" if cfg.max_seconds else f"{cfg.max_steps:,} updates"
    cfg, words, passes = config.sized(cfg, given, updates, train_chars)
    made = f" ({updates[cfg.hidden]:,.0f} updates)" if cfg.max_seconds else ""
    return cfg, (f"{_size(train_chars)} to train on, about {passes:.1f} passes{made} in "
                 f"{budget}: {words} (settings you give win: rnnlm config)")


def _size(chars):
    return f"{chars / 1e6:.3g}M characters" if chars >= 1e6 else f"{chars / 1e3:.3g}K characters"


def _duration(seconds):
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _fitted(cfg, characters, notify):
    """cfg with fewer streams (and, if need be, shorter windows) where the text is too
    short for the defaults' 32 streams of 64, and says so; the text's own settings win."""
    if characters >= data.min_corpus_length(cfg.batch_size, cfg.seq_len, cfg.val_fraction):
        return cfg
    step = workers.group().size  # the streams must split over the workers
    for seq_len in (cfg.seq_len, 32, 16, 8):
        for batch in range(cfg.batch_size - cfg.batch_size % step, 0, -step):
            if characters >= data.min_corpus_length(batch, seq_len, cfg.val_fraction):
                notify(f"the text is short ({characters:,} characters) for {cfg.batch_size} "
                       f"streams of {cfg.seq_len}: training {batch} of {seq_len} (set "
                       f"batch_size and seq_len to choose)")
                return dataclasses.replace(cfg, batch_size=batch, seq_len=seq_len)
    return cfg  # too short for any: train() says how long it must be


def _paths(corpus):
    if corpus is None:
        return ()
    if isinstance(corpus, (str, Path)):
        return (Path(corpus),)
    return tuple(Path(p) for p in corpus)


def _load(path, notify):
    """checkpoint.load, saying what loading changed (a dtype converted)."""
    ckpt = checkpoint.load(path)
    for note in ckpt.notes:
        notify(note)
    return ckpt


def _read_corpus(paths, globs, cfg, model, record, notify, finetuning):
    """(the text, the default run directory, the corpus's record) for a run; the record
    given is a resumed run's, which the text must match."""
    if not paths:
        if finetuning:
            raise RnnlmError("--init-from needs the corpus to fine-tune on: rnnlm train "
                             "CORPUS --init-from ...")
        notify(f"no corpus given: training on {data.BUILTIN_NAME} (no download)")
        return corpus_lib.builtin(), Path("runs") / "stdlib", None
    known = model.vocab.chars if model else ""  # a fine-tuned or resumed vocabulary
    text = corpus_lib.read(paths, cfg.encoding, globs, cfg.newline, extra_chars=known)
    first = paths[0]
    default_out = Path("runs") / ("stdin" if str(first) == "-" else first.stem or "corpus")
    if record is not None:
        corpus_lib.check_same(record, text)
    return text, default_out, text.record(paths, globs, cfg.encoding, cfg.newline)


def _recorded_corpus(ckpt):
    """What a checkpoint says it was trained on: a record (corpus.Corpus.record), or None
    for the built-in corpus. Checkpoints from before corpora were recorded name one path."""
    recorded = ckpt.meta.get("corpus")
    if recorded is None or isinstance(recorded, dict):
        return recorded
    return {"paths": [str(recorded)], "globs": [], "files": []}


def _rereadable(record, ckpt_path):
    """The corpus paths of a record, where they can be read again."""
    paths = tuple(Path(p) for p in record["paths"])
    for path in paths:
        if str(path) == "-" or not (path.is_file() or path.is_dir()):
            raise RnnlmError(f"{ckpt_path} was trained on {path}, which cannot be read again; "
                             f"give the corpus: rnnlm train CORPUS --resume {ckpt_path}")
    return paths


def _finetuning_config(base, config_file, assignments, settings):
    """Settings for fine-tuning base: the model's shape (cell, hidden, layers) from it,
    which no setting may change; everything else as for a new run."""
    shape = {k: base.meta["config"][k] for k in ("cell", "hidden", "layers")}
    cfg = config.build(base=config.Config(**shape), file=config_file,
                       assignments=assignments, **settings)
    for key, value in shape.items():
        if getattr(cfg, key) != value:
            raise RnnlmError(f"fine-tuning keeps the model of {base.path}: {key} is {value!r} "
                             f"there, and cannot be set to {getattr(cfg, key)!r}")
    return cfg
