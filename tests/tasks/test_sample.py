"""The --limit sample (tasks/sample.py): fixed, seeded, every label taking turns."""

from collections import Counter

import pytest

from tasks.sample import limit_sample

TOPICS = ["entertainment", "geography", "health", "politics", "science/technology", "sports", "travel"]
SORTED_LABELS = [topic for topic, count in zip(TOPICS, (19, 17, 22, 30, 51, 25, 40)) for _ in range(count)]


def test_7_items_of_a_topic_sorted_split_cover_all_7_topics():
    sample = limit_sample(SORTED_LABELS, 7)
    assert sorted(SORTED_LABELS[i] for i in sample) == TOPICS


def test_labels_share_the_sample_evenly_until_one_runs_out():
    counts = Counter(SORTED_LABELS[i] for i in limit_sample(SORTED_LABELS, 140))
    assert counts["geography"] == 17 and counts["entertainment"] == 19  # all they have
    assert {counts[topic] for topic in TOPICS[2:]} == {20, 21}  # the other 104 items shared by the other five
    assert sum(counts.values()) == 140


def test_the_sample_is_fixed_nested_and_ascending():
    assert limit_sample(SORTED_LABELS, 30) == limit_sample(list(SORTED_LABELS), 30)  # the same on every call
    assert set(limit_sample(SORTED_LABELS, 10)) <= set(limit_sample(SORTED_LABELS, 11))
    assert limit_sample(SORTED_LABELS, 30) == sorted(limit_sample(SORTED_LABELS, 30))
    assert limit_sample(SORTED_LABELS, 30) != limit_sample(SORTED_LABELS, 30, seed=7)


def test_unlabelled_items_are_a_seeded_shuffle_not_the_first_n():
    sample = limit_sample([None] * 100, 5)
    assert len(sample) == 5 and sample != [0, 1, 2, 3, 4] and sample == limit_sample([None] * 100, 5)


@pytest.mark.parametrize("limit", [None, 204, 1000])
def test_no_limit_or_one_past_the_size_is_every_item(limit):
    assert limit_sample(SORTED_LABELS, limit) == list(range(204))


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="positive number of items, got 0"):
        limit_sample(SORTED_LABELS, 0)
