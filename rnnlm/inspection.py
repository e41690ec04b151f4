"""What a model sees in a text (rnnlm inspect): one self-contained HTML page.

The page shows the text coloured by the model's surprisal at each character, -log p in
nats, with the five characters it found likeliest there; and the hidden units whose
activations are the most structured on this text, each shading the same text, after
"Visualizing and Understanding Recurrent Networks" (Karpathy, Johnson and Fei-Fei, 2015).

Which units: every unit of every layer (the LSTM's cell state too) is scored by the
largest absolute Pearson correlation, over the characters shown, between its activation
after reading a character and one of FEATURES of that character's place in the text; the
K best of each layer and kind are on the page, each with its score and feature.

The losses and the summary cover the whole text, in batched streams; the page shows its
first `chars` characters, read by one stream, character by character.
"""
import html
import json
import math
from importlib import resources

import numpy as np

from pathlib import Path

from rnnlm import engines
from rnnlm.io import outputs
from rnnlm.io.data import encode_file
from rnnlm.evaluate import per_character

CLASSES = {  # the kinds of character the summary breaks the loss down by
    "letters": str.isalpha, "spaces": lambda c: c == " " or c == "\t",
    "newlines": lambda c: c == "\n", "digits": str.isdigit,
}


def char_class(ch):
    for name, test in CLASSES.items():
        if test(ch):
            return name
    return "punctuation and other"


def features(text):
    """{name: (len(text),) float array}: simple facts about each character's place."""
    n = len(text)
    out = {name: np.zeros(n) for name in
           ("inside quotes", "inside brackets", "position in line", "start of a word",
            "end of a word", "letter", "space", "newline", "after punctuation")}
    quoted, depth, column = False, 0, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        depth = depth + 1 if ch in "([{" else max(depth - 1, 0) if ch in ")]}" else depth
        out["inside quotes"][i] = quoted
        out["inside brackets"][i] = depth > 0
        column = 0 if ch == "\n" else column + 1
        out["position in line"][i] = column
        prev, nxt = text[i - 1] if i else "\n", text[i + 1] if i + 1 < n else "\n"
        out["start of a word"][i] = ch.isalpha() and not prev.isalpha()
        out["end of a word"][i] = ch.isalpha() and not nxt.isalpha()
        out["letter"][i], out["space"][i], out["newline"][i] = ch.isalpha(), ch == " ", ch == "\n"
        out["after punctuation"][i] = char_class(prev) == "punctuation and other"
    return out


def best_units(acts, feats, k):
    """The k units (columns of acts, (N, H)) whose activation correlates best with a
    feature: [(unit, score, feature)], best first."""
    a = acts - acts.mean(axis=0)
    a_norm = np.sqrt((a * a).sum(axis=0))
    scores, which = np.zeros(acts.shape[1]), [""] * acts.shape[1]
    for name, f in feats.items():
        f = f - f.mean()
        f_norm = math.sqrt(float(f @ f))
        if f_norm == 0:
            continue
        corr = np.abs(f @ a) / np.maximum(a_norm * f_norm, 1e-12)
        for j in np.nonzero(corr > scores)[0]:
            scores[j], which[j] = corr[j], name
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(j), float(scores[j]), which[j]) for j in order]


def write_page(model, textfile, out_path, chars=5000, units=8, encoding=None,
               skip_unknown=False):
    """Analyse textfile with a loaded model (rnnlm.load) and write the page to out_path:
    never over a file that is not an earlier inspect page, nor over the text or the
    checkpoint. Returns (the analysis, the characters skipped as unknown)."""
    out_path = outputs.check_target(out_path, "inspect page",
                                    lambda p: MARK.encode() in outputs.head(p),
                                    inputs=[textfile, model.checkpoint.path])
    ids, skipped = encode_file(textfile, model.vocab, encoding or model.checkpoint.encoding,
                                 skip_unknown)
    found = analyse(model.params, model.spec, model.vocab, ids, chars, units, model.engine)
    title = f"rnnlm inspect: {outputs.readable_name(Path(textfile).name)}"
    outputs.write_atomically(out_path, page(found, title).encode("utf-8"))
    return found, skipped


def analyse(params, spec, vocab, ids, chars=5000, units=8, engine="fast", top=5):
    """Everything the page shows, as plain data."""
    losses = per_character(params, spec, ids, engine=engine)  # the whole text
    text_ids = ids[:max(min(chars, len(ids)), 2)]
    shown = vocab.decode(text_ids)
    targets = vocab.decode(ids[1:])
    summary = {"characters": len(ids), "nats_per_char": float(losses.mean()),
               "classes": {}}
    kinds = np.array([char_class(c) for c in targets]) if len(targets) else np.array([])
    for name in list(CLASSES) + ["punctuation and other"]:
        where = kinds == name
        if where.any():
            summary["classes"][name] = {"count": int(where.sum()),
                                        "nats_per_char": float(losses[where].mean())}
    step = engines.get(engine).stepper(params, spec)  # one stream, its state read each step
    state_kinds = spec.facts.states  # h, and the LSTM's c
    acts = {(l, k): np.zeros((len(text_ids), spec.hidden), np.float32)
            for l in range(spec.layers) for k in range(len(state_kinds))}
    predictions = [None]  # nothing predicts the first character
    for i, char_id in enumerate(text_ids):
        logits = step(char_id).astype(np.float64)
        state = step.state
        for (l, k), a in acts.items():
            a[i] = state[l][k][0]
        if i + 1 < len(text_ids):
            p = np.exp(logits - logits.max())
            p /= p.sum()
            likeliest = np.argsort(-p, kind="stable")[:top]
            true = int(text_ids[i + 1])
            predictions.append({"top": [[vocab.chars[j], round(float(p[j]), 4)]
                                        for j in likeliest],
                                "p": float(p[true]), "nats": float(-math.log(max(p[true], 1e-300)))})
    feats = features(shown)
    groups = []
    for (l, k), a in acts.items():
        # The outputs lie in (-1, 1); the cell state is unbounded, and each unit's is shaded
        # relative to its own largest magnitude, or a few large units would wash out the rest.
        output = k == 0
        scale = np.ones(spec.hidden, np.float32) if output else np.abs(a).max(axis=0)
        groups.append({"name": f"layer {l + 1} {'output' if output else 'cell state'}",
                       "units": [{"unit": j, "score": round(score, 3), "feature": feature,
                                  "acts": np.round(a[:, j] / (scale[j] or 1.0), 2).tolist()}
                                 for j, score, feature in best_units(a, feats, units)]})
    return {"text": shown, "predictions": predictions, "summary": summary, "groups": groups,
            "model": f"{spec.name}, vocabulary {spec.vocab_size}"}


def page(analysis, title="rnnlm inspect"):
    """The analysis as one HTML page: inline CSS and JavaScript, nothing from the network."""
    data = json.dumps(analysis, ensure_ascii=False, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # keeps a "</script>" in the text from ending the block
    template = resources.files("rnnlm").joinpath("inspection.html").read_text(encoding="utf-8")
    return (template.replace("%MARK%", MARK).replace("%TITLE%", html.escape(title))
            .replace("%DATA%", data))


MARK = '<meta name="generator" content="rnnlm inspect">'  # how rnnlm knows its own page

