"""A run's set-up: new, resumed or fine-tuned. Its settings, its corpus, its directory and
its model are decided here, and nowhere else, before the loop (training.py) starts.

    start(corpus, out, ...)  -> Training(out, config, events)
    choose(corpus, ...)      -> what a new run on corpus would train with (rnnlm config)
"""
import dataclasses
import os
import time as clock
from dataclasses import dataclass
from pathlib import Path

from rnnlm import arguments, config, engines
from rnnlm.errors import RnnlmError
from rnnlm.io import checkpoint, corpus as corpus_lib, data, rundir
from rnnlm.io.rundir import CONFIG, LAST, METRICS
from rnnlm.run import sizing, training, workers


def _silent(message):
    pass


@dataclass
class Training:
    """A run set up and about to start: where it writes, its settings, and its events
    (training.Begin first, then Step, Eval, RolledBack, Stopped: rnnlm/run/training.py)."""
    out: Path
    config: config.Config
    events: object  # a generator


@dataclass
class _Origin:
    """Where a run's weights and settings come from: a checkpoint it resumes, one it
    fine-tunes, or neither; and what the resumed one recorded."""
    resumed: checkpoint.Checkpoint = None
    base: checkpoint.Checkpoint = None  # fine-tuned
    record: dict = None  # the resumed run's corpus record
    metrics_from: Path = None  # the metrics.csv a resumed run continues, in another directory


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
    settings, paths, out = limits(time, settings), paths_of(corpus), _out(out)
    plan = None  # the updates a new run's time budget is to buy, where it measured them
    if resume is not None and init_from is not None:
        raise RnnlmError("--resume continues a run, --init-from starts a new one from "
                         "another's weights: give one of them")
    origin, cfg, given, out = _origin(resume, init_from, out, (config_file, assignments,
                                                               settings), notify, warn)
    if origin.resumed is not None and not paths and origin.record is not None:
        paths = _rereadable(origin.record, origin.resumed.path)
        globs = globs or tuple(origin.record["globs"])
    text, default_out, record = _read_corpus(paths, globs, cfg, origin, notify)
    if origin.resumed is None:
        chosen = out
        out = workers.decided(lambda: rundir.for_new_run(chosen, default_out))
        fixed = given | set(sizing.SIZED) if origin.base else given  # fine-tuning keeps its model
        cfg, _, plan = for_text(cfg, fixed, text, began, check_memory, notify)
    else:
        cfg = _engine_loaded(cfg, notify)
    events = training.train(cfg, text.vocab, text.ids, out, corpus_name=text.name,
                            corpus_record=record, resume=origin.resumed, stop=stop,
                            metrics_from=origin.metrics_from, check_memory=check_memory,
                            init_from=origin.base, began=began, plan=plan)
    return Training(Path(out), cfg, events)


def _out(out):
    return None if out is None else arguments.path(out, "out")


def _origin(resume, init_from, out, given_settings, notify, warn):
    """(_Origin, Config, the keys the user gave, the run directory where it is decided)."""
    if resume is not None:
        return _resumed(resume, out, given_settings, notify, warn)
    config_file, assignments, settings = given_settings
    if init_from is not None:
        named = arguments.path(init_from, "init_from (the run to fine-tune)")
        base = load(checkpoint_path(named, notify), notify)
        cfg, given = _finetuning_config(base, config_file, assignments, settings)
        return _Origin(base=base), cfg, given, out
    cfg, given = config.resolve(file=config_file, assignments=assignments, **settings)
    return _Origin(), cfg, given, out


def _resumed(resume, out, given_settings, notify, warn):
    """(_Origin, Config, keys given, run directory) for continuing from resume: a run
    directory (its last.npz) or a checkpoint."""
    config_file, assignments, settings = given_settings
    ckpt_path, ckpt, saved = _resumed_checkpoint(resume, notify)
    cfg, given = config.resolve(base=saved, file=config_file, assignments=assignments,
                                **settings)
    config.check_resumable(saved, cfg)
    out, why = workers.decided(lambda: rundir.for_resume(ckpt_path, ckpt.meta.step, out))
    if why:
        (warn or notify)(why)
    _check_unapplied_edit(Path(out) / CONFIG, cfg, given)
    own = ckpt_path.parent  # its metrics.csv continues in another directory, if it is a run's
    carried = rundir.is_run(own) and Path(out).resolve() != own.resolve()
    origin = _Origin(resumed=ckpt, record=ckpt.meta.corpus,
                     metrics_from=own / METRICS if carried else None)
    return origin, cfg, given, out


