"""Every ranker feature has plain words, and no two features read the same."""

from __future__ import annotations

from basketcast.features import glossary
from basketcast.features.build import FEATURE_NAMES


def test_every_feature_has_its_own_words() -> None:
    missing = [n for n in FEATURE_NAMES if glossary.words(n) == n]
    assert missing == [], f"features without words in features/glossary.py: {missing}"
    phrases = [glossary.words(n) for n in FEATURE_NAMES]
    assert len(set(phrases)) == len(phrases), "two features read the same on the dashboard"
    # No column name leaks into a phrase (the words are for people who do not read the code).
    assert not [p for p in phrases if any(n in p.split() for n in FEATURE_NAMES)]


def test_no_words_for_what_is_not_a_feature() -> None:
    assert set(glossary.WORDS) <= set(FEATURE_NAMES)
    assert glossary.words("not_a_feature") == "not_a_feature"
