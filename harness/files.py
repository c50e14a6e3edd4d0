"""Reading the YAML and JSON files a user hands the harness (registries, grids, model configs, the
regression baseline): a missing or broken file is a one-line HarnessError that names it."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness import HarnessError, one_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: by default
    the last one silently wins, so a registry naming a model id twice would lose the first."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):  # unhashable: PyYAML would fail with a TypeError
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name, not a {type(key).__name__}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str, missing: str | None = None) -> Any:
    """The parsed YAML file (a key twice in one mapping is an error). `what` names it in errors
    ("registry file"); `missing` replaces the not-found message where the caller can say how to
    create the file."""
    return _read(path, what, missing, "YAML", lambda text: yaml.load(text, _UniqueKeyLoader), yaml.YAMLError)


def read_json(path: Path, what: str, missing: str | None = None) -> Any:
    """The parsed JSON file; errors as for read_yaml."""
    return _read(path, what, missing, "JSON", json.loads, ValueError)


def _read(path: Path, what: str, missing: str | None, format_name: str, parse: Callable[[str], Any],
          parse_error: type[Exception]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(missing or f"{what} not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HarnessError(f"{what} {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise HarnessError(f"cannot read {what} {path}: {one_line(err)}") from None
    try:
        return parse(text)
    except parse_error as err:
        raise HarnessError(f"{path}: not valid {format_name}: {' '.join(str(err).split())}") from None
