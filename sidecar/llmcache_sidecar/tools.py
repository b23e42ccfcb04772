"""The ``llmcache`` command: operator-side tools, one subcommand each.

Each subcommand is an ``add_<name>(subparsers)`` function that registers its parser and sets
``handler`` (``Namespace -> exit code``); :func:`main` dispatches.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from .calibration import PairsError, load_pairs, pair_similarities, precision_recall_curve, threshold_grid
    from .default_model import ModelFilesError, model_files
    from .embedder import EmbedderError, OnnxEmbedder

    try:
        pairs = load_pairs(args.pairs)
        embedder = OnnxEmbedder(model_files(args.model), args.device)
    except (PairsError, ModelFilesError, EmbedderError) as exc:
        print(f"llmcache calibrate: {exc}", file=sys.stderr)
        return 2
    similarities = pair_similarities(embedder, pairs)
    duplicate = np.array([p.duplicate for p in pairs])
    curve = precision_recall_curve(similarities, duplicate, threshold_grid(args.min, 0.99, args.step))
    if args.json:
        print(json.dumps([{"threshold": p.threshold, "hits": p.hits, "precision": round(p.precision, 4),
                           "recall": round(p.recall, 4)} for p in curve]))
    else:
        print(f"{len(pairs)} pairs, {int(duplicate.sum())} duplicates, model {embedder.name}")
        print(f"{'threshold':>9}  {'hits':>6}  {'precision':>9}  {'recall':>6}")
        for p in curve:
            print(f"{p.threshold:>9.3f}  {p.hits:>6}  {p.precision:>9.3f}  {p.recall:>6.3f}")
    meeting = [p for p in curve if p.hits and p.precision >= args.target_precision]
    if not meeting:
        print(f"no threshold reaches precision {args.target_precision}", file=sys.stderr)
        return 1
    best = min(meeting, key=lambda p: p.threshold)
    print(f"threshold {best.threshold:.3f}: precision {best.precision:.3f}, recall {best.recall:.3f} "
          f"(target precision {args.target_precision}); set LLMCACHE_SIMILARITY_THRESHOLD={best.threshold:.3f} "
          f"or spec.cache.semantic.threshold", file=sys.stderr if args.json else sys.stdout)
    return 0


def add_calibrate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose the semantic similarity threshold from labelled pairs",
        description="Print the precision/recall curve of the semantic tier over thresholds, measured as a "
                    "cache (a stored, b asked: a hit when cosine >= threshold), and the lowest threshold "
                    "whose precision meets the target.",
    )
    parser.add_argument("--pairs", type=Path, required=True, help='JSON lines {"a": str, "b": str, "duplicate": bool}')
    parser.add_argument("--target-precision", type=float, default=0.85, help="share of hits that must be right (default 0.85)")
    parser.add_argument("--model", default=None, help="model directory (model.onnx + tokenizer.json); default: the packaged model")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--min", type=float, default=0.50, help="lowest threshold of the curve")
    parser.add_argument("--step", type=float, default=0.01, help="threshold step of the curve")
    parser.add_argument("--json", action="store_true", help="print the curve as JSON")
    parser.set_defaults(handler=_calibrate)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (add_calibrate,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcache", description="llmcache tools")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
