"""Fine-tune all-MiniLM-L6-v2 on the QQP dev pairs of the training folds; measure the held-out fold.

Issue 9, step 2: does a contrastive fine-tune move recall at precision 0.85 on questions the
model never saw?  Trains on every fold but ``--fold`` (split by question text, see
``qqp_folds.py``), tests on that fold, and compares with the original model run the same way
(sentence-transformers, fp32).  Loss per batch of labelled pairs: CoSENT over the pairs' cosines
(every duplicate pair should score above every non-duplicate pair: exactly what one global
threshold needs) plus in-batch multiple-negatives ranking for the duplicates (the asked question's
own stored question must be nearer than the other questions of the batch, hard negatives
included: what the cache's nearest-neighbour lookup needs).  One core (``--threads``), time-boxed.

    OMP_NUM_THREADS=1 python scripts/finetune_embedder.py --fold 0 --epochs 1 [--save DIR]

Prints a JSON summary (and writes it to ``--out``); the model is only saved with ``--save``
(outside the repository: nothing here is shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import MOCK_PAIRS, load_rows, precision_recall_at, question_folds, recall_at_precision  # noqa: E402

from llmcache_sidecar.embedding_tuning import base_model_path, fine_tune  # noqa: E402


def embed(model, texts: list[str]) -> np.ndarray:
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


def pair_cos(model, rows: list[dict]) -> np.ndarray:
    v = embed(model, [r["a"] for r in rows] + [r["b"] for r in rows])
    return (v[: len(rows)] * v[len(rows):]).sum(axis=1)


def mock_outcome(model, threshold: float) -> dict:
    rows = json.loads(MOCK_PAIRS.read_text())
    stored, asked = embed(model, [r["origin"] for r in rows]), embed(model, [r["similar"] for r in rows])
    scores = asked @ stored.T
    nearest = scores.argmax(axis=1)
    best = scores[np.arange(len(rows)), nearest]
    hit, own = best >= threshold, nearest == np.arange(len(rows))
    return {"threshold": round(threshold, 4), "right": int((hit & own).sum()), "wrong": int((hit & ~own).sum()),
            "miss": int((~hit).sum())}


def evaluate(model, train: list[dict], test: list[dict]) -> dict:
    y_train = np.array([r["duplicate"] for r in train])
    y_test = np.array([r["duplicate"] for r in test])
    cos_train, cos_test = pair_cos(model, train), pair_cos(model, test)
    _, t_train = recall_at_precision(cos_train, y_train)
    recall_best, t_best = recall_at_precision(cos_test, y_test)
    p_transfer, r_transfer = precision_recall_at(cos_test, y_test, t_train)
    return {"recall_at_p85_heldout": round(recall_best, 4), "threshold_heldout": round(t_best, 4),
            "threshold_from_train": round(t_train, 4),
            "heldout_at_train_threshold": {"precision": round(p_transfer, 4), "recall": round(r_transfer, 4)},
            "gptcache_mock_at_heldout_threshold": mock_outcome(model, t_best)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core)")
    parser.add_argument("--max-seq-length", type=int, default=256,
                        help="truncate training inputs (tokens); evaluation always uses 256")
    parser.add_argument("--save", type=Path, help="save the fine-tuned model here (outside the repository)")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rows = load_rows()
    folds = question_folds(rows)
    train_rows = [r for r, f in zip(rows, folds) if f != args.fold]
    test_rows = [r for r, f in zip(rows, folds) if f == args.fold]
    model = SentenceTransformer(base_model_path(), device="cpu")
    summary = {"fold": args.fold, "train_pairs": len(train_rows), "test_pairs": len(test_rows),
               "base": evaluate(model, train_rows, test_rows)}
    print(json.dumps(summary["base"]), file=sys.stderr, flush=True)
    summary["training"] = fine_tune(model, [(r["a"], r["b"], bool(r["duplicate"])) for r in train_rows],
                                    epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                    max_minutes=args.max_minutes, seed=args.seed, max_seq_length=args.max_seq_length)
    summary["finetuned"] = evaluate(model, train_rows, test_rows)
    summary["args"] = {k: str(v) for k, v in vars(args).items()}
    if args.save:
        model.save(str(args.save))
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
