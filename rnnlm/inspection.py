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


def write_page(model, textfile, out_path, chars=5000, units=8, encoding="utf-8",
               skip_unknown=False):
    """Analyse textfile with a loaded model (rnnlm.load) and write the page to out_path:
    never over a file that is not an earlier inspect page, nor over the text or the
    checkpoint. Returns (the analysis, the characters skipped as unknown)."""
    outputs.check_target(out_path, "inspect page", lambda p: MARK.encode() in outputs.head(p),
                         inputs=[textfile, model.checkpoint.path])
    ids, skipped = encode_file(textfile, model.vocab, encoding, skip_unknown)
    found = analyse(model.params, model.spec, model.vocab, ids, chars, units, model.engine)
    title = f"rnnlm inspect: {Path(textfile).name}"
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
    return PAGE.replace("%TITLE%", html.escape(title)).replace("%DATA%", data)


MARK = '<meta name="generator" content="rnnlm inspect">'  # how rnnlm knows its own page

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
""" + MARK + """
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>%TITLE%</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .3em; } h2 { font-size: 1em; margin: 1.2em 0 .4em; }
.text { font: 13px/1.5 ui-monospace, monospace; white-space: pre-wrap; border: 1px solid #ccc;
        padding: .6em; max-height: 24em; overflow: auto; }
.text span:focus { outline: 2px solid #1565c0; }
#tip { position: fixed; display: none; background: #fffde7; border: 1px solid #999;
       padding: .4em .6em; font: 12px ui-monospace, monospace; pointer-events: none;
       box-shadow: 0 2px 6px rgba(0,0,0,.2); z-index: 10; }
.legend { display: inline-block; width: 16em; height: .9em; vertical-align: middle;
          border: 1px solid #aaa; }
table { border-collapse: collapse; } td, th { padding: .15em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
#units button { margin: .15em; font-size: 12px; }
#units button[aria-pressed="true"] { background: #1565c0; color: white; }
</style></head><body>
<h1>%TITLE%</h1>
<p id="model"></p>
<h2>Surprisal: -log p of each character, in nats</h2>
<p>0 <span class="legend" id="legend-s"></span> <span id="smax"></span> nats or more.
Hover over a character, or focus it with Tab, to see the five characters the model found
likeliest there.</p>
<div class="text" id="surprisal"></div>
<h2>Hidden units</h2>
<p>Each unit is scored by the largest correlation, over the characters shown, between its
activation after reading a character and a feature of that character's place (inside quotes
or brackets, position in the line, start or end of a word, letter, space, newline, after
punctuation). <label>Layer: <select id="group"></select></label></p>
<div id="units"></div>
<p>-1 <span class="legend" id="legend-u"></span> +1 (a unit of the cell state relative to its
largest magnitude on the text shown)</p>
<div class="text" id="activations"></div>
<h2>Summary over the whole text</h2>
<table id="summary"><tr><th>characters</th><th>count</th><th>nats/char</th><th>bits/char</th></tr></table>
<div id="tip" role="tooltip"></div>
<script type="application/json" id="data">%DATA%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const SMAX = 8;
function heat(x) {  // 0..1 -> white..red
  const t = Math.max(0, Math.min(1, x));
  return `rgb(255,${Math.round(255 - 190 * t)},${Math.round(255 - 215 * t)})`;
}
function diverging(a) {  // -1..1 -> blue..white..orange
  const t = Math.max(-1, Math.min(1, a));
  return t >= 0 ? `rgb(255,${Math.round(255 - 120 * t)},${Math.round(255 - 230 * t)})`
                : `rgb(${Math.round(255 + 200 * t)},${Math.round(255 + 120 * t)},255)`;
}
function shown(c) { return c === "\\n" ? "\\\\n" : c === " " ? "\\u2423" : c === "\\t" ? "\\\\t" : c; }
function spans(id) {
  const box = document.getElementById(id), out = [];
  for (const c of D.text) {
    const s = document.createElement("span");
    s.textContent = c;
    box.appendChild(s);
    out.push(s);
  }
  return out;
}
document.getElementById("model").textContent = D.model;
document.getElementById("smax").textContent = SMAX;
document.getElementById("legend-s").style.background = `linear-gradient(to right, ${heat(0)}, ${heat(1)})`;
document.getElementById("legend-u").style.background = `linear-gradient(to right, ${diverging(-1)}, ${diverging(0)}, ${diverging(1)})`;
const S = spans("surprisal"), tip = document.getElementById("tip");
S.forEach((s, i) => {
  s.tabIndex = 0;
  s.dataset.i = i;
  const p = D.predictions[i];
  if (p) s.style.background = heat(p.nats / SMAX);
  const show = () => {
    const r = s.getBoundingClientRect();
    tip.innerHTML = "";
    const head = document.createElement("div");
    head.textContent = p ? `actual ${shown(D.text[i])}: p ${p.p.toFixed(4)}, ${p.nats.toFixed(2)} nats`
                         : "the first character: nothing predicts it";
    tip.appendChild(head);
    if (p) for (const [c, q] of p.top) {
      const row = document.createElement("div");
      row.className = "cand";
      row.textContent = `${shown(c)}  ${q.toFixed(4)}`;
      tip.appendChild(row);
    }
    tip.style.left = `${Math.min(r.left, window.innerWidth - 220)}px`;
    tip.style.top = `${r.bottom + 4}px`;
    tip.style.display = "block";
  };
  s.addEventListener("mouseenter", show);
  s.addEventListener("focus", show);
  s.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  s.addEventListener("blur", () => { tip.style.display = "none"; });
});
const A = spans("activations"), select = document.getElementById("group"),
      units = document.getElementById("units");
function shade(unit) {
  A.forEach((s, i) => { s.style.background = diverging(unit.acts[i]); });
}
function showGroup(g) {
  units.innerHTML = "";
  D.groups[g].units.forEach((u, k) => {
    const b = document.createElement("button");
    b.textContent = `unit ${u.unit}: ${u.score.toFixed(2)} ${u.feature}`;
    b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", () => {
      units.querySelectorAll("button").forEach(x => x.setAttribute("aria-pressed", "false"));
      b.setAttribute("aria-pressed", "true");
      shade(u);
    });
    units.appendChild(b);
    if (k === 0) b.click();
  });
}
D.groups.forEach((g, k) => {
  const o = document.createElement("option");
  o.value = k;
  o.textContent = g.name;
  select.appendChild(o);
});
select.addEventListener("change", () => showGroup(+select.value));
showGroup(0);
const table = document.getElementById("summary");
function row(name, count, nats) {
  const tr = document.createElement("tr");
  for (const v of [name, count.toLocaleString("en"), nats.toFixed(4), (nats / Math.LN2).toFixed(4)]) {
    const td = document.createElement("td");
    td.textContent = v;
    tr.appendChild(td);
  }
  table.appendChild(tr);
}
row("all", D.summary.characters - 1, D.summary.nats_per_char);
for (const [name, c] of Object.entries(D.summary.classes)) row(name, c.count, c.nats_per_char);
</script></body></html>
"""
