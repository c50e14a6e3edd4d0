"""The evaluation harness: registry -> merge -> vLLM server -> lm-eval -> results store."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("merge-harness")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"


class HarnessError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def one_line(err: BaseException, limit: int = 400) -> str:
    """An exception as one line of at most `limit` characters, for a HarnessError's message."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
