"""Hardened YAML reading: plain data plus the line of every key, or a list of issues.

Only the YAML composer runs (through a `yaml.SafeLoader` subclass); nothing is
ever constructed from a tag, so no YAML document can instantiate objects. The
node tree is then walked by hand, which is where the hardening lives:

- duplicate mapping keys are reported (PyYAML silently keeps the last one);
- only the standard tags (str, int, float, bool, null, seq, map) are accepted;
- aliases are expanded under a budget of nodes, so a "billion laughs" file
  fails in milliseconds, and a recursive alias is reported, not followed;
- nesting is capped while composing, so a deep file cannot exhaust the stack.

Scalars stay text: the only implicit resolution is null (`~`, `null`, empty).
`on:`, `no`, `0755` and `1:30` are therefore the strings the author typed,
not YAML 1.1 booleans or sexagesimal numbers; whoever validates the data
converts text to the type each field needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KeyPath = tuple[str | int, ...]
"""Where a value sits in the document: mapping keys and sequence indexes."""

MAX_NODES = 100_000
MAX_DEPTH = 64

_TAG_PREFIX = "tag:yaml.org,2002:"
_NULL = _TAG_PREFIX + "null"
_STR = _TAG_PREFIX + "str"
_SEQ = _TAG_PREFIX + "seq"
_MAP = _TAG_PREFIX + "map"
_NON_SPECIFIC = "!"
_SCALAR_TAGS = frozenset({_STR, _NULL, *(_TAG_PREFIX + t for t in ("int", "float", "bool"))})
_INT_TEXT = re.compile(r"[-+]?(?:0b[01_]+|0o?[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)")
_FLOAT_TEXT = re.compile(
    r"[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_BOOL_TEXT = frozenset({"true", "false", "yes", "no", "on", "off"})


def _any_text(_text: str) -> bool:
    return True


_TEXT_CHECKS: Mapping[str, Callable[[str], bool]] = {
    "int": lambda text: _INT_TEXT.fullmatch(text) is not None,
    "float": lambda text: _FLOAT_TEXT.fullmatch(text) is not None,
    "bool": lambda text: text.lower() in _BOOL_TEXT,
}
_MERGE_KEY = "<<"


def render_path(path: KeyPath) -> str:
    """Format a key path the way problems show it: `rules[2].notify[0]`."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{part!r}]")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class YamlIssue:
    """One reason a document was refused; `line` is 1-based, None when no line applies."""

    line: int | None
    path: KeyPath
    message: str


class UnsafeYamlError(Exception):
    """The text is not YAML this reader accepts; `issues` says every reason found."""

    def __init__(self, issues: tuple[YamlIssue, ...]) -> None:
        self.issues = issues
        super().__init__("\n".join(i.message for i in issues))


