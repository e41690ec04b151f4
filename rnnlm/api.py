"""The Python API: what a notebook user calls, and what each command is built on.

    import rnnlm
    model = rnnlm.load("runs/shk")                 # a run directory means its best.npz
    print(model.sample("ROMEO:", 200, temperature=0.8, seed=7))
    model.loss("To be, or not to be")              # nats per character
    model.probabilities("ROMEO")                   # {'\\n': 0.01, ' ': 0.2, ...}
    run_dir = rnnlm.train("notes.txt", time="1m", hidden=128)   # a whole run

Nothing here prints: what a user should hear goes to `notify(message)` where a caller
gives one (the command line gives its log). A run's set-up lives in rnnlm/run/start.py.
"""
import numpy as np

from rnnlm import arguments, engines, evaluate, sample as sampling
from rnnlm.errors import RnnlmError
from rnnlm.io import checkpoint, data
from rnnlm.run.start import (Training, checkpoint_path, choose, launches,  # noqa: F401
                             start)  # (the API)
from rnnlm.run import start as setup


def _silent(message):
    pass


def load(path, engine="fast", notify=_silent):
    """The model of a checkpoint (.npz) or of a run directory (its best.npz)."""
    path = arguments.path(path, "path")
    return Model(setup.load(checkpoint_path(path, notify), notify), engine, notify)


def train(corpus=None, out=None, **options):
    """Run a whole training run (start()'s arguments) and return the run directory."""
    run = start(corpus, out, **options)
    for _ in run.events:
        pass
    return run.out


SAMPLE_CHARS_FOR_NUMBA = 10_000  # where the 2-layer LSTM repays Numba's 0.5 s load
STREAM_CONTEXT = 256  # characters a stream of a scored text has at least, where it can


class Model:
    """A trained model: it samples, scores text and gives next-character probabilities.
    `engine` is "fast" or "textbook" (the same numbers, one readable step at a time)."""

    def __init__(self, ckpt, engine="fast", notify=_silent):
        if engine not in engines.ENGINES:
            raise RnnlmError(f"engine must be one of {', '.join(engines.ENGINES)}, got {engine!r}")
        self.checkpoint, self.engine, self.notify = ckpt, engine, notify
        self.params, self.spec, self.vocab = ckpt.params, ckpt.spec, ckpt.vocab
        self.kernels = None  # the fast engine's, chosen at the first use that needs them

    def __repr__(self):
        s = self.spec
        return (f"<rnnlm.Model {s.name}, {s.vocab_size} characters, "
                f"from {self.checkpoint.path}>")

    @property
    def info(self):
        """What the checkpoint holds (rnnlm info): model, vocabulary, step, config, corpus."""
        return checkpoint.summary(self.checkpoint)

    def ready(self, chars=None):
        """Choose the fast engine's kernels, once: Numba's where they are installed,
        unless only a few `chars` are to be generated (its 0.5 s load would not repay)."""
        if self.engine == "fast" and self.kernels is None:
            few = chars is not None and chars < SAMPLE_CHARS_FOR_NUMBA
            self.kernels = engines.load_kernels(notify=self.notify,
                                                prefer="numpy" if few else None)
        return self

    def chars(self, prime="", n=200, temperature=1.0, top_k=0, top_p=1.0, seed=None,
              argmax=False):
        """Yield n generated characters, one at a time, after feeding prime (not yielded).
        The same seed (an int, or a list of ints) gives the same characters."""
        rng = np.random.default_rng(arguments.seed(seed))
        characters = sampling.generate(self.params, self.spec, self.vocab, rng, prime, n,
                                       temperature, top_k, argmax, self.engine, top_p)
        self.ready(n)
        return characters

    def sample(self, prime="", n=200, temperature=1.0, top_k=0, top_p=1.0, seed=None,
               argmax=False):
        """n characters generated after prime, as one string (the prime not included)."""
        return "".join(self.chars(prime, n, temperature, top_k, top_p, seed, argmax))

    def loss(self, text, batch_size=32, skip_unknown=False, dynamic=False):
        """Mean cross-entropy on text in nats per character (every character but the first).
        Characters outside the vocabulary are an error naming them, or skipped. dynamic:
        the model keeps learning the text as it scores it (evaluate.dynamic; one stream)."""
        text = arguments.text(text, "text")
        batch_size = arguments.integer(batch_size, "batch_size", minimum=1)
        ids, _ = self.vocab.encode(text, skip_unknown=skip_unknown)
        return self._loss(ids, batch_size, dynamic)[0]

    def loss_of_file(self, path, encoding=None, batch_size=32, skip_unknown=False,
                     dynamic=False):
        """(nats per character, characters read, characters skipped, streams read in) of a
        text file, read in `encoding` (default: the model's); dynamic as for loss()."""
        path = arguments.path(path, "path")
        batch_size = arguments.integer(batch_size, "batch_size", minimum=1)
        ids, skipped = data.encode_file(path, self.vocab,
                                        encoding or self.checkpoint.encoding, skip_unknown)
        nats, n = self._loss(ids, batch_size, dynamic)
        return nats, len(ids), skipped, n

    def _loss(self, ids, batch_size, dynamic):
        """(nats per character of ids, the streams they were read in): one, dynamically,
        else up to batch_size (streams())."""
        self.ready()
        if dynamic:
            return evaluate.dynamic(self.params, self.spec, ids, engine=self.engine), 1
        n = streams(len(ids), batch_size)
        return evaluate.evaluate(self.params, self.spec, ids, n, engine=self.engine), n

    def probabilities(self, prime=""):
        """The distribution of the character that follows prime, as {character: p} in the
        vocabulary's order. An empty prime means the start of a line, where sampling starts."""
        logits = self.logits(prime).astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return dict(zip(self.vocab.chars, p.tolist()))

    def logits(self, prime=""):
        """The logits (V,) of the character that follows prime."""
        if arguments.text(prime, "prime") == "" and "\n" not in self.vocab.chars:
            raise RnnlmError("this model's vocabulary has no newline, so an empty prime has "
                             "no start: give a prime")
        prime = prime or "\n"
        sampling.check_prime(self.vocab, prime)
        self.ready()
        step = engines.get(self.engine).stepper(self.params, self.spec)
        for i in self.vocab.encode(prime)[0]:
            logits = step(i)
        return logits


def streams(characters, batch_size):
    """The streams to score a text of `characters` in: batch_size, or fewer where each
    would otherwise see fewer than STREAM_CONTEXT characters (a stream of a few characters
    scores them with almost no context, higher than the model's real loss)."""
    return max(1, min(batch_size, characters // STREAM_CONTEXT))
