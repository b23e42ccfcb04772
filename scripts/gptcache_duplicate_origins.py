"""GPTCache's mock benchmark, with hits on an origin of identical text counted apart.

30 origin texts occur more than once in ``gptcache-mock-pairs.json`` (67 rows, 962 distinct texts).  When a
question's nearest origin is another row with the very same text, the cache returns the answer
stored for that text: scored by row id it is a *wrong* hit, though no cache keyed by the question
can tell the two rows apart.  This prints, for the packaged embedding + verifier at the cut of
every target precision of the verifier's table, right / wrong by row id (the benchmark's rule)
and with such hits counted right.  A verifier file with a cross-encoder second opinion
(``llmcache tune --crossencoder``) is judged by its stacked score and table, as the sidecar does.

    python scripts/gptcache_duplicate_origins.py [--verifier FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qqp_folds import MOCK_PAIRS  # noqa: E402

from llmcache_sidecar.calibration import embed_texts  # noqa: E402
from llmcache_sidecar.default_model import model_files  # noqa: E402
from llmcache_sidecar.embedder import OnnxEmbedder  # noqa: E402
from llmcache_sidecar.verifier import load_verifier  # noqa: E402

PACKAGED = Path(__file__).resolve().parent.parent / "sidecar/llmcache_sidecar/default_model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifier", type=Path, default=PACKAGED)
    args = parser.parse_args()
    rows = json.loads(MOCK_PAIRS.read_text())
    texts = [" ".join(r["origin"].lower().split()) for r in rows]
    counts = Counter(texts)
    print(f"{len(rows)} rows, {len(counts)} distinct origin texts; {sum(n for n in counts.values() if n > 1)} rows "
          f"share their origin text with another row")
    embedder = OnnxEmbedder(model_files(None), "cpu", threads=1)
    stored = embed_texts(embedder, [r["origin"] for r in rows])
    asked = embed_texts(embedder, [r["similar"] for r in rows])
    nearest = (asked @ stored.T).argmax(axis=1)
    verifier = load_verifier(args.verifier)
    score = verifier.probability([rows[j]["origin"] for j in nearest], [r["similar"] for r in rows],
                                 stored[nearest], asked)
    cuts = verifier.cuts
    if verifier.second is not None:  # the decision the sidecar makes with a second opinion
        second = verifier.second
        print(f"with the cross-encoder second opinion (asked for {int((score >= second.gate).sum())} questions)")
        score, cuts = second.scores(score, [rows[j]["origin"] for j in nearest], [r["similar"] for r in rows]), \
            second.cuts
    own = nearest == np.arange(len(rows))
    same_text = np.array([texts[i] == texts[j] for i, j in enumerate(nearest)])
    print("target  by row id: right / wrong (wrong share)   identical origin text counted right")
    for precision, cut, _ in cuts:
        hit = score >= cut
        right, wrong = int((hit & own).sum()), int((hit & ~own).sum())
        right2, wrong2 = int((hit & (own | same_text)).sum()), int((hit & ~(own | same_text)).sum())
        print(f"{precision:.2f}    {right:4d} / {wrong:3d} ({wrong / max(right + wrong, 1):5.1%})"
              f"              {right2:4d} / {wrong2:3d} ({wrong2 / max(right2 + wrong2, 1):5.1%})")


if __name__ == "__main__":
    main()
