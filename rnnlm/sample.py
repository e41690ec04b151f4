"""Generating text one character at a time."""
import unicodedata

import numpy as np

from rnnlm import arguments, engines
from rnnlm.errors import RnnlmError
from rnnlm.io.data import describe_chars


def pick(logits, rng, temperature=1.0, top_k=0, argmax=False, top_p=1.0):
    """Draw an id from logits (V,): greedy, or softmax(logits / temperature) restricted to
    the top_k most likely (0: all), then to the fewest likeliest whose probabilities add
    up to top_p (nucleus sampling; 1: all)."""
    if argmax:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.size:
        cut = np.partition(z, -top_k)[-top_k]
        z[z < cut] = -np.inf
    z -= z.max()
    if top_p < 1.0:
        order = np.argsort(-z, kind="stable")
        probs = np.exp(z[order])
        keep = int(np.searchsorted(np.cumsum(probs) / probs.sum(), top_p)) + 1
        z[order[keep:]] = -np.inf
    cdf = np.cumsum(np.exp(z))
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), z.size - 1))


def check_options(temperature=1.0, top_k=0, top_p=1.0):
    """RnnlmError naming the first sampling option of the wrong type or out of range."""
    if not arguments.number(temperature, "temperature") > 0:
        raise RnnlmError(f"temperature must be a number > 0, got {temperature}")
    arguments.integer(top_k, "top-k", minimum=0)
    if not 0 < arguments.number(top_p, "top-p") <= 1:
        raise RnnlmError(f"top-p must be in (0, 1], got {top_p}")


def check_prime(vocab, prime):
    """RnnlmError naming the prime's characters that are not in the vocabulary."""
    missing = vocab.unknown(prime)
    if missing:
        raise RnnlmError(f"prime has {len(missing)} character(s) not in the model's "
                         f"vocabulary: {describe_chars(missing)}")


def generate(params, spec, vocab, rng, prime="", length=200, temperature=1.0, top_k=0,
             argmax=False, engine="fast", top_p=1.0):
    """An iterator of `length` generated characters, after feeding `prime` (not yielded).
    With no prime the model starts from a newline if it knows one, else from a
    character drawn uniformly, which then counts as the first generated. The arguments are
    checked at once (RnnlmError naming the first wrong one), not at the first character."""
    check_options(temperature, top_k, top_p)
    check_prime(vocab, arguments.text(prime, "prime"))
    length = arguments.integer(length, "n", minimum=0)
    return _generated(params, spec, vocab, rng, prime, length, temperature, top_k, argmax,
                      engine, top_p)


def _generated(params, spec, vocab, rng, prime, length, temperature, top_k, argmax, engine,
               top_p):
    step = engines.get(engine).stepper(params, spec)
    if length == 0:
        return
    if not prime and "\n" not in vocab.chars:
        first = int(rng.integers(vocab.size))
        yield vocab.chars[first]
        prime, length = vocab.chars[first], length - 1
    ids = vocab.encode(prime or "\n")[0]
    for i in ids[:-1]:
        step(i)
    current = ids[-1]
    for _ in range(length):
        current = pick(step(current), rng, temperature, top_k, argmax, top_p)
        yield vocab.chars[current]


PRIME_FILE_BYTES = 1 << 20  # a prime longer than this is not a prime


def read_prime(path):
    """--prime-file's text: a regular file of UTF-8 text, at most PRIME_FILE_BYTES."""
    try:
        if not path.is_file():
            raise RnnlmError(f"--prime-file {path}: not a regular file")
        if path.stat().st_size > PRIME_FILE_BYTES:
            raise RnnlmError(f"--prime-file {path}: larger than {PRIME_FILE_BYTES >> 20} MB")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or "not UTF-8 text"
        raise RnnlmError(f"--prime-file {path}: {reason}") from None


def printable(text):
    """text with control characters other than newline and tab escaped (a sample drawn
    from a model of a binary-ish text may hold ESC or BEL: not for the terminal)."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch)[0] == "C" and ch not in "\n\t" else ch
                   for ch in text)
