"""Corpora as users keep them: files, directories, standard input, read into one text.

A corpus is one or more paths. A directory is walked in sorted order (its subdirectories
too), keeping the files that match any --glob pattern (all, without one), and skipping
hidden files and directories, and files that do not decode as text (counted, not fatal).
A file named explicitly must decode, or it is an error naming it. The documents are joined
with SEPARATOR between them. A byte-order mark at the start of a file is dropped, and
`newline="lf"` turns \\r\\n and \\r line ends into \\n (the default keeps them, and says so).

The text is read twice (the vocabulary, then the ids), chunk by chunk, so it is never
held as a string: peak memory is the ids (one byte a character for up to 256 distinct
characters) plus a chunk. What can be read only once (standard input, a pipe, a FIFO) is
copied to a temporary file first. Each file's size and SHA-256 are recorded, so that a run
can say what it was trained on and a resumed run can check that it is the same.
"""
import codecs
import contextlib
import fnmatch
import hashlib
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.io import data
from rnnlm.io.data import Vocab

SEPARATOR = "\n\n"  # between two documents of a corpus


@dataclass
class Source:
    """One file of a corpus, as read."""

    path: str
    size: int  # bytes
    sha256: str
    chars: int = 0  # characters it gave, after the changes below
    bom: bool = False  # a byte-order mark was dropped from its start
    crlf: bool = False  # it has \r\n line ends (kept, or made \n with newline="lf")


@dataclass
class Corpus:
    vocab: Vocab
    ids: np.ndarray  # the whole text, joined, as ids of vocab
    sources: list  # Source, in reading order
    skipped: dict = field(default_factory=dict)  # reason -> files skipped in directories
    name: str = "corpus"  # for messages: the path, or "N files under PATH"

    def record(self, paths, globs, encoding, newline):
        """What the run was trained on, for its checkpoint and config.yaml."""
        return {"paths": [str(p) for p in paths], "globs": list(globs), "encoding": encoding,
                "newline": newline, "separator": SEPARATOR,
                "files": [{"path": s.path, "size": s.size, "sha256": s.sha256}
                          for s in self.sources]}

    def notes(self, encoding="utf-8"):
        """What reading changed or found, for the log."""
        hint = self.utf8_hint(encoding)
        out = [hint] if hint else []
        boms, crlf = sum(s.bom for s in self.sources), sum(s.crlf for s in self.sources)
        if boms:
            out.append(f"dropped the byte-order mark at the start of {boms} file(s)")
        if crlf and "\r" in self.vocab.chars:
            out.append(f"{crlf} file(s) have \\r\\n line ends, so \\r is in the vocabulary "
                       f"(--set newline=lf makes them \\n)")
        elif crlf:
            out.append(f"\\r\\n line ends of {crlf} file(s) made \\n (newline: lf)")
        for reason, n in self.skipped.items():
            out.append(f"skipped {n} {reason} file(s)")
        return out

    def utf8_hint(self, encoding, sample=100_000):
        """A line where the text, read in a one-byte encoding such as latin-1, was UTF-8
        (its first `sample` characters, back in their bytes, are UTF-8 with characters
        beyond ASCII): every accented letter would have become two, as "Ã©" for "é"."""
        if codecs.lookup(encoding).name == "utf-8":
            return None
        head = "".join(self.vocab.chars[i] for i in self.ids[:sample].tolist())
        try:
            utf8 = head.encode(encoding).decode("utf-8")
        except (UnicodeError, LookupError):
            return None
        if utf8 == head:  # ASCII alone: the same in either
            return None
        return (f"the text reads as UTF-8 ({_first_difference(head, utf8)}): "
                f"read as {encoding}, each of its accented letters becomes two characters; "
                f"leave out --encoding (or --set encoding=utf-8)")


def _first_difference(as_read, utf8):
    """'"Ã©" as "é"': the first character where reading as UTF-8 changes the text."""
    for k, ch in enumerate(utf8):
        if ch != as_read[k]:
            return f'"{as_read[k:k + len(ch.encode("utf-8"))]}" would be "{ch}"'
    return ""


def files(paths, globs=()):
    """(the files to read, in order, each with whether it was named explicitly,
    {reason: count} of those skipped by name) for corpus paths."""
    chosen, skipped = [], {}
    for path in paths:
        if str(path) == "-":
            chosen.append((Path("-"), True))
            continue
        path = Path(path)
        if not path.exists():
            raise RnnlmError(f"corpus {path} does not exist")
        if not path.is_dir():
            if any(_same_file(path, other) for other, _ in chosen):
                raise RnnlmError(f"corpus {path} is given twice: its text would be trained on "
                                 f"twice, and validate on a copy of training text")
            chosen.append((path, True))
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    skipped["hidden"] = skipped.get("hidden", 0) + 1
                    continue
                full = Path(root) / name
                relative = str(full.relative_to(path))
                if globs and not any(fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(name, g)
                                     for g in globs):
                    continue
                chosen.append((full, False))
    return chosen, skipped


def _same_file(a, b):
    try:
        return str(b) != "-" and os.path.samefile(a, b)
    except OSError:
        return False


