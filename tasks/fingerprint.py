"""A fingerprint of the data a task scores, so a stored result names the data it came from.

The harness stores it with every result: the same model and task scored on other data (the zoo's
synthetic copy, the real datasets, an edited local folder, a new hub revision) is another result,
never one standing in for the other. It hashes the documents as the task loaded them, not the
files, so it covers every source the loaders read (a local folder or the hub) and nothing else.
"""

import hashlib
import json
from collections.abc import Iterable


def data_fingerprint(eval_docs: Iterable[dict], exemplars: Iterable[dict]) -> str:
    """sha256 (hex) of the items scored and the few-shot exemplars, in their order."""
    digest = hashlib.sha256()
    for part, docs in (("eval", eval_docs), ("fewshot", exemplars)):
        digest.update(f"[{part}]\n".encode())
        for doc in docs:
            # One canonical JSON line per document; `default=str` covers values JSON has no type for.
            digest.update(json.dumps(dict(doc), sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
            digest.update(b"\n")
    return digest.hexdigest()
