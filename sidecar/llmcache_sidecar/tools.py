"""The ``llmcache`` command: operator-side tools, one subcommand each.

Each subcommand is an ``add_<name>(subparsers)`` function that registers its parser and sets
``handler`` (``Namespace -> exit code``); :func:`main` dispatches.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .tuning import add_tune

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
    if not args.no_verifier:
        _calibrate_verifier(args, embedder, pairs)
    meeting = [p for p in curve if p.hits and p.precision >= args.target_precision]
    if not meeting:
        print(f"no threshold reaches precision {args.target_precision}", file=sys.stderr)
        return 1
    best = min(meeting, key=lambda p: p.threshold)
    print(f"threshold {best.threshold:.3f}: precision {best.precision:.3f}, recall {best.recall:.3f} "
          f"(target precision {args.target_precision}); set LLMCACHE_SIMILARITY_THRESHOLD={best.threshold:.3f} "
          f"or spec.cache.semantic.threshold", file=sys.stderr if args.json else sys.stdout)
    return 0


def _calibrate_verifier(args: argparse.Namespace, embedder: object, pairs: list) -> None:
    """The match verifier's cuts measured on the pairs (when a verifier fits the model)."""
    from .calibration import verifier_curve
    from .default_model import model_files, sha256_of
    from .verifier import VerifierError, fitting_verifier, verifier_location

    path = verifier_location(args.verifier, args.model)
    try:
        verifier = fitting_verifier(path, sha256_of(model_files(args.model).model)) if path else None
    except VerifierError as exc:
        print(f"verifier not measured: {exc}", file=sys.stderr)
        return
    if verifier is None:
        return
    out = sys.stderr if args.json else sys.stdout
    second = "" if verifier.second is None else ", with its cross-encoder second opinion (cut: the stacked score's)"
    print(f"match verifier {path}{second} (LLMCACHE_TARGET_PRECISION picks its cut; precision/recall measured here):",
          file=out)
    print(f"{'target':>9}  {'cut':>6}  {'hits':>6}  {'precision':>9}  {'recall':>6}", file=out)
    for target, p in verifier_curve(verifier, embedder, pairs):  # type: ignore[arg-type]
        print(f"{target:>9.2f}  {p.threshold:>6.3f}  {p.hits:>6}  {p.precision:>9.3f}  {p.recall:>6.3f}", file=out)


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
    parser.add_argument("--verifier", default=None, help="verifier file or directory (default: the one the sidecar would use)")
    parser.add_argument("--no-verifier", action="store_true", help="measure the cosine threshold only")
    parser.set_defaults(handler=_calibrate)


def _invalidate(args: argparse.Namespace) -> int:
    import asyncio

    from .invalidation import valid_revision

    if args.revision is not None and not valid_revision(args.revision):
        print(f"llmcache invalidate: --revision {args.revision!r} is not a revision (no ':' or whitespace)",
              file=sys.stderr)
        return 2
    if not args.redis_url and not args.milvus_uri:
        print("llmcache invalidate: give --redis-url and/or --milvus-uri (or LLMCACHE_REDIS_URL / "
              "LLMCACHE_MILVUS_URI)", file=sys.stderr)
        return 2
    report, errors = asyncio.run(_run_invalidation(args))
    what = (f"revision {args.revision}" if args.revision is not None
            else f"tenant {args.tenant!r}" if args.tenant is not None else "every entry")
    if args.json:
        print(json.dumps({"cache": args.cache, **{k: v for k, v in (("revision", args.revision),
                                                                    ("tenant", args.tenant)) if v is not None},
                          **report, **({"errors": errors} if errors else {})}))
    else:
        counts = ", ".join(f"{count} {tier} entries" for tier, count in
                           (("exact", report.get("exactEntries")), ("semantic", report.get("semanticEntries")))
                           if count is not None)
        print(f"cache {args.cache}, {what}: deleted {counts or 'nothing'}")
    for error in errors:
        print(f"llmcache invalidate: {error}", file=sys.stderr)
    return 1 if errors else 0


