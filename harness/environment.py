"""Setting environment variables for the length of a `with` block (task data folders, vLLM dev mode)."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def patched_environ(changes: Mapping[str, str]) -> Iterator[None]:
    """Apply `changes` to os.environ; afterwards every variable is as it was (unset ones unset again)."""
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
