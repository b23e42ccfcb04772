"""Train the semantic tier's match verifier on the QQP dev pairs, measure it, export the shipped file.

Issue 9.  Data: ``../shared/data/qqp-pairs-dev.jsonl`` split by question text into the 5 folds of
``qqp_folds.py`` (the same folds as ``finetune_embedder.py``: fold 0 is its held-out fold), plus
rule-made pairs from each training fold's questions (``verifier_training.rule_pairs``: near
misses as non-duplicates, rewordings as duplicates; never from a held-out fold).  Embeddings from
an ONNX model directory (``--model``; default: the packaged model) run by the sidecar's own
embedder, so the features are the ones the sidecar computes.

Two modes:

- default (``--calibrate cv``): every kind measured by 5-fold cross-validation (each fold
  scored by a model trained on the other four); the shipped model is trained on all five folds
  and its precision -> cut table comes from the pooled out-of-fold scores;
- ``--calibrate fold0``: for an embedding fine-tuned on folds 1-4, the verifier is trained on
  folds 1-4 and calibrated and measured on fold 0 only (the one fold neither model saw).

Measured for each kind and for the plain cosine threshold: recall at precision >= 0.85 (and the
curve), near misses of held-out questions (``near_misses.py``, rules apart from the training
ones) refused and faithful rewrites served at the 0.85 cut, GPTCache's mock benchmark (the
nearest ``CANDIDATES`` origins by cosine, the best by the verifier served), and the verifier's time per lookup.  Every score
goes through the exported JSON and the sidecar's numpy inference.

    OMP_NUM_THREADS=1 python scripts/train_verifier.py [--model DIR] [--calibrate fold0]
        [--kinds trees,linear] [--ship trees] [--features lexical|base] [--out FILE] [--json RESULTS]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from near_misses import (  # noqa: E402
    digit_in_words, faithful_rewrite, faithful_swap, near_misses, other_spelling, without_apostrophes)
from qqp_folds import DEV_PAIRS, MOCK_PAIRS, REPO, load_rows, question_folds, recall_at_precision  # noqa: E402

from llmcache_sidecar.calibration import embed_texts  # noqa: E402
from llmcache_sidecar.default_model import model_files, sha256_of  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402
from llmcache_sidecar.verifier import Verifier, WordWeights, verifier_from_dict  # noqa: E402
from llmcache_sidecar.verifier_training import (  # noqa: E402
    Pair, fit_verifier, precision_table, rule_pairs, texts_of, verifier_document)

CACHE_DIR = Path("/tmp/llmcache-issue9")
TARGET = 0.85
CANDIDATES = 1
SHIPPED = REPO / "sidecar/llmcache_sidecar/default_model/verifier.json"


class Vectors:
    """text -> embedding of one model, kept in /tmp per model digest (texts + vectors), so a rerun
    embeds only texts it has not seen."""

    def __init__(self, model_dir: str | None, threads: int = 1) -> None:
        self.files = model_files(model_dir)
        self.sha256 = sha256_of(self.files.model)
        self.embedder = OnnxEmbedder(self.files, "cpu", threads=threads)
        self.dim = self.embedder.dim
        self.path = CACHE_DIR / f"store-{self.sha256[:16]}.npz"
        self.known: dict[str, np.ndarray] = {}
        if self.path.exists():
            stored = np.load(self.path)
            self.known.update(zip(stored["texts"].tolist(), stored["vectors"]))

    def add(self, texts: list[str]) -> None:
        todo = sorted({t for t in texts if t not in self.known})
        if not todo:
            return
        self.known.update(zip(todo, embed_texts(self.embedder, todo)))
        CACHE_DIR.mkdir(exist_ok=True)
        np.savez(self.path, texts=np.array(list(self.known)), vectors=np.stack(list(self.known.values())))


def fold_pairs(rows: list[dict], folds: np.ndarray, which: set[int]) -> list[Pair]:
    return [Pair(r["a"], r["b"], bool(r["duplicate"])) for r, f in zip(rows, folds) if f in which]


def questions_of(pairs: list[Pair]) -> list[str]:
    return sorted({t for t in texts_of(pairs)})


def as_verifier(kind: str, fitted, vectors: Vectors, weights: WordWeights | None, cuts=None, cosine_cuts=None,
                provenance=None) -> dict:
    filler = [[TARGET, 0.5, 0.0]]
    return verifier_document(kind, fitted, vectors.dim, cuts or filler, cosine_cuts or filler, vectors.sha256,
                             provenance or {}, weights)


def scores_of(verifier: Verifier | None, pairs: list[Pair], vectors: Vectors) -> np.ndarray:
    u = np.stack([vectors.known[p.stored] for p in pairs])
    v = np.stack([vectors.known[p.asked] for p in pairs])
    if verifier is None:
        return (u * v).sum(axis=1)
    return verifier.probability([p.stored for p in pairs], [p.asked for p in pairs], u, v)


def near_miss_pairs(questions: list[str]) -> list[tuple[str, Pair]]:
    made = [(kind, Pair(q, changed, False)) for q in questions for kind, changed in near_misses(q)]
    made += [("faithful", Pair(q, faithful_rewrite(q), True)) for q in questions]
    made += [("faithful swap", Pair(q, swapped, True)) for q in questions if (swapped := faithful_swap(q))]
    for kind, rewrite in (("faithful no apostrophes", without_apostrophes), ("faithful number in words", digit_in_words),
                          ("faithful other spelling", other_spelling)):
        made += [(kind, Pair(q, typed, True)) for q in questions if (typed := rewrite(q))]
    return made


def near_miss_outcome(verifier: Verifier | None, cut: float, made: list[tuple[str, Pair]], vectors: Vectors) -> dict:
    scores = scores_of(verifier, [p for _, p in made], vectors)
    out: dict[str, list[int]] = {}
    for (kind, pair), s in zip(made, scores):
        ok = (s >= cut) if pair.duplicate else (s < cut)
        out.setdefault(kind, [0, 0])
        out[kind][0] += int(ok)
        out[kind][1] += 1
    near_kinds = [v for k, v in out.items() if not k.startswith("faithful")]
    near = [sum(v[0] for v in near_kinds), sum(v[1] for v in near_kinds)]
    result = {kind: {"share": round(ok / n, 4), "of": n} for kind, (ok, n) in sorted(out.items())}
    result["all_near_misses_refused"] = {"share": round(near[0] / max(near[1], 1), 4), "of": near[1]}
    return result


def mock_best(verifier: Verifier | None, vectors: Vectors) -> tuple[np.ndarray, np.ndarray]:
    """GPTCache's benchmark: every origin stored, every similar asked; the CANDIDATES nearest origins by cosine
    re-ranked by the verifier (cosine alone when None).  Per asked question: the chosen origin's
    score, and whether it is the question's own origin."""
    rows = json.loads(MOCK_PAIRS.read_text())
    origins, similars = [r["origin"] for r in rows], [r["similar"] for r in rows]
    vectors.add(origins + similars)
    stored = np.stack([vectors.known[t] for t in origins])
    asked = np.stack([vectors.known[t] for t in similars])
    cos = asked @ stored.T
    top = np.argsort(-cos, axis=1)[:, :CANDIDATES]
    best, own = np.empty(len(rows)), np.empty(len(rows), dtype=bool)
    for i, candidates in enumerate(top):
        if verifier is None:
            chosen, best[i] = candidates[0], cos[i, candidates[0]]
        else:
            p = verifier.probability([origins[c] for c in candidates], [similars[i]] * len(candidates),
                                     stored[candidates], np.repeat(asked[i:i + 1], len(candidates), axis=0))
            chosen, best[i] = candidates[int(p.argmax())], float(p.max())
        own[i] = chosen == i
    return best, own