async def _run_invalidation(args: argparse.Namespace) -> tuple[dict[str, int], list[str]]:
    from .invalidation import invalidate_milvus, invalidate_redis, redis_client

    report: dict[str, int] = {}
    errors: list[str] = []
    target = {"revision": args.revision, "tenant": args.tenant}
    if args.redis_url:
        client = redis_client(args.redis_url, os.environ.get("LLMCACHE_REDIS_PASSWORD") or None)
        try:
            report["exactEntries"] = await invalidate_redis(client, args.cache, **target)
        except Exception as exc:  # noqa: BLE001 - reported, exit code 1
            errors.append(f"Redis at {args.redis_url}: {type(exc).__name__}: {exc}")
        finally:
            await client.aclose()
    if args.milvus_uri:
        try:
            report["semanticEntries"] = await invalidate_milvus(args.milvus_uri, args.cache, **target)
        except Exception as exc:  # noqa: BLE001 - reported, exit code 1
            errors.append(f"Milvus at {args.milvus_uri}: {type(exc).__name__}: {exc}")
    return report, errors


def add_invalidate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "invalidate",
        help="delete cached entries of one revision, one tenant, or all, from Redis and Milvus",
        description="Delete the entries of one cache from the exact tier (Redis: SCAN + UNLINK in batches, "
                    "never blocking it) and the semantic tier (Milvus: delete by filter), and print how many. "
                    "Running sidecars see the deletion at once (Milvus server) or within their resync period. "
                    "The Redis password comes from LLMCACHE_REDIS_PASSWORD (or the URL).",
    )
    parser.add_argument("--cache", required=True, help="the cache name (the LLMCache's name)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--revision", help="delete the entries of this model revision")
    target.add_argument("--tenant", help="delete the entries of this tenant ('' for requests without one)")
    target.add_argument("--all", action="store_true", help="delete every entry of the cache")
    parser.add_argument("--redis-url", default=os.environ.get("LLMCACHE_REDIS_URL"),
                        help="e.g. redis://demo-redis.apps.svc:6379/0 (default: LLMCACHE_REDIS_URL)")
    parser.add_argument("--milvus-uri", default=os.environ.get("LLMCACHE_MILVUS_URI"),
                        help="e.g. http://demo-milvus.apps.svc:19530 (default: LLMCACHE_MILVUS_URI)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(handler=_invalidate)


def _bench(args: argparse.Namespace) -> int:
    """The harness is not part of the installed package: it lives in the source checkout
    (``bench/``, and the test upstream in ``tests/upstream.py``), so it is imported from there."""
    checkout = Path.cwd()
    if (checkout / "bench" / "cli.py").is_file() and (checkout / "tests" / "upstream.py").is_file():
        sys.path.insert(0, str(checkout))
    try:
        from bench.cli import main as bench_main
    except ImportError as exc:
        print(f"llmcache bench: run it from the root of an llmcache source checkout (it needs bench/ and "
              f"tests/upstream.py, which are not installed): {exc}", file=sys.stderr)
        return 2
    return bench_main(args.bench_args)


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    # every argument goes to the harness's own parser: no option prefix here, so none is taken
    parser = subparsers.add_parser("bench", add_help=False, prefix_chars="\0", help="benchmark the sidecar (from a "
                                   "source checkout; 'llmcache bench --help' for its options)")
    parser.add_argument("bench_args", nargs="*")
    parser.set_defaults(handler=_bench)


def _model(args: argparse.Namespace) -> int:
    from .mpnet_model import MpnetBuildError, build

    try:
        summary = build(args.out)
    except MpnetBuildError as exc:
        print(f"llmcache model: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"llmcache model: needs torch and sentence-transformers (pip install 'llmcache[mpnet]'): {exc}",
              file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else
          f"wrote {args.out}: model.onnx ({summary['bytes'] // 2**20} MiB, vectors within cosine "
          f"{summary['min_cosine']} of the weights'), tokenizer.json, verifier.json\n"
          f"use it: LLMCACHE_EMBEDDING_MODEL={args.out} (or spec.embedding.model)")
    return 0


def add_model(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model", help="build the opt-in larger embedding model's directory (all-mpnet-base-v2, int8 ONNX + verifier)",
        description="Build a model directory for LLMCACHE_EMBEDDING_MODEL from the all-mpnet-base-v2 weights the "
                    "extra llmcache[mpnet] installs: int8 ONNX, its tokenizer and the match verifier trained on its "
                    "vectors. Nothing is downloaded. Takes a few minutes on a CPU.")
    parser.add_argument("name", choices=["mpnet"], help="the model to build")
    parser.add_argument("--out", type=Path, required=True, help="the model directory to write")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_model)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (add_calibrate, add_invalidate, add_tune,
                                                                         add_bench, add_model)


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
