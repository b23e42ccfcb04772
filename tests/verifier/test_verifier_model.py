"""The match verifier's features, numpy inference (against scikit-learn), tables and settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmcache_sidecar.config import ConfigError, load_settings
from llmcache_sidecar.default_model import MODEL_SHA256
from llmcache_sidecar.verifier import (
    ALL_PAIR_FEATURES,
    LEGACY_PAIR_FEATURES,
    PAIR_FEATURES,
    VerifierError,
    WordWeights,
    fitting_verifier,
    load_verifier,
    match_policy,
    pair_features,
    relation_reversed,
    verifier_from_dict,
)

DIM = 8


def feature(stored: str, asked: str, name: str) -> float:
    return pair_features(stored, asked, 0.9)[PAIR_FEATURES.index(name)]


@pytest.mark.parametrize(("stored", "asked", "guard"), [
    ("How much is 5 kg in pounds?", "How much is 6 kg in pounds?", "numbers_differ"),
    ("What happened in March 2016?", "What happened in May 2016?", "dates_differ"),
    ("What happened in 2015 in India?", "What happened in 2016 in India?", "dates_differ"),
    ("Is coffee bad for you?", "Isn't coffee bad for you?", "negation_differs"),
    ("Can I eat eggs without cooking them?", "Can I eat eggs cooking them?", "negation_differs"),
    ("Who is the CEO of Google?", "Who is the CEO of Microsoft?", "names_differ"),
    ("How do I convert ethane to ethene?", "How do I convert ethene to ethane?", "relation_reversed"),
    ("Are cats afraid of dogs?", "Are dogs afraid of cats?", "relation_reversed"),
    ("Is Messi better than Ronaldo?", "Is Ronaldo better than Messi?", "relation_reversed"),
])
def test_guard_features_fire_on_near_misses_and_not_on_rewordings(stored: str, asked: str, guard: str) -> None:
    assert feature(stored, asked, guard) == 1.0
    assert feature(stored, stored.lower().rstrip("?"), guard) == 0.0


@pytest.mark.parametrize(("stored", "asked"), [
    ("What is the difference between shame and guilt?", "What is the difference between guilt and shame?"),
    ("What is the difference between match fixing and spot fixing?",
     "What is the difference between spot fixing and match fixing?"),
    ("Should I learn Python or Java?", "Should I learn Java or Python?"),
    ("Which sport is your favourite and why?", "Which is your favourite sport and why?"),  # a phrase moved
    ("When will start Infosys sending offers?", "When will Infosys start sending offers?"),  # neighbours swapped
])
def test_swaps_that_keep_the_meaning_are_not_reversed_relations(stored: str, asked: str) -> None:
    """QQP labels these duplicates; the older ``reordered`` feature fired on every one of them."""
    assert feature(stored, asked, "relation_reversed") == 0.0
    legacy = pair_features(stored, asked, 0.9, legacy=True)
    assert legacy[LEGACY_PAIR_FEATURES.index("reordered")] == 1.0


@pytest.mark.parametrize(("stored", "asked"), [
    ("Why didn't the bus come?", "Why didnt the bus come?"),
    ("Why can't I sleep?", "Why cant I sleep?"),
    ("What is today's date?", "What is todays date?"),
    ("Name 3 planets", "Name three planets"),
    ("What is your favourite colour?", "What is your favorite color?"),
    ("Which organisation runs the theatre programme?", "Which organization runs the theater program?"),
])
def test_ways_of_typing_the_same_question_give_the_same_words(stored: str, asked: str) -> None:
    features = pair_features(stored, asked, 0.9)
    assert features[PAIR_FEATURES.index("jaccard")] == 1.0
    assert features[PAIR_FEATURES.index("negation_differs")] == 0.0
    assert features[PAIR_FEATURES.index("numbers_differ")] == 0.0
    legacy = pair_features(stored, asked, 0.9, legacy=True)  # the split older files were trained on
    assert legacy[LEGACY_PAIR_FEATURES.index("jaccard")] < 1.0


def test_numbers_in_words_still_differ() -> None:
    assert feature("Name 3 planets", "Name four planets", "numbers_differ") == 1.0
    assert feature("Which one is better?", "Which is better?", "numbers_differ") == 0.0  # "one": a pronoun


def test_relation_reversed_across_several_words() -> None:
    words = str.split
    assert relation_reversed(words("fly from new york to new delhi"), words("fly from new delhi to new york"))
    assert not relation_reversed(words("a b c"), words("a b c"))
    assert not relation_reversed(words("a b c"), words("a b d"))


def test_files_naming_reordered_keep_it() -> None:
    """A verifier trained on the older feature is fed that feature, not its successor."""
    stored, asked = "Which is the best ICICI credit card?", "Which icici credit card is the best?"
    u = np.ones((1, DIM)) / np.sqrt(DIM)
    weights = [0.0] * (len(PAIR_FEATURES) + 2 * DIM)
    weights[PAIR_FEATURES.index("relation_reversed")] = -20.0
    model = {"kind": "linear", "mean": [0.0] * len(weights), "scale": [1.0] * len(weights), "weights": weights,
             "bias": 10.0}
    current = verifier_from_dict(_document(model=model, features=list(PAIR_FEATURES) + ["|u-v|"] * DIM + ["u*v"] * DIM))
    legacy = verifier_from_dict(_document(model=model, features=list(LEGACY_PAIR_FEATURES) + ["|u-v|"] * DIM
                                          + ["u*v"] * DIM))
    assert not current.legacy and legacy.legacy
    assert current.probability([stored], [asked], u, u)[0] > 0.99  # not a reversed relation: served
    assert legacy.probability([stored], [asked], u, u)[0] < 0.01  # reordered: what it was trained to refuse


def test_lexical_features() -> None:
    same = pair_features("How do I learn Python?", "how do i learn python", 1.0)
    assert same[PAIR_FEATURES.index("jaccard")] == 1.0 and same[PAIR_FEATURES.index("only_one_side")] == 0.0
    other = pair_features("How do I learn Python?", "Why is the sky blue?", 0.1)
    assert other[PAIR_FEATURES.index("jaccard")] < 0.2 and other[PAIR_FEATURES.index("first_word_differs")] == 1.0


def _data(n: int = 400, seed: int = 0) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, DIM))
    v = u + rng.normal(scale=rng.uniform(0.1, 2.0, size=(n, 1)), size=(n, DIM))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    stored = [f"How many apples for {i} people?" for i in range(n)]
    asked = [f"How many apples for {i if k % 3 else i + 1} people?" for i, k in enumerate(rng.integers(0, 9, n))]
    numbers_same = np.array([s == a for s, a in zip(stored, asked)])
    y = ((u * v).sum(axis=1) > 0.7) & numbers_same
    return stored, asked, u, v, y


def test_word_weights_mark_the_unmatched_important_word() -> None:
    topics = ("Python", "Java", "Rust", "Go")
    questions = [f"How do I learn {topic} fast?" for topic in topics] * 3 + ["Why is tea hot?"]
    weights = WordWeights.of(questions)
    assert weights.idf["how"] < weights.idf["python"] < weights.unseen
    assert "tea" not in weights.idf  # one question only: weighs as unseen
    rare = pair_features("How do I learn Python fast?", "How do I learn fast?", 0.9, weights)  # "python" dropped
    common = pair_features("How do I learn Python fast?", "How do I learn Python?", 0.9, weights)  # "fast" dropped
    assert len(rare) == len(ALL_PAIR_FEATURES) and len(pair_features("a", "b", 0.9)) == len(PAIR_FEATURES)
    for name in ("heaviest_unmatched", "heaviest_unmatched_content", "unmatched_weight_share"):
        assert rare[ALL_PAIR_FEATURES.index(name)] > common[ALL_PAIR_FEATURES.index(name)]
    assert rare[ALL_PAIR_FEATURES.index("heaviest_unmatched")] == weights.idf["python"]
    assert rare[ALL_PAIR_FEATURES.index("weighted_jaccard")] < common[ALL_PAIR_FEATURES.index("weighted_jaccard")]


@pytest.mark.parametrize("kind", ["trees", "linear"])
@pytest.mark.parametrize("weighted", [False, True])
def test_numpy_inference_equals_scikit_learn(kind: str, weighted: bool) -> None:
    pytest.importorskip("sklearn")
    from llmcache_sidecar.verifier import feature_matrix
    from llmcache_sidecar.verifier_training import make_model, verifier_document

    stored, asked, u, v, y = _data()
    weights = WordWeights.of(stored) if weighted else None
    x = feature_matrix(stored, asked, u, v, weights)
    fitted = make_model(kind, len(ALL_PAIR_FEATURES) if weighted else None).fit(x, y)
    document = json.loads(json.dumps(verifier_document(kind, fitted, DIM, [[0.9, 0.5, 0.5]], [[0.9, 0.8, 0.3]], "", {},
                                                       weights)))
    verifier = verifier_from_dict(document)
    assert verifier.weights == weights
    ours = verifier.probability(stored, asked, u, v)
    assert np.allclose(ours, fitted.predict_proba(x)[:, 1], atol=1e-9)
    # the learned model uses the number guard: same cosine, another number -> lower probability
    assert ours[~np.array([s == a for s, a in zip(stored, asked)])].mean() < ours[y].mean()


def _document(**changes: object) -> dict:
    document = {"format": "llmcache-verifier/1", "dim": DIM, "embedding_sha256": "abc",
                "cuts": [[0.8, 0.3, 0.7], [0.9, 0.6, 0.5], [0.95, 0.9, 0.2]],
                "cosine_cuts": [[0.8, 0.85, 0.6], [0.9, 0.92, 0.3]],
                "model": {"kind": "linear", "mean": [0.0] * (len(PAIR_FEATURES) + 2 * DIM),
                          "scale": [1.0] * (len(PAIR_FEATURES) + 2 * DIM),
                          "weights": [5.0] + [0.0] * (len(PAIR_FEATURES) - 1 + 2 * DIM), "bias": -4.0}}
    document.update(changes)
    return document


def test_target_precision_picks_the_cut() -> None:
    verifier = verifier_from_dict(_document())
    assert [verifier.cut_for(p) for p in (0.5, 0.8, 0.85, 0.9, 0.93, 0.99)] == [0.3, 0.3, 0.6, 0.6, 0.9, 0.9]
    assert [verifier.cosine_threshold_for(p) for p in (0.8, 0.85, 0.99)] == [0.85, 0.92, 0.92]


def test_bad_files_are_refused(tmp_path: Path) -> None:
    for name, content in [("missing.json", None), ("text.json", "not json"),
                          ("format.json", json.dumps(_document(format="other"))),
                          ("shape.json", json.dumps(_document(dim=DIM + 1))),
                          ("empty.json", json.dumps(_document(cuts=[]))),
                          ("no-weights.json", json.dumps(_document(features=list(ALL_PAIR_FEATURES))))]:
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(VerifierError):
            load_verifier(path)
    good = tmp_path / "verifier.json"
    good.write_text(json.dumps(_document()))
    assert load_verifier(tmp_path).cuts[0] == (0.8, 0.3, 0.7)  # a directory means its verifier.json
    with pytest.raises(VerifierError, match="another embedding model"):
        fitting_verifier(good, "def")


def test_policy_from_settings(tmp_path: Path) -> None:
    (tmp_path / "verifier.json").write_text(json.dumps(_document()))
    base = {"LLMCACHE_UPSTREAM_URL": "http://up:8000", "LLMCACHE_VERIFIER_PATH": str(tmp_path)}
    on = match_policy(load_settings(base), "abc")
    assert on.verifier is not None and on.cut == 0.6 and on.threshold == 0.93  # default target 0.85
    strict = match_policy(load_settings({**base, "LLMCACHE_TARGET_PRECISION": "0.95"}), "abc")
    assert strict.cut == 0.9 and strict.threshold == 0.92
    off = match_policy(load_settings({**base, "LLMCACHE_VERIFIER": "off", "LLMCACHE_TARGET_PRECISION": "0.8"}), "abc")
    assert off.verifier is None and off.threshold == 0.85  # the cosine table still answers the target
    plain = match_policy(load_settings({**base, "LLMCACHE_VERIFIER": "off", "LLMCACHE_SIMILARITY_THRESHOLD": "0.9"}), "abc")
    assert plain.verifier is None and plain.threshold == 0.9
    other_model = match_policy(load_settings({**base, "LLMCACHE_TARGET_PRECISION": "0.95"}), "another")
    assert other_model.verifier is None and other_model.threshold == 0.93  # never a verifier of another model
    with pytest.raises(ConfigError, match="LLMCACHE_TARGET_PRECISION"):
        load_settings({**base, "LLMCACHE_TARGET_PRECISION": "1.5"})


def test_packaged_verifier_fits_the_packaged_model() -> None:
    policy = match_policy(load_settings({"LLMCACHE_UPSTREAM_URL": "http://up:8000"}), MODEL_SHA256)
    assert policy.verifier is not None, "the packaged verifier.json is missing or made for another model"
    assert policy.verifier.provenance["data_sha256"] and policy.verifier.provenance["command"]
    assert 0.0 < policy.cut < 1.0


def test_operator_passes_target_precision_to_the_sidecar() -> None:
    from llmcache_operator.context import CacheContext
    from llmcache_operator.settings import OperatorConfig
    from llmcache_operator.sidecar_config import render_sidecar_config
    from llmcache_operator.spec import parse_spec

    spec = parse_spec({"model": {"name": "m", "revision": "r1"}, "cache": {"semantic": {"targetPrecision": 0.9}}})
    rendered = render_sidecar_config(CacheContext("demo", "apps", spec, OperatorConfig()), "r1")
    assert "target_precision: 0.9" in rendered
    assert load_settings({"LLMCACHE_CONFIG": "", "LLMCACHE_UPSTREAM_URL": "http://up:8000",
                          "LLMCACHE_TARGET_PRECISION": "0.9"}).target_precision == 0.9