def _resumed_checkpoint(resume, notify=_silent):
    """(its path, the checkpoint, its settings) that --resume names: a run directory (its
    last.npz) or a checkpoint."""
    resume = arguments.path(resume, "resume")
    path = resume / LAST if resume.is_dir() else resume
    ckpt = load(path, notify)
    return path, ckpt, config.from_dict(ckpt.meta.config, f"checkpoint {path}: ")


def _check_unapplied_edit(path, cfg, given):
    """RnnlmError where the run's config.yaml, which a resume rewrites, sets a setting
    otherwise than the resumed run will (the user edited it): never overwrite the edit in
    silence; say how to apply it, or that it cannot be."""
    if not path.exists():
        return
    edit = config.edits(path, cfg, given)
    if edit is None:
        return
    key, wanted, kept = edit
    how = (f"{key} cannot change when a run resumes: undo the edit, or start a new run"
           if key in config.FROZEN_ON_RESUME else
           f"resume with --set {key}={wanted} to apply it, or undo the edit")
    raise RnnlmError(f"{path} was edited ({key}: {wanted}; the run has {kept}), and "
                     f"resuming rewrites it: {how}")


def launches(n, config_file=None, assignments=(), resume=None):
    """Whether `rnnlm train --workers n` is to start n workers here (through
    workers.run_locally) rather than train in this process: yes where a process that no
    launcher started asks for several. Before any starts (seconds of spawning), the streams
    are checked: those the run's settings give must split over n (the rule may still give
    a short text fewer, which the workers then refuse). RnnlmError where n is not the size
    of the MPI job this process is in."""
    launched = workers.launched_size()
    if n > 1 and launched > 1 and n != launched:
        raise RnnlmError(f"--workers {n} inside an MPI job of {launched} processes: the "
                         f"job's processes are the workers; leave --workers out")
    if n <= 1 or launched > 1:
        return False
    if resume is not None:
        cfg = _resumed_checkpoint(resume)[2]
    else:
        # (a budget given on the command line alone may end a config file's run)
        cfg, _ = config.resolve(file=config_file, assignments=assignments, max_seconds=1.0)
    workers.check_streams(cfg.batch_size, n)
    return True


def choose(corpus=None, *, config_file=None, assignments=(), time=None, globs=(),
           check_memory=True, notify=_silent, **settings):
    """What a new run on corpus would train with, without training it (rnnlm config
    CORPUS): its Config, and the rule's choice in one line (None where the user set every
    setting the rule chooses). start()'s arguments."""
    began = clock.perf_counter()
    settings = limits(time, settings)
    cfg, given = config.resolve(file=config_file, assignments=assignments, **settings)
    text, _, _ = _read_corpus(paths_of(corpus), globs, cfg, _Origin(), notify)
    return for_text(cfg, given, text, began, check_memory, notify)[:2]


def limits(time, settings):
    """settings without the ones not given (None), time as max_seconds; a limit given in
    one unit only lifts the other."""
    settings = {k: v for k, v in settings.items() if v is not None}
    if time is not None:
        settings["max_seconds"] = config.parse_duration(str(time))
    if ("max_steps" in settings) != ("max_seconds" in settings):
        settings.setdefault("max_steps", 0)
        settings.setdefault("max_seconds", 0)
    return settings


def _engine_loaded(cfg, notify):
    """cfg, its precision "auto" resolved to the one this machine computes in, with the
    fast engine's kernels and products loaded for it. Worker 0 measures and decides for
    every worker: the library and the precision decide the numbers' last bits."""
    cfg = dataclasses.replace(cfg, precision=workers.decided(
        lambda: engines.precision(cfg, notify)))
    if cfg.engine == "fast":
        library = workers.decided(lambda: engines.products(notify, cfg.precision))
        engines.load_kernels(notify=notify, precision=cfg.precision, products=library)
    return cfg


