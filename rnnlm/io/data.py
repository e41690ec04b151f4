"""Text in, ids out: the vocabulary, decoding, splitting and batching (corpus.py reads
the corpora)."""
import codecs
import contextlib
import io
import math
import sys
import sysconfig
from pathlib import Path

import numpy as np

from rnnlm.errors import RnnlmError

CHUNK_BYTES = 1 << 20  # bytes decoded at a time: bounds the transient memory of reading


class Vocab:
    """The sorted set of a corpus's characters (code points); id = position in it."""

    def __init__(self, chars):
        self.chars = "".join(sorted(set(chars)))
        if not self.chars:
            raise RnnlmError("the vocabulary is empty")
        self.codepoints = np.array([ord(c) for c in self.chars], np.uint32)
        self.dtype = np.min_scalar_type(len(self.chars) - 1)  # smallest unsigned that fits

    @property
    def size(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.chars == other.chars

    def unknown(self, text):
        """The characters of text that are not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))

    def encode(self, text, skip_unknown=False):
        """text -> ids. Unknown characters are an error naming them, or with skip_unknown
        are dropped; returns (ids, number dropped)."""
        cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        idx = np.searchsorted(self.codepoints, cps)
        known = self.codepoints[np.minimum(idx, self.size - 1)] == cps
        if not known.all():
            if not skip_unknown:
                missing = self.unknown(text)
                raise RnnlmError(f"{len(missing)} character(s) not in the vocabulary: "
                                 f"{describe_chars(missing)}")
            idx = idx[known]
        return idx.astype(self.dtype), int(known.size - np.count_nonzero(known))

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


def describe_chars(chars, limit=20):
    shown = " ".join(repr(c) for c in chars[:limit])
    return shown + (f" ... ({len(chars) - limit} more)" if len(chars) > limit else "")


def text_decoder(encoding):
    """A strict incremental decoder for a text encoding; RnnlmError for an unknown name
    or a codec that is not bytes-to-text (rot13, base64, zlib ...)."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise RnnlmError(f"unknown encoding {encoding!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise RnnlmError(f"{encoding!r} is not a text encoding (it does not turn bytes into "
                         f"text); use one such as utf-8, latin-1 or utf-16")
    return info.incrementaldecoder(errors="strict")


def _open(path, what):
    """The binary stream of path ("-": standard input); RnnlmError naming it otherwise."""
    if str(path) == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    path = Path(path)
    if path.is_dir():
        raise RnnlmError(f"{what} {path} is a directory, not a text file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise RnnlmError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise RnnlmError(f"cannot read {what} {path}: {e.strerror}") from None


class TextReader:
    """Strict, chunked decoding of a binary stream: read(f) yields its text, chunk by chunk.
    Errors name `label` (such as "corpus notes.txt") and the byte offset; an unknown or
    non-text encoding is an error as the reader is made. newline="lf" makes \\r\\n and \\r
    line ends \\n; drop_bom drops a byte-order mark at the start; on_bytes sees every raw
    chunk. After the last chunk: size (bytes read), bom (one was dropped), crlf (\\r\\n line
    ends were seen)."""

    def __init__(self, encoding, label, newline="keep", drop_bom=False, on_bytes=None):
        self.decoder = io.IncrementalNewlineDecoder(text_decoder(encoding),
                                                    translate=newline == "lf")
        self.encoding, self.label, self.drop_bom, self.on_bytes = encoding, label, drop_bom, on_bytes
        self.size, self.bom, self.crlf = 0, False, False

    def read(self, f):
        consumed, chars, first = 0, 0, True
        while True:
            raw = f.read(CHUNK_BYTES)
            if self.on_bytes is not None:
                self.on_bytes(raw)
            self.size += len(raw)
            try:
                pending = self.decoder.getstate()[0]
                text = self.decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                offset = consumed - len(pending) + e.start
                raise RnnlmError(f"{self.label} is not valid {self.encoding}: undecodable byte "
                                 f"at offset {offset} (is it binary? try --encoding)") from None
            except UnicodeError as e:  # e.g. utf-16 without a byte-order mark
                raise RnnlmError(f"{self.label} cannot be decoded as {self.encoding}: "
                                 f"{e}") from None
            consumed += len(raw)
            if first and text:
                first = False
                if self.drop_bom and text[0] == "\ufeff":
                    text, self.bom = text[1:], True
            nul = text.find("\x00")
            if nul >= 0:
                raise RnnlmError(f"{self.label} looks binary: NUL character at character "
                                 f"{chars + nul}")
            if text:
                chars += len(text)
                yield text
            if not raw:
                self.crlf = bool(self.decoder.newlines and "\r\n" in self.decoder.newlines)
                return


def encode_file(path, vocab, encoding="utf-8", skip_unknown=False):
    """Encode a text file with an existing vocabulary -> (ids, characters skipped).
    Unknown characters are an error naming them unless skip_unknown."""
    reader = TextReader(encoding, f"text {'standard input' if str(path) == '-' else path}",
                        drop_bom=True)  # as train drops it: the same file reads the same
    parts, skipped, unknown = [], 0, set()
    with _open(path, "text") as f:
        for text in reader.read(f):
            if skip_unknown:
                ids, n = vocab.encode(text, skip_unknown=True)
                parts.append(ids)
                skipped += n
            else:
                unknown.update(vocab.unknown(text))
                if not unknown:
                    parts.append(vocab.encode(text)[0])
    if unknown:
        missing = sorted(unknown)
        raise RnnlmError(f"{path} has {len(missing)} character(s) not in the model's "
                         f"vocabulary: {describe_chars(missing)} (or use --skip-unknown)")
    if not parts:
        raise RnnlmError(f"{path} is empty")
    return np.concatenate(parts), skipped


BUILTIN_NAME = "the Python standard library's source"
BUILTIN_CHARS = 2_000_000


def builtin_text(limit=BUILTIN_CHARS):
    """The built-in corpus: this Python's standard-library modules (top-level .py files,
    sorted by name) concatenated up to `limit` characters. Needs no download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    if not parts:
        raise RnnlmError(f"no built-in corpus: no Python sources found in {root}")
    return "".join(parts)[:limit]


def text_corpus(text):
    """(Vocab, ids) of a string."""
    if not text:
        raise RnnlmError("the text is empty")
    vocab = Vocab(text)
    return vocab, vocab.encode(text)[0]


def split(ids, val_fraction):
    """The last val_fraction of the characters, contiguous, validate; the rest train."""
    n_val = int(round(len(ids) * val_fraction))
    return ids[:len(ids) - n_val], ids[len(ids) - n_val:]


def min_corpus_length(batch, seq_len, val_fraction):
    """The shortest corpus whose training split holds one window for every stream."""
    need = batch * (seq_len + 1)
    n = math.ceil(need / (1 - val_fraction))
    while n - int(round(n * val_fraction)) < need:
        n += 1
    return n


# Where a pass's windows start in each stream: SHIFT characters later than the last pass's,
# modulo the window, so that BPTT is truncated at other places each pass (AWD-LSTM's
# variable window lengths have this purpose). 23 is prime to every power of two, so that a
# window of 64 visits all 64 offsets in 64 passes (a window of a multiple of 23 gets fewer).
# Measured on the rule's 5-minute model (GRU 2 x 320, 3,078 updates, 6 passes), four
# seeds: 0.004 nats/char better than a grid fixed for every pass, each seed better
# (docs/results.md, "Ideas measured").
SHIFT = 23


class Streams:
    """B parallel streams over ids, read as windows of T characters.

    Stream b is the b-th contiguous 1/B of the text, so hidden state carried from one
    window to the next in a stream has seen the text that precedes it. Window k of a pass
    whose windows start at offset o gives x = data[:, o+kT:o+(k+1)T] and targets y = x
    shifted by one. The last len(ids) mod B characters, and each stream's characters before
    o and after its last whole window, are not visited in that pass.

    shifted: each pass starts at another offset (offset()), for which a pass gives up one
    window (where a stream holds two or more); else every pass reads the same windows.
    """

    def __init__(self, ids, batch, seq_len, shifted=False):
        length = len(ids) // batch
        self.data = ids[:batch * length].reshape(batch, length)  # (B, L), a view
        self.seq_len = seq_len
        self.windows = (length - 1) // seq_len if length else 0  # per pass
        if self.windows < 1:
            raise RnnlmError(f"training text of {len(ids)} characters is too short for "
                             f"{batch} streams of one {seq_len}-character window: it needs "
                             f"at least {batch * (seq_len + 1)}")
        self.shifted = shifted and self.windows > 1  # the last window is the room to move in
        self.windows -= self.shifted

    @property
    def chars_per_epoch(self):
        return self.data.shape[0] * self.windows * self.seq_len

    def offset(self, epoch):
        """Where pass `epoch`'s windows start in each stream."""
        return epoch * SHIFT % self.seq_len if self.shifted else 0

    def window(self, k, epoch=0):
        """x, y of window k of pass `epoch`, each (B, T)."""
        start = self.offset(epoch) + k * self.seq_len
        end = start + self.seq_len
        return self.data[:, start:end], self.data[:, start + 1:end + 1]


def eval_windows(ids, batch, seq_len, positions=False):
    """Windows covering every prediction in ids exactly once: yields (x, y, mask) each
    (B, t) with t <= T, mask 1 where y is real and 0 on padding (and, with positions,
    the index in ids of each y). The text is cut into B contiguous streams; state is
    meant to be carried across windows within a stream. Windows are gathered one at a
    time, so no copy of the text is made."""
    n = len(ids) - 1  # predictions: ids[1:] given what precedes them
    if n < 1:
        return
    batch = min(batch, n)
    length = -(-n // batch)  # predictions per stream; the last stream is padded
    starts = np.arange(batch) * length
    for start in range(0, length, seq_len):
        pos = starts[:, None] + np.arange(start, min(start + seq_len, length))  # (B, t)
        mask = pos < n
        pos = np.minimum(pos, n - 1)
        yield (ids[pos], ids[pos + 1], mask) + ((pos + 1,) if positions else ())