def mock_outcome(best: np.ndarray, own: np.ndarray, cut: float) -> dict:
    hit = best >= cut
    right, wrong = int((hit & own).sum()), int((hit & ~own).sum())
    return {"cut": round(float(cut), 4), "right": right, "wrong": wrong, "miss": len(best) - right - wrong,
            "wrong_share_of_hits": round(wrong / max(right + wrong, 1), 4)}


def mock_sweep(best: np.ndarray, own: np.ndarray, table: list[list[float]]) -> list[dict]:
    """The mock benchmark at the cut of every target precision of ``table``."""
    return [{"target": p, **mock_outcome(best, own, cut)} for p, cut, _ in table]


def latency(verifier: Verifier, vectors: Vectors, pairs: list[Pair], rounds: int = 300) -> dict:
    """Seconds to score one lookup (CANDIDATES candidates: features + model), median and p99."""
    times = []
    for i in range(rounds):
        batch = [pairs[(i * CANDIDATES + j) % len(pairs)] for j in range(CANDIDATES)]
        u = np.stack([vectors.known[p.stored] for p in batch])
        v = np.stack([vectors.known[p.asked] for p in batch])
        started = time.perf_counter()
        verifier.probability([p.stored for p in batch], [p.asked for p in batch], u, v)
        times.append(time.perf_counter() - started)
    return {"p50_ms": round(1000 * float(np.median(times)), 3), "p99_ms": round(1000 * float(np.quantile(times, 0.99)), 3)}