def for_text(cfg, given, text, began, check_memory, notify):
    """A new run's settings for its text: fewer streams where it is short, and the model
    the rule chooses (sizing.sized), each unless `given`. Returns the Config, the choice
    in one line and the updates planned (plan.Plan), both None where every setting the
    rule chooses was given."""
    if not {"batch_size", "seq_len"} & given:
        cfg = _fitted(cfg, len(text.ids), notify)
    cfg = _engine_loaded(cfg, notify)
    if set(sizing.SIZED) <= given:
        return cfg, None, None
    cfg, why, plan = sizing.sized(cfg, given, text, began, check_memory)
    notify(why)
    return cfg, why, plan


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


def paths_of(corpus):
    """A corpus argument (a path, several, or None) as a tuple of paths."""
    if corpus is None:
        return ()
    if isinstance(corpus, (str, bytes, os.PathLike)):
        return (arguments.path(corpus, "corpus"),)
    if not isinstance(corpus, (list, tuple)):
        raise RnnlmError(f"corpus must be a path, a list of paths or None, got "
                         f"{type(corpus).__name__} {corpus!r}")
    return tuple(arguments.path(p, "corpus") for p in corpus)


def checkpoint_path(target, notify=_silent):
    """A checkpoint's path: a run directory means its best.npz (its last.npz where it has
    no best, as a run without a validation split), and says so."""
    path = rundir.checkpoint_of(target)
    if path != Path(target):
        notify(f"using {path}" + ("" if path.name == rundir.BEST else
                                  f" (the run has no {rundir.BEST})"))
    return path


def load(path, notify):
    """checkpoint.load, saying what loading changed (a dtype converted)."""
    ckpt = checkpoint.load(path)
    for note in ckpt.notes:
        notify(note)
    return ckpt


def _read_corpus(paths, globs, cfg, origin, notify):
    """(the text, the default run directory, the corpus's record) for a run; a resumed
    run's text must match its record. Says what reading found."""
    if not paths:
        if origin.base is not None:
            raise RnnlmError("--init-from needs the corpus to fine-tune on: rnnlm train "
                             "CORPUS --init-from ...")
        notify(f"no corpus given: training on {data.BUILTIN_NAME} (no download)")
        return corpus_lib.builtin(), Path("runs") / "stdlib", None
    model = origin.base or origin.resumed
    known = model.vocab.chars if model else ""  # a fine-tuned or resumed vocabulary
    text = corpus_lib.read(paths, cfg.encoding, globs, cfg.newline, extra_chars=known)
    if origin.record is not None:
        corpus_lib.check_same(origin.record, text)
    for note in text.notes(cfg.encoding):
        notify(note)
    first = paths[0]
    default_out = Path("runs") / ("stdin" if str(first) == "-" else first.stem or "corpus")
    return text, default_out, text.record(paths, globs, cfg.encoding, cfg.newline)


def _rereadable(record, ckpt_path):
    """The corpus paths of a record, where they can be read again."""
    paths = tuple(Path(p) for p in record["paths"])
    for path in paths:
        if str(path) == "-" or not (path.is_file() or path.is_dir()):
            raise RnnlmError(f"{ckpt_path} was trained on {path}, which cannot be read again; "
                             f"give the corpus: rnnlm train CORPUS --resume {ckpt_path}")
    return paths


def _finetuning_config(base, config_file, assignments, settings):
    """(Config, keys given) for fine-tuning base: the model's shape (cell, hidden, layers)
    from it, which no setting may change; everything else as for a new run."""
    shape = {k: base.meta.config[k] for k in ("cell", "hidden", "layers")}
    cfg, given = config.resolve(base=config.Config(**shape), file=config_file,
                                assignments=assignments, **settings)
    for key, value in shape.items():
        if getattr(cfg, key) != value:
            raise RnnlmError(f"fine-tuning keeps the model of {base.path}: {key} is {value!r} "
                             f"there, and cannot be set to {getattr(cfg, key)!r}")
    return cfg, given
