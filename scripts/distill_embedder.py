"""Distil all-MiniLM-L6-v2 towards all-mpnet-base-v2's cosines; plain-cosine recall on fold 0.

Issue 9: can the default-sized model learn the larger model's notion of "same question" without
labels?  For batches of training-fold QQP pairs (folds 1-4, labels unused), the student's cosine
matrices (stored x asked, stored x stored) are pulled towards the teacher's; the pair's own cosine
weighs 4x.  The teacher's vectors are the embedding cache that ``train_verifier.py --model DIR``
writes (``/tmp/llmcache-issue9/store-<sha>.npz``, one text per model run).  Prints fold 0's
recall at precision 0.85 and 0.80 by plain cosine for the teacher, the student before, and the
student after each epoch; ``--save`` keeps the model (sentence-transformers directory) for
``embedding_tuning.export_onnx`` and ``train_verifier.py --model DIR --calibrate fold0``.

    python scripts/distill_embedder.py --teacher-store /tmp/llmcache-issue9/store-8b32907cab872e96.npz \\
        --epochs 3 --save /tmp/distilled
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import load_rows, question_folds, recall_at_precision  # noqa: E402

from llmcache_sidecar.embedding_tuning import EVAL_MAX_TOKENS, base_model_path  # noqa: E402


def fold0_recalls(cosines: np.ndarray, labels: np.ndarray) -> str:
    return " / ".join(f"{recall_at_precision(cosines, labels, p)[0]:.3f}" for p in (0.85, 0.80))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-store", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rows = load_rows()
    folds = question_folds(rows)
    store = np.load(args.teacher_store)
    teacher = dict(zip(store["texts"].tolist(), store["vectors"]))
    train = [r for r, f in zip(rows, folds) if f != 0 and r["a"] in teacher and r["b"] in teacher]
    test = [r for r, f in zip(rows, folds) if f == 0]
    labels = np.array([r["duplicate"] for r in test])
    model = SentenceTransformer(base_model_path(), device="cpu")

    def student_cosines() -> np.ndarray:
        a, b = (model.encode([r[k] for r in test], batch_size=64, normalize_embeddings=True) for k in ("a", "b"))
        return (a * b).sum(axis=1)

    teacher_cos = np.array([float(teacher[r["a"]] @ teacher[r["b"]]) for r in test])
    print(f"{len(train)} training pairs; fold 0 ({len(test)} pairs) recall at P0.85 / P0.80 by cosine:")
    print(f"  teacher {fold0_recalls(teacher_cos, labels)}")
    print(f"  student before {fold0_recalls(student_cosines(), labels)}", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    steps = args.epochs * (len(train) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / max(steps, 1)))
    rng, started = random.Random(0), time.monotonic()
    for epoch in range(args.epochs):
        model.train()
        model.max_seq_length = 64
        order = list(range(len(train)))
        rng.shuffle(order)
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = [train[i] for i in order[start:start + args.batch_size]]
            features = model.preprocess([r["a"] for r in batch] + [r["b"] for r in batch])
            emb = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=1)
            ea, eb = emb[:len(batch)], emb[len(batch):]
            ta = torch.tensor(np.stack([teacher[r["a"]] for r in batch]))
            tb = torch.tensor(np.stack([teacher[r["b"]] for r in batch]))
            cross, cross_teacher = ea @ eb.T, ta @ tb.T
            loss = (((cross - cross_teacher) ** 2).mean() + 4 * ((cross.diagonal() - cross_teacher.diagonal()) ** 2).mean()
                    + ((ea @ ea.T - ta @ ta.T) ** 2).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        model.max_seq_length = EVAL_MAX_TOKENS
        print(f"  student after epoch {epoch + 1} {fold0_recalls(student_cosines(), labels)} "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    if args.save:
        model.save(args.save)


if __name__ == "__main__":
    main()