def curve(scores: np.ndarray, y: np.ndarray) -> dict:
    return {f"{p:.2f}": round(recall_at_precision(scores, y, p)[0], 4) for p in (0.75, 0.80, 0.85, 0.90, 0.95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="ONNX model directory (default: the packaged model)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for embedding (0: one per core)")
    parser.add_argument("--calibrate", choices=["cv", "fold0"], default="cv")
    parser.add_argument("--kinds", default="trees,linear")
    parser.add_argument("--ship", default="trees", help="the kind written to --out")
    parser.add_argument("--per-kind", type=int, default=1500, help="rule-made pairs per kind and training set")
    parser.add_argument("--features", choices=["lexical", "base"], default="lexical",
                        help="lexical (default, the shipped file): half trees over the first 11 pair features with "
                             "|u-v|, u*v, half trees over those and the lexical and word-weight ones; base: the first "
                             "half alone (the file shipped before 2026-12-04; llmcache tune --features base)")
    parser.add_argument("--out", type=Path, default=SHIPPED, help="where the shipped verifier file is written")
    parser.add_argument("--no-out", action="store_true", help="measure only")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--scores", type=Path, help="also write the held-out scores (and GPTCache mock scores) here "
                                                    "(npz, for the plot)")
    args = parser.parse_args()

    rows = load_rows()
    folds = question_folds(rows)
    lexical = args.features == "lexical"
    vectors = Vectors(args.model, args.threads)
    everything = fold_pairs(rows, folds, set(range(5)))
    held_out_folds = [0] if args.calibrate == "fold0" else [0, 1, 2, 3, 4]
    made_for: dict[int, list[Pair]] = {}
    for k in range(5):  # rule-made pairs from each fold's own questions
        made_for[k] = [p for _, p in rule_pairs(questions_of(fold_pairs(rows, folds, {k})), args.per_kind // 4, seed=k)]
    near_sets = {k: near_miss_pairs(sorted({r["a"] for r, f in zip(rows, folds) if f == k})) for k in held_out_folds}
    vectors.add(list(texts_of(everything)) + [t for m in made_for.values() for t in texts_of(m)]
                + [t for s in near_sets.values() for _, p in s for t in (p.stored, p.asked)])

    held = fold_pairs(rows, folds, set(held_out_folds))
    y_held = np.array([p.duplicate for p in held])
    held_fold = folds[np.isin(folds, held_out_folds)]
    results: dict = {"model": vectors.files.name, "model_sha256": vectors.sha256, "calibrate": args.calibrate,
                     "features": args.features, "held_out_pairs": len(held), "rule_pairs_per_fold": {k: len(m) for k, m in made_for.items()},
                     "methods": {}}
    cosine_scores = scores_of(None, held, vectors)
    cosine_cuts = precision_table(cosine_scores, y_held)
    cosine_cut = recall_at_precision(cosine_scores, y_held, TARGET)[1]
    cosine_mock = mock_best(None, vectors)
    results["methods"]["cosine"] = {
        "recall_at_p85": round(recall_at_precision(cosine_scores, y_held, TARGET)[0], 4), "cut": round(cosine_cut, 4),
        "per_fold": [round(recall_at_precision(cosine_scores[held_fold == k], y_held[held_fold == k], TARGET)[0], 4)
                     for k in held_out_folds],
        "curve": curve(cosine_scores, y_held),
        "near_misses": {k: near_miss_outcome(None, cosine_cut, near_sets[k], vectors) for k in held_out_folds},
        "gptcache_mock": mock_outcome(*cosine_mock, cosine_cut),
        "gptcache_mock_sweep": mock_sweep(*cosine_mock, cosine_cuts)}
    saved = {"labels": y_held, "folds": held_fold, "cosine": cosine_scores}
    print("cosine", json.dumps(results["methods"]["cosine"]), flush=True)
    shipped_doc = None
    for kind in args.kinds.split(","):
        started = time.monotonic()
        fold_verifiers: dict[int, Verifier] = {}
        scores = np.empty(len(held))
        for k in held_out_folds:
            train_folds = set(range(5)) - {k}
            fitted, weights = fit_verifier(
                kind, [(fold_pairs(rows, folds, {f}), made_for[f]) for f in sorted(train_folds)], vectors.known, lexical)
            fold_verifiers[k] = verifier_from_dict(as_verifier(kind, fitted, vectors, weights))
            scores[held_fold == k] = scores_of(fold_verifiers[k], fold_pairs(rows, folds, {k}), vectors)
        cuts = precision_table(scores, y_held)
        recall, cut = recall_at_precision(scores, y_held, TARGET)
        method = {"recall_at_p85": round(recall, 4), "cut": round(cut, 4),
                  "per_fold": [round(recall_at_precision(scores[held_fold == k], y_held[held_fold == k], TARGET)[0], 4)
                               for k in held_out_folds],
                  "curve": curve(scores, y_held),
                  "near_misses": {k: near_miss_outcome(fold_verifiers[k], cut, near_sets[k], vectors)
                                  for k in held_out_folds}}
        if args.calibrate == "cv":  # the shipped model: all five folds, cut table from the out-of-fold scores
            fitted, weights = fit_verifier(
                kind, [(fold_pairs(rows, folds, {f}), made_for[f]) for f in range(5)], vectors.known, lexical)
        provenance = {
            "command": "python scripts/train_verifier.py " + " ".join(sys.argv[1:]),
            "data": str(DEV_PAIRS.name), "data_sha256": sha256_of(DEV_PAIRS),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
            "embedding_model": vectors.files.name, "kind": kind, "pair_features": args.features,
            **({"word_weights": "IDF over the training questions; each training fold's pairs weighed by the other "
                                "folds' questions (verifier_training.cross_fitted_features)",
                "model_choice": "half the first layout's trees (11 pair features + |u-v|, u*v), half trees over "
                                "the 30 pair features only (5 random states averaged): verifier_training.TreeEnsemble"}
               if lexical and kind == "trees" else {}),
            "trained_on": "QQP dev folds 0-4 + rule-made pairs" if args.calibrate == "cv"
            else "QQP dev folds 1-4 + rule-made pairs",
            "calibrated_on": "out-of-fold scores of 5-fold question-split CV" if args.calibrate == "cv"
            else "QQP dev fold 0 (held out from the verifier and the embedding)",
            "held_out_recall_at_precision_0.85": round(recall, 4),
            "held_out_cosine_recall_at_precision_0.85": results["methods"]["cosine"]["recall_at_p85"]}
        doc = as_verifier(kind, fitted, vectors, weights, cuts, cosine_cuts, provenance)
        shipped = verifier_from_dict(doc)
        best, own = mock_best(shipped, vectors)
        method["gptcache_mock"] = mock_outcome(best, own, shipped.cut_for(TARGET))
        method["gptcache_mock_sweep"] = mock_sweep(best, own, cuts)
        saved[kind] = scores
        saved[f"mock_{kind}"], saved["mock_own"] = best, own  # the nearest origin's score (the shipped model)
        method["latency_per_lookup"] = latency(shipped, vectors, held)
        method["seconds"] = round(time.monotonic() - started, 1)
        results["methods"][kind] = method
        print(kind, json.dumps(method), flush=True)
        if kind == args.ship:
            shipped_doc = doc
    if shipped_doc is not None and not args.no_out:
        args.out.write_text(json.dumps(shipped_doc, separators=(",", ":")) + "\n")
        print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.scores:
        np.savez(args.scores, **saved)


if __name__ == "__main__":
    main()
