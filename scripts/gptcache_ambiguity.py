"""GPTCache's mock benchmark with an ambiguity guard: is a hit safer when the runner-up is far?

Every origin stored, every similar asked, the nearest origin by cosine judged by the verifier at
the cut of each target precision (as the sidecar decides with one candidate).  The guard refuses
a hit when a second stored question is also close and is *another* question (the verifier, asked
about the two stored questions, says they are not duplicates): either when the runner-up's own
verifier score reaches the cut, or when its cosine is within a margin of the nearest's.  Printed:
right / wrong (share of hits wrong) by row id, and with hits on an origin of identical text
counted right (see gptcache_duplicate_origins.py).

    python scripts/gptcache_ambiguity.py [--model DIR] [--verifier FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import MOCK_PAIRS  # noqa: E402

from llmcache_sidecar.calibration import embed_texts  # noqa: E402
from llmcache_sidecar.default_model import model_files  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402
from llmcache_sidecar.verifier import load_verifier  # noqa: E402

PACKAGED = Path(__file__).resolve().parent.parent / "sidecar/llmcache_sidecar/default_model"
TARGETS = (0.75, 0.80, 0.85, 0.90)
MARGINS = (0.01, 0.02, 0.03)


def outcome(hit: np.ndarray, right: np.ndarray) -> str:
    good, bad = int((hit & right).sum()), int((hit & ~right).sum())
    return f"{good} / {bad} ({bad / max(good + bad, 1):.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the packaged model)")
    parser.add_argument("--verifier", type=Path, default=None, help="default: the one beside --model, else the packaged one")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = json.loads(MOCK_PAIRS.read_text())
    origins, asked_texts = [r["origin"] for r in rows], [r["similar"] for r in rows]
    texts = [" ".join(t.lower().split()) for t in origins]
    embedder = OnnxEmbedder(model_files(args.model), "cpu", threads=args.threads)
    stored, asked = embed_texts(embedder, origins), embed_texts(embedder, asked_texts)
    verifier = load_verifier(args.verifier or (Path(args.model) if args.model else PACKAGED))
    cosines = asked @ stored.T
    order = np.argsort(-cosines, axis=1)[:, :2]
    first, second = order[:, 0], order[:, 1]
    margin = cosines[np.arange(len(rows)), first] - cosines[np.arange(len(rows)), second]
    p_first = verifier.probability([origins[j] for j in first], asked_texts, stored[first], asked)
    p_second = verifier.probability([origins[j] for j in second], asked_texts, stored[second], asked)
    stored_alike = verifier.probability([origins[j] for j in first], [origins[j] for j in second],
                                        stored[first], stored[second])
    own = first == np.arange(len(rows))
    own_text = own | np.array([texts[i] == texts[j] for i, j in enumerate(first)])
    print("| target | guard | by row id: right / wrong | identical origin text counted right |")
    print("|---|---|---|---|")
    for target in TARGETS:
        cut = verifier.cut_for(target)
        hit = p_first >= cut
        distinct = stored_alike < cut
        guards = [("none", np.zeros_like(hit)), ("runner-up passes too", (p_second >= cut) & distinct)]
        guards += [(f"runner-up within cosine {m}", (margin < m) & distinct) for m in MARGINS]
        for name, refused in guards:
            kept = hit & ~refused
            print(f"| {target:.2f} | {name} | {outcome(kept, own)} | {outcome(kept, own_text)} |")


if __name__ == "__main__":
    main()