def read(paths, encoding="utf-8", globs=(), newline="keep", extra_chars=""):
    """Read a corpus -> Corpus. extra_chars join the vocabulary (fine-tuning keeps the
    characters a model already knows)."""
    chosen, skipped = files(paths, globs)
    with contextlib.ExitStack() as stack:
        readable = [(stack.enter_context(_readable_twice(p)), p, explicit)
                    for p, explicit in chosen]
        sources, seen, total = [], set(extra_chars), 0
        kept = []
        for path, name, explicit in readable:  # pass 1: what is there
            source = Source(str(name), 0, "")
            digest, chars = hashlib.sha256(), set()
            try:
                for text in _texts(path, name, encoding, newline, source, digest):
                    chars.update(text)
                    source.chars += len(text)
            except RnnlmError:
                if explicit:
                    raise
                skipped["undecodable or binary"] = skipped.get("undecodable or binary", 0) + 1
                continue
            source.sha256 = digest.hexdigest()
            if source.chars == 0:
                if explicit and len(chosen) == 1:
                    raise RnnlmError(f"corpus {name} is empty")
                continue
            seen |= chars
            kept.append((path, name, source))
            total += source.chars
        if not kept:
            where = ", ".join(str(p) for p in paths)
            raise RnnlmError(f"corpus {where} holds no text" + (
                f" matching {', '.join(globs)}" if globs else ""))
        if len(kept) > 1:
            seen |= set(SEPARATOR)
            total += len(SEPARATOR) * (len(kept) - 1)
        vocab = Vocab(seen)
        ids = np.empty(total, vocab.dtype)
        at, separator = 0, vocab.encode(SEPARATOR)[0] if len(kept) > 1 else None
        for k, (path, name, source) in enumerate(kept):  # pass 2: the ids
            if k:
                ids[at:at + len(separator)] = separator
                at += len(separator)
            start = at
            for text in _texts(path, name, encoding, newline, Source(str(name), 0, "")):
                ids[at:at + len(text)] = vocab.encode(text)[0]
                at += len(text)
            if at - start != source.chars:
                raise RnnlmError(f"corpus {name} changed while it was read; try again")
            sources.append(source)
    name = (str(paths[0]) if len(paths) == 1 and len(sources) == 1
            else f"{len(sources)} files under {', '.join(str(p) for p in paths)}")
    name = "standard input" if name == "-" else name
    return Corpus(vocab, ids, sources, skipped, name)


def builtin():
    """The built-in corpus (data.builtin_text) as a Corpus: nothing recorded, no files."""
    vocab, ids = data.text_corpus(data.builtin_text())
    return Corpus(vocab, ids, [], {}, data.BUILTIN_NAME)


def check_same(recorded, corpus):
    """RnnlmError naming the first file that differs from what a run recorded."""
    files_then = recorded.get("files") or []
    files_now = [{"path": s.path, "size": s.size, "sha256": s.sha256} for s in corpus.sources]
    if not files_then:
        return  # a checkpoint from before corpora were recorded
    then, now = {f["path"]: f for f in files_then}, {f["path"]: f for f in files_now}
    for path in then:  # the run's files, in its order; then any new one
        if path not in now:
            raise RnnlmError(f"cannot resume: {path} is no longer in the corpus")
        if then[path]["sha256"] != now[path]["sha256"]:
            raise RnnlmError(f"cannot resume: {path} changed since the run started "
                             f"({then[path]['size']:,} bytes then, {now[path]['size']:,} now)")
    for path in now:
        if path not in then:
            raise RnnlmError(f"cannot resume: {path} was not in the run's corpus")
    if [f["path"] for f in files_then] != [f["path"] for f in files_now]:
        raise RnnlmError("cannot resume: the corpus's files are in another order")


def _texts(path, name, encoding, newline, source, digest=None):
    """The decoded text chunks of one file (data.TextReader), its byte-order mark dropped,
    its line ends made \\n where newline="lf". Records size, BOM and \\r\\n in source."""
    shown = "standard input" if str(name) == "-" else name
    reader = data.TextReader(encoding, f"corpus {shown}", newline, drop_bom=True,
                             on_bytes=None if digest is None else digest.update)
    with open(path, "rb") as f:
        yield from reader.read(f)
    source.size, source.bom, source.crlf = reader.size, reader.bom, reader.crlf


@contextlib.contextmanager
def _readable_twice(path):
    """path itself where it is a regular file; else (standard input as "-", a pipe, a
    FIFO, /dev/stdin) its bytes copied once into a temporary file, which goes with the
    context. Errors name path."""
    if str(path) != "-":
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise RnnlmError(f"cannot read corpus {path}: {e.strerror}") from None
        if stat.S_ISREG(mode):
            yield path
            return
    try:
        stream = contextlib.nullcontext(sys.stdin.buffer) if str(path) == "-" else open(path, "rb")
    except OSError as e:
        raise RnnlmError(f"cannot read corpus {path}: {e.strerror}") from None
    with stream as f, tempfile.NamedTemporaryFile(prefix="rnnlm-corpus-") as spool:
        try:
            copied = 0
            for chunk in iter(lambda: f.read(data.CHUNK_BYTES), b""):
                nul = chunk.find(b"\0")
                if nul >= 0:  # binary (/dev/zero, say): said now, not after the disk fills
                    raise RnnlmError(f"corpus {path} looks binary: NUL byte at byte "
                                     f"{copied + nul}")
                spool.write(chunk)
                copied += len(chunk)
            spool.flush()
        except OSError as e:
            raise RnnlmError(f"cannot copy corpus {path} to a temporary file: "
                             f"{e.strerror or e}") from None
        yield spool.name