@dataclass(frozen=True, slots=True)
class Document:
    """Plain data (dict, list, str, None) and the 1-based line of each key path."""

    data: Any
    lines: Mapping[KeyPath, int]
    # The line where each scalar's text begins (a block scalar's `|` line + 1),
    # for errors that point inside a value, such as a template's own line.
    text_lines: Mapping[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, else of its nearest ancestor present in the file.

        The document itself is not an ancestor: a missing top-level key has no line.
        """
        if not path:
            return self.lines.get(path)
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class _DepthError(yaml.MarkedYAMLError):
    pass


class HardenedLoader(yaml.SafeLoader):
    """A SafeLoader that resolves only null implicitly and caps nesting depth.

    Use it to compose (`get_single_node`), never to construct.
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag == _NULL]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        if any(tag == _NULL for tag, _ in resolvers)
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose as usual, refusing documents nested deeper than MAX_DEPTH."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _DepthError(
                    problem=f"nested deeper than {MAX_DEPTH} levels",
                    problem_mark=self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse(text: str) -> Document:
    """Parse one YAML document from `text` into plain data and its line map.

    Raises UnsafeYamlError for syntax errors, more than one document, unknown
    tags, duplicate keys, non-scalar keys, recursive aliases and documents
    whose aliases expand past MAX_NODES nodes. Messages never quote the text
    around an error, since the file may hold secrets.
    """
    loader: HardenedLoader | None = None
    try:
        loader = HardenedLoader(text)
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise UnsafeYamlError((YamlIssue(line, (), f"invalid YAML: {reason}"),)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise UnsafeYamlError(
            (YamlIssue(line, (), f"invalid YAML: character #x{exc.character:04x} not allowed"),)
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        return Document(None, {})
    walker = _Walker()
    data = walker.walk(root, ())
    if walker.issues:
        raise UnsafeYamlError(tuple(walker.issues))
    return Document(data, walker.lines, walker.text_lines)


class _AbortError(Exception):
    """Stops a walk that cannot go on (budget spent, recursion found)."""


class _Walker:
    """Turns composed nodes into plain data, recording lines and issues."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.text_lines: dict[KeyPath, int] = {}
        self.issues: list[YamlIssue] = []
        self._budget = MAX_NODES
        self._active: set[int] = set()

    def walk(self, node: Node, path: KeyPath) -> Any:
        try:
            return self._node(node, path)
        except _AbortError:
            return None

    def _issue(self, node: Node, path: KeyPath, message: str) -> None:
        self.issues.append(YamlIssue(node.start_mark.line + 1, path, message))

    def _node(self, node: Node, path: KeyPath) -> Any:
        self._budget -= 1
        if self._budget < 0:
            # Name the top-level key that blew the budget: deeper paths are noise.
            self.issues.append(
                YamlIssue(
                    self.lines.get(path[:1]),
                    path[:1],
                    f"aliases expand to more than {MAX_NODES} nodes (a 'billion laughs' document?)",
                )
            )
            raise _AbortError
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self._active:
            self._issue(node, path, "recursive alias: a node cannot contain itself")
            raise _AbortError
        self._active.add(id(node))
        try:
            if isinstance(node, ScalarNode):
                return self._scalar(node, path)
            if not self._tag_ok(node, _SEQ if isinstance(node, SequenceNode) else _MAP, path):
                return None
            if isinstance(node, SequenceNode):
                return [self._node(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, MappingNode)
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _tag_ok(self, node: Node, expected: str, path: KeyPath) -> bool:
        if node.tag in (expected, _NON_SPECIFIC):
            return True
        tag = node.tag.replace(_TAG_PREFIX, "!!", 1)
        self._issue(
            node,
            path,
            f"tag '{tag}' is not allowed; only !!str, !!int, !!float, !!bool, !!null, "
            "!!seq and !!map are",
        )
        return False

    def _scalar(self, node: ScalarNode, path: KeyPath) -> str | None:
        tag = node.tag
        if tag not in _SCALAR_TAGS and tag != _NON_SPECIFIC:
            self._tag_ok(node, _STR, path)
            return None
        if tag == _NULL:
            return None
        text: str = node.value
        block = 1 if node.style in ("|", ">") else 0
        self.text_lines.setdefault(path, node.start_mark.line + 1 + block)
        kind = tag.removeprefix(_TAG_PREFIX)
        if not _TEXT_CHECKS.get(kind, _any_text)(text):
            # Never echo the value: it may be a secret.
            self._issue(node, path, f"value is not a valid !!{kind}")
        return text

    def _entries(self, node: MappingNode, path: KeyPath) -> Iterator[tuple[str, Node, Node]]:
        """Explicit entries with text keys; malformed keys are reported and skipped."""
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (
                _STR,
                _NULL,
                _NON_SPECIFIC,
            ):
                self._issue(key_node, path, "mapping keys must be plain strings")
                continue
            yield key_node.value, key_node, value_node

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[tuple[Node, Node]] = []
        for key, key_node, value_node in self._entries(node, path):
            if key == _MERGE_KEY and isinstance(key_node, ScalarNode) and key_node.style is None:
                merges.append((key_node, value_node))
                continue
            line = key_node.start_mark.line + 1
            if key in first_line:
                self._issue(
                    key_node,
                    (*path, key),
                    f"duplicate key '{key}' (first defined on line {first_line[key]})",
                )
                continue
            first_line[key] = line
            self.lines[(*path, key)] = line
            out[key] = self._node(value_node, (*path, key))
        for key_node, value_node in merges:
            self._merge(out, key_node, value_node, path)
        return out

    def _merge(self, out: dict[str, Any], key_node: Node, source: Node, path: KeyPath) -> None:
        """Apply a `<<` merge key: explicit keys win, then earlier sources win."""
        sources = source.value if isinstance(source, SequenceNode) else [source]
        for mapping in sources:
            if not isinstance(mapping, MappingNode):
                self._issue(key_node, path, "'<<' merges only mappings (or a list of mappings)")
                continue
            # Walk the source with its own line map so that it cannot move the
            # lines of keys this mapping sets explicitly.
            own_lines, self.lines = self.lines, {}
            try:
                merged = self._node(mapping, path)
            finally:
                merged_lines, self.lines = self.lines, own_lines
            for merged_path, line in merged_lines.items():
                self.lines.setdefault(merged_path, line)
            if isinstance(merged, dict):
                for key, value in merged.items():
                    out.setdefault(key, value)
