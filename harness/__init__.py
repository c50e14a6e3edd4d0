"""The evaluation harness: registry -> merge -> vLLM server -> lm-eval -> results store."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("merge-harness")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"


class HarnessError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""
