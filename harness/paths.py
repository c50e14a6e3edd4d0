"""Where the harness keeps what it builds: the zoo, merged models, results.

Everything lives under one home folder so a user can see (and delete) it in one place.
`HARNESS_HOME` overrides the default `~/.cache/merge-harness`; tests point it at a temporary
folder.
"""

import os
from pathlib import Path

# The folder holding the project's packages (harness, merges, tasks, leaderboard): the source tree,
# or site-packages once installed. Files found through it ship inside those packages.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The shipped registry files (zoo.yaml, paper.yaml); `--registry zoo` and `--registry paper` name them.
REGISTRIES_DIR = Path(__file__).resolve().parent / "registries"


def harness_home() -> Path:
    return Path(os.environ.get("HARNESS_HOME", Path.home() / ".cache" / "merge-harness")).expanduser()


def zoo_dir() -> Path:
    return harness_home() / "zoo"


def merges_dir() -> Path:
    return harness_home() / "merges"


def results_dir() -> Path:
    return harness_home() / "results"


def default_store_url() -> str:
    return f"sqlite:///{harness_home() / 'results.db'}"


def add_store_option(parser) -> None:
    """`--store URL`, the same for every command that reads or writes the results store."""
    parser.add_argument("--store", metavar="URL", default=None,
                        help="results store, any SQLAlchemy URL (default: SQLite under the harness home)")
