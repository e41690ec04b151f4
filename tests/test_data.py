import numpy as np
import pytest

from rnnlm import RnnlmError
from rnnlm.io import data

from conftest import read_corpus

UNICODE = "床前明月光，疑是地上霜。🙂 naïve café 👩‍👩‍👧\n"


def test_vocab_is_sorted_code_points_and_round_trips_unicode():
    vocab, ids = data.text_corpus(UNICODE * 3)
    assert vocab.chars == "".join(sorted(set(UNICODE)))
    assert list(vocab.chars) == sorted(vocab.chars)
    assert vocab.decode(ids) == UNICODE * 3
    assert "🙂" in vocab.chars and "床" in vocab.chars  # code points, not bytes


@pytest.mark.parametrize("size,dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                        (70000, np.uint32)])
def test_ids_use_the_smallest_unsigned_dtype(size, dtype):
    chars = "".join(chr(0x20000 + i) for i in range(size))
    vocab, ids = data.text_corpus(chars)
    assert ids.dtype == dtype
    assert vocab.decode(ids) == chars


def test_encode_names_unknown_characters_or_skips_them():
    vocab, _ = data.text_corpus("abc")
    with pytest.raises(RnnlmError, match="'x'.*'z'|'z'.*'x'"):
        vocab.encode("abxcz")
    ids, skipped = vocab.encode("abxcz", skip_unknown=True)
    assert vocab.decode(ids) == "abc" and skipped == 2


def test_read_corpus_in_chunks_matches_reading_at_once(tmp_path, monkeypatch):
    text = UNICODE * 50
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(data, "CHUNK_BYTES", 7)  # splits multi-byte characters
    vocab, ids = read_corpus(path)
    assert vocab.decode(ids) == text
    assert vocab.chars == data.text_corpus(text)[0].chars


def test_other_encodings(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café crème".encode("latin-1"))
    with pytest.raises(RnnlmError, match=r"not valid utf-8: undecodable byte at offset 3"):
        read_corpus(path)
    vocab, ids = read_corpus(path, "latin-1")
    assert vocab.decode(ids) == "café crème"
    with pytest.raises(RnnlmError, match="unknown encoding 'klingon'"):
        read_corpus(path, "klingon")


def test_undecodable_byte_offset_is_exact_across_chunks(tmp_path, monkeypatch):
    path = tmp_path / "bad.txt"
    good = "é" * 10  # 20 bytes
    path.write_bytes(good.encode() + b"\xff" + b"tail")
    monkeypatch.setattr(data, "CHUNK_BYTES", 3)
    with pytest.raises(RnnlmError, match="offset 20 "):
        read_corpus(path)


@pytest.mark.parametrize("make,message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.write_bytes(b""), p)[1], "is empty"),
    (lambda p: (p.mkdir(), p)[1], "holds no text"),  # an empty directory
    (lambda p: (p.write_bytes(b"PK\x03\x04\x00\x00binary"), p)[1], "looks binary: NUL"),
    (lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n"), p)[1], "undecodable byte at offset 0"),
])
def test_bad_corpora_are_named(tmp_path, make, message):
    path = make(tmp_path / "corpus.txt")
    with pytest.raises(RnnlmError, match=message) as err:
        read_corpus(path)
    assert "corpus.txt" in str(err.value)


def test_split_keeps_the_last_fraction_contiguous():
    ids = np.arange(100, dtype=np.uint8)
    train, val = data.split(ids, 0.1)
    assert list(train) == list(range(90)) and list(val) == list(range(90, 100))
    train, val = data.split(ids, 0.0)
    assert len(train) == 100 and len(val) == 0


def test_each_pass_cuts_its_windows_elsewhere_and_gives_up_one_window_for_it():
    ids = (np.arange(1000) % 251).astype(np.uint8)  # 4 streams of 250
    fixed, shifted = data.Streams(ids, 4, 10), data.Streams(ids, 4, 10, shifted=True)
    assert shifted.windows == fixed.windows - 1
    assert [shifted.offset(e) for e in range(4)] == [0, 3, 6, 9]  # 23 mod 10 apart
    for epoch in range(12):  # a pass is contiguous, from its offset, in every stream
        xs = [shifted.window(k, epoch)[0] for k in range(shifted.windows)]
        start = shifted.offset(epoch)
        np.testing.assert_array_equal(np.concatenate(xs, axis=1),
                                      fixed.data[:, start:start + shifted.windows * 10])
        np.testing.assert_array_equal(shifted.window(0, epoch)[1][:, :-1],
                                      shifted.window(0, epoch)[0][:, 1:])
    assert {shifted.offset(e) for e in range(10)} == set(range(10))  # every offset in turn
    assert fixed.window(3, epoch=5)[0].tolist() == fixed.window(3)[0].tolist()


def test_a_text_of_one_window_a_stream_is_never_shifted():
    streams = data.Streams(np.zeros(4 * 15, np.uint8), 4, 10, shifted=True)
    assert (streams.windows, streams.shifted, streams.offset(3)) == (1, False, 0)


def test_streams_windows_are_shifted_by_one_and_contiguous_per_stream():
    ids = np.arange(1000) % 251
    s = data.Streams(ids.astype(np.uint8), batch=4, seq_len=10)
    assert s.windows == (250 - 1) // 10
    x0, y0 = s.window(0)
    x1, _ = s.window(1)
    assert x0.shape == (4, 10)
    np.testing.assert_array_equal(y0[:, :-1], x0[:, 1:])
    np.testing.assert_array_equal(x1[:, 0], y0[:, -1])  # stream b continues in window 1
    np.testing.assert_array_equal(x0[:, 0], ids[[0, 250, 500, 750]])


def test_streams_too_short_says_the_minimum():
    with pytest.raises(RnnlmError, match="at least 36"):
        data.Streams(np.zeros(30, np.uint8), batch=4, seq_len=8)
    data.Streams(np.zeros(36, np.uint8), batch=4, seq_len=8)


def test_min_corpus_length_is_exact():
    n = data.min_corpus_length(4, 8, 0.1)
    assert len(data.split(np.zeros(n), 0.1)[0]) >= 36
    assert len(data.split(np.zeros(n - 1), 0.1)[0]) < 36


@pytest.mark.parametrize("n,batch,seq_len", [(2, 4, 3), (101, 4, 7), (1000, 32, 64), (33, 8, 4)])
def test_eval_windows_predict_every_character_once(n, batch, seq_len):
    ids = (np.arange(n) * 7 % 13).astype(np.uint8)
    seen = []
    streams = None
    for x, y, mask in data.eval_windows(ids, batch, seq_len):
        assert x.shape == y.shape == mask.shape and x.shape[1] <= seq_len
        streams = x.shape[0] if streams is None else streams
        assert x.shape[0] == streams
        seen += list(zip(x[mask], y[mask]))
    assert sorted(seen) == sorted(zip(ids[:-1], ids[1:]))


def test_builtin_corpus_is_deterministic_and_large_enough():
    text = data.builtin_text()
    assert text == data.builtin_text()
    assert len(text) == data.BUILTIN_CHARS
    assert "def " in text and "import" in text
