"""The data fingerprint the store keys results on: any change to what a task scores changes it."""

from tasks.fingerprint import data_fingerprint

DOCS = [{"id": "1", "text": "a", "answer": 0}, {"id": "2", "text": "b", "answer": 1}]
EXEMPLARS = [{"id": "9", "text": "c", "answer": 2}]


def test_the_same_docs_give_the_same_fingerprint_whatever_the_key_order():
    reordered_keys = [dict(reversed(list(doc.items()))) for doc in DOCS]
    assert data_fingerprint(DOCS, EXEMPLARS) == data_fingerprint(reordered_keys, EXEMPLARS)
    assert len(data_fingerprint(DOCS, EXEMPLARS)) == 64  # fits the store's data_hash column


def test_a_changed_item_order_or_exemplar_changes_it():
    base = data_fingerprint(DOCS, EXEMPLARS)
    assert data_fingerprint([DOCS[0], {**DOCS[1], "text": "B"}], EXEMPLARS) != base
    assert data_fingerprint(DOCS[::-1], EXEMPLARS) != base
    assert data_fingerprint(DOCS, []) != base
    assert data_fingerprint(DOCS + EXEMPLARS, []) != base  # an exemplar is not a scored item
