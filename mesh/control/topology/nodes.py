"""Reading `mesh.yaml` with its lines: PyYAML's composed node tree, checked node by node.

PyYAML composes the file into nodes that keep their start marks, resolves each scalar's
type by the YAML 1.1 rules of `safe_load` (`yes` is true, `250ms` stays a string) and
flattens `<<` merge keys; constructing plain dicts instead would lose the lines. What is
checked here is the shape every section shares: a mapping with known keys, each given
once; a string, an integer or a number in range; a duration with its unit.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mesh.control.topology.model import TopologyError, parse_duration

_TAG_STR = "tag:yaml.org,2002:str"
_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_MERGE = "tag:yaml.org,2002:merge"
_TAG_MAP = "tag:yaml.org,2002:map"
_TAG_SEQ = "tag:yaml.org,2002:seq"

_T = TypeVar("_T")

MAX_PORT = 65_535

#: A mapping node's entries by key: (key node, value node), in file order.
Entries = dict[str, tuple[Node, Node]]


def node_line(node: Node) -> int:
    """The line (from 1) where `node` starts."""
    return int(node.start_mark.line) + 1


def suggest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean ...?` naming the choice closest to `word`, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "nothing"
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


class NodeReader:
    """Turns the nodes of one file into checked values; every error names its line."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._constructor = SafeConstructor()

    def error(self, at: Node | int, detail: str) -> TopologyError:
        return TopologyError(detail, self._source, at if isinstance(at, int) else node_line(at))

    def compose(self, text: str) -> Node | None:
        """The root node of `text` (None for an empty file); bad YAML names its line."""
        try:
            root: Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            problem = ": ".join(part for part in (error.context, error.problem) if part)
            raise TopologyError(
                f"invalid YAML: {problem}", self._source, None if mark is None else mark.line + 1
            ) from None
        except yaml.YAMLError as error:
            raise TopologyError(f"invalid YAML: {error}", self._source, None) from None
        return None if root is None or self.is_null(root) else root

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _TAG_NULL

    def mapping(
        self,
        node: Node,
        where: str,
        allowed: set[str] | None,
        *,
        null_is_empty: bool = False,
    ) -> Entries:
        """The entries of a mapping node; unknown and repeated keys are errors."""
        if null_is_empty and self.is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{where} must be a mapping, got {self.describe(node)}")
        if node.tag != _TAG_MAP:
            raise self.error(node, f"{where} has an unsupported tag {node.tag!r}")
        explicit: Entries = {}
        for key, value in node.value:
            if key.tag == _TAG_MERGE:
                continue
            if not isinstance(key, ScalarNode):
                raise self.error(key, f"{where} has a key that is not a name")
            # The raw text, not the resolved value: a service called `on` stays a name.
            name = str(key.value)
            if name in explicit:
                raise self.error(key, f"{where} has {name!r} twice")
            if allowed is not None and name not in allowed:
                raise self.error(
                    key,
                    f"unknown key {name!r} in {where} "
                    f"(allowed: {', '.join(sorted(allowed))}){suggest(name, allowed)}",
                )
            explicit[name] = (key, value)
        if len(explicit) == len(node.value):
            return explicit
        try:
            self._constructor.flatten_mapping(node)  # `<<: *anchor` merge keys
        except yaml.MarkedYAMLError as error:
            raise self.error(node, f"{where}: {error.problem}") from None
        merged: Entries = {}
        for key, value in node.value:
            name = str(key.value)
            if allowed is not None and name not in allowed:
                raise self.error(key, f"unknown key {name!r} in {where} (merged in from an anchor)")
            merged[name] = (key, value)  # later entries win, so explicit keys override merged ones
        return merged

    def optional(
        self, entries: Entries, key: str, default: _T, convert: Callable[[Node], _T]
    ) -> _T:
        return convert(entries[key][1]) if key in entries else default

    def required(self, entries: Entries, key: str, where: str, at: Node) -> Node:
        if key not in entries:
            raise self.error(at, f"{where} needs `{key}`")
        return entries[key][1]

    def sequence(self, entries: Entries, key: str, message: str) -> list[Node]:
        """The items of the list at `key` (none when the key is absent)."""
        if key not in entries:
            return []
        node = entries[key][1]
        if not isinstance(node, SequenceNode) or node.tag != _TAG_SEQ:
            raise self.error(node, message)
        return list(node.value)

    def scalar(self, node: Node) -> object:
        if not isinstance(node, ScalarNode):
            return None
        try:
            return self._constructor.construct_object(node)
        except yaml.MarkedYAMLError as error:
            raise self.error(node, f"invalid value: {error.problem}") from None

    def describe(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        return _describe(self.scalar(node))

    def string(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != _TAG_STR:
            raise self.error(node, f"{what} must be a string, got {self.describe(node)}")
        return str(node.value)

    def name(self, node: Node, what: str, pattern: re.Pattern[str]) -> str:
        value = self.string(node, what)
        if not pattern.fullmatch(value):
            raise self.error(
                node,
                f"{what} {value!r} is not a valid name (lowercase letters, digits and hyphens, "
                "at most 63, starting with a letter)",
            )
        return value

    def boolean(self, node: Node, where: str) -> bool:
        value = self.scalar(node)
        if not isinstance(value, bool):
            raise self.error(node, f"{where} must be true or false, got {self.describe(node)}")
        return value

    def choice(self, node: Node, where: str, choices: Sequence[str]) -> str:
        value = self.string(node, where)
        if value not in choices:
            raise self.error(node, f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def integer(self, node: Node, where: str, low: int, high: int) -> int:
        value = self.scalar(node)
        # bool is an int in Python; `replicas: yes` is still a mistake.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(node, f"{where} must be an integer, got {self.describe(node)}")
        if not low <= value <= high:
            raise self.error(node, f"{where} must be between {low} and {high}, got {value}")
        return value

    def percent(self, node: Node, where: str) -> float:
        value = self.scalar(node)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(node, f"{where} must be a number, got {self.describe(node)}")
        if not 0 <= value <= 100:
            raise self.error(node, f"{where} must be between 0 and 100, got {value:g}")
        return float(value)

    def duration(self, node: Node, where: str) -> float:
        if not isinstance(node, ScalarNode) or node.tag != _TAG_STR:
            raise self.error(
                node,
                f"{where} must be a duration with a unit such as 2s or 250ms, "
                f"got {self.describe(node)}",
            )
        try:
            seconds = parse_duration(str(node.value))
        except ValueError as error:
            raise self.error(node, f"{where}: {error}") from None
        if seconds <= 0:
            raise self.error(node, f"{where} must be longer than zero")
        return seconds

    def line_of(self, entries: Entries, *keys: str) -> int:
        """The line of the value at `keys` (already checked), or of its nearest parent."""
        if keys[0] not in entries:
            return 1
        node = entries[keys[0]][1]
        line = node_line(node)
        for key in keys[1:]:
            if not isinstance(node, MappingNode):
                break
            found = {str(k.value): v for k, v in node.value}.get(key)
            if found is None:
                break
            node = found
            line = node_line(node)
        return line
