"""The items a `--limit N` run scores: a fixed, seeded sample, the same for every model.

A dataset file may be sorted (SIB-200's are sorted by topic), so the first N items would all share
one label. Instead the items of each label are shuffled with a fixed seed and the labels take turns
(in a seeded order) until N items are taken: 7 items of a 7-topic task cover all 7 topics, and every
label gets N/labels items (one more for some) until it runs out. Items without a label (the math
tasks: their answers are not classes) form one group, so they are a seeded shuffle.

The sample depends only on the items, their labels, N and the seed, never on the model, so every
model is scored on the same items; the sample of N is the first N items of the sample of N+1. The
result's data fingerprint is taken over the sampled items (harness.results), so a result over
another sample never stands in for this one.
"""

import random
from collections.abc import Hashable, Sequence

SEED = 1234  # changing it changes every --limit sample, and with it the stored results' fingerprints


def limit_sample(labels: Sequence[Hashable | None], limit: int | None, seed: int = SEED) -> list[int]:
    """Indices (ascending) of the items to score; `labels[i]` is item i's label (None: unlabelled).
    With no limit, or a limit of at least the number of items, every item."""
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    if limit < 1:
        raise ValueError(f"a sample needs a positive number of items, got {limit}")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(repr(label), []).append(index)  # repr: labels of any type, in a stable order
    queues = [groups[key] for key in sorted(groups)]
    for queue in queues:
        rng.shuffle(queue)
    rng.shuffle(queues)
    taken: list[int] = []
    for turn in range(max(len(queue) for queue in queues)):
        taken.extend(queue[turn] for queue in queues if turn < len(queue))
    return sorted(taken[:limit])
