"""The template language ContainerPilot renders its configuration with: a small subset of Go's text/template.

Actions ``{{ ... }}`` (``{{-`` and ``-}}`` trim the space beside them) hold a pipeline of
commands joined by ``|``, each command a function with arguments or a single operand; the
value of one command is the last argument of the next. Operands: ``.NAME`` (the
environment variable ``NAME``, empty when unset), ``.`` (the current value, inside
``range``), ``"strings"``, numbers. Functions, as ContainerPilot defines them:

- ``default DEFAULT VALUE``: VALUE, or DEFAULT when VALUE is empty;
- ``env NAME``: the environment variable NAME;
- ``split SEP VALUE``: VALUE split at SEP (a list); ``join SEP LIST``: the list joined;
- ``replace OLD NEW VALUE``: every OLD replaced with NEW;
- ``regexReplaceAll REGEX REPLACEMENT VALUE`` (``$1`` refers to a group);
- ``loop STOP``, ``loop START STOP`` (and a STEP): the integers from START up to STOP.

``{{ range PIPELINE }}...{{ end }}`` repeats its body for each item (``.`` is the item);
``{{ if PIPELINE }}...{{ else }}...{{ end }}`` renders one branch. Errors name the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import PilotedError

__all__ = ["TemplateError", "render"]


class TemplateError(PilotedError, ValueError):
    """The configuration template cannot be rendered: ``line`` is where (1-based), ``reason`` what is wrong."""

    def __init__(self, line: int, reason: str, source: str = "template") -> None:
        super().__init__(f"{source}: line {line}: {reason}")
        self.line = line
        self.reason = reason


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<pipe>\|)|(?P<lp>\()|(?P<rp>\))|(?P<num>-?\d+)|'
    r"(?P<field>\.[A-Za-z_][A-Za-z0-9_]*)|(?P<dot>\.)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*))"
)
_GO_GROUP = re.compile(r"\$(\d+|\{(\d+)\})")


def _go_string(text: str) -> str:
    return bytes(text[1:-1], "utf-8").decode("unicode_escape") if "\\" in text else text[1:-1]


def _loop(*args: Any) -> list[int]:
    numbers = [int(a) for a in args]
    if len(numbers) == 1:
        return list(range(numbers[0]))
    if len(numbers) in (2, 3):
        return list(range(*numbers))
    raise ValueError(f"loop takes 1 to 3 integers, got {len(numbers)}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "[" + " ".join(_text(v) for v in value) + "]"
    return str(value)


def _regex_replace(pattern: str, replacement: str, value: Any) -> str:
    return re.sub(
        pattern, _GO_GROUP.sub(lambda m: "\\g<" + (m.group(2) or m.group(1)) + ">", replacement), _text(value)
    )


def _join(separator: str, items: Any) -> str:
    if not isinstance(items, list):
        raise ValueError(f"join needs a list (from split or loop), got {items!r}")
    return separator.join(_text(i) for i in items)


def _functions(env: Mapping[str, str]) -> dict[str, tuple[Callable[..., Any], int, int]]:
    """name -> (function, fewest arguments, most arguments)."""
    return {
        "default": (lambda default, value: value if _text(value) != "" else default, 2, 2),
        "env": (lambda name: env.get(name, ""), 1, 1),
        "split": (lambda sep, value: _text(value).split(sep), 2, 2),
        "join": (_join, 2, 2),
        "replace": (lambda old, new, value: _text(value).replace(old, new), 3, 3),
        "regexReplaceAll": (_regex_replace, 3, 3),
        "loop": (_loop, 1, 3),
    }


@dataclass
class _Node:
    kind: str  # "text", "action", "range", "if"
    line: int
    text: str = ""
    pipeline: list[list[tuple[str, Any]]] = field(default_factory=list)
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _parse_pipeline(source: str, line: int, name: str) -> list[list[tuple[str, Any]]]:
    commands: list[list[tuple[str, Any]]] = [[]]
    position = 0
    while position < len(source):
        if not source[position:].strip():
            break
        match = _TOKEN.match(source, position)
        if match is None:
            raise TemplateError(line, f"unexpected {source[position:].strip()[:20]!r} in action", name)
        position = match.end()
        kind = match.lastgroup
        value = match.group(kind or "")
        if kind == "pipe":
            if not commands[-1]:
                raise TemplateError(line, "missing command before '|'", name)
            commands.append([])
        elif kind in ("lp", "rp"):
            raise TemplateError(line, "parenthesised pipelines are not supported", name)
        elif kind == "str":
            commands[-1].append(("value", _go_string(value)))
        elif kind == "raw":
            commands[-1].append(("value", value[1:-1]))
        elif kind == "num":
            commands[-1].append(("value", int(value)))
        elif kind == "field":
            commands[-1].append(("field", value[1:]))
        elif kind == "dot":
            commands[-1].append(("dot", None))
        else:
            commands[-1].append(("ident", value))
    if not commands[-1]:
        raise TemplateError(line, "missing value for command" if len(commands) > 1 else "empty action", name)
    return commands


def _parse(template: str, name: str) -> list[_Node]:
    root: list[_Node] = []
    stack: list[tuple[_Node, list[_Node]]] = []
    current = root
    position = 0
    pending_trim = False

    def line_at(offset: int) -> int:
        return template.count("\n", 0, offset) + 1

    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if pending_trim:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            current.append(_Node("text", line_at(position), text=text))
        position = match.end()
        pending_trim = bool(match.group(3))
        line = line_at(match.start())
        body = match.group(2).strip()
        if "{{" in body:
            raise TemplateError(line, "unclosed action", name)
        if body.startswith("/*") and body.endswith("*/"):
            continue
        keyword = body.split(None, 1)[0] if body else ""
        if keyword in ("range", "if"):
            rest = body[len(keyword) :]
            node = _Node(keyword, line, pipeline=_parse_pipeline(rest, line, name))
            current.append(node)
            stack.append((node, current))
            current = node.body
        elif keyword == "else" and body == "else":
            if not stack:
                raise TemplateError(line, "unexpected {{else}}", name)
            node = stack[-1][0]
            if current is node.orelse:
                raise TemplateError(line, "a second {{else}}", name)
            current = node.orelse
        elif keyword == "end" and body == "end":
            if not stack:
                raise TemplateError(line, "unexpected {{end}}", name)
            current = stack.pop()[1]
        else:
            current.append(_Node("action", line, pipeline=_parse_pipeline(body, line, name)))
    rest = template[position:]
    if "{{" in rest:
        raise TemplateError(line_at(position + rest.index("{{")), "unclosed action", name)
    if pending_trim:
        rest = rest.lstrip()
    if rest:
        current.append(_Node("text", line_at(position), text=rest))
    if stack:
        node = stack[-1][0]
        raise TemplateError(node.line, f"unexpected EOF: {{{{{node.kind}}}}} has no {{{{end}}}}", name)
    return root


class _Renderer:
    def __init__(self, env: Mapping[str, str], name: str) -> None:
        self.env = env
        self.name = name
        self.functions = _functions(env)

    def operand(self, item: tuple[str, Any], dot: Any, line: int) -> Any:
        kind, value = item
        if kind == "value":
            return value
        if kind == "field":
            if dot is not None and not isinstance(dot, Mapping):
                raise TemplateError(line, f"can't evaluate field {value} in {type(dot).__name__} {dot!r}", self.name)
            return self.env.get(value, "")
        if kind == "dot":
            return self.env if dot is None else dot
        if value in self.functions:
            return self.call(value, [], line)
        raise TemplateError(line, f'function "{value}" not defined', self.name)

    def call(self, name: str, args: list[Any], line: int) -> Any:
        function, fewest, most = self.functions[name]
        if not fewest <= len(args) <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
            raise TemplateError(line, f"wrong number of args for {name}: want {wanted} got {len(args)}", self.name)
        try:
            return function(*args)
        except TemplateError:
            raise
        except (ValueError, TypeError, re.error) as error:
            raise TemplateError(line, f"error calling {name}: {error}", self.name) from None

    def pipeline(self, commands: Sequence[list[tuple[str, Any]]], dot: Any, line: int) -> Any:
        result: Any = None
        for n, command in enumerate(commands):
            head = command[0]
            piped = [result] if n else []
            if head[0] == "ident":
                if head[1] not in self.functions:
                    raise TemplateError(line, f'function "{head[1]}" not defined', self.name)
                args = [self.operand(item, dot, line) for item in command[1:]]
                result = self.call(head[1], args + piped, line)
            else:
                if len(command) > 1 or piped:
                    raise TemplateError(line, f"can't give argument to non-function {command[0][1]!r}", self.name)
                result = self.operand(head, dot, line)
        return result

    def render(self, nodes: Sequence[_Node], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                out.append(_text(self.pipeline(node.pipeline, dot, node.line)))
            elif node.kind == "if":
                value = self.pipeline(node.pipeline, dot, node.line)
                self.render(node.body if value not in (None, "", 0, False, [], {}) else node.orelse, dot, out)
            else:
                items = self.pipeline(node.pipeline, dot, node.line)
                if isinstance(items, str | int) or items is None:
                    if items in (None, ""):
                        items = []
                    else:
                        raise TemplateError(node.line, f"range can't iterate over {items!r}", self.name)
                if not items:
                    self.render(node.orelse, dot, out)
                for item in items:
                    self.render(node.body, item, out)


def render(template: str, env: Mapping[str, str], *, name: str = "template") -> str:
    """``template`` rendered with the environment ``env``; a ``TemplateError`` names the line that is wrong.

    >>> render('{"consul": "{{ .CONSUL | default "localhost" }}:8500"}', {})
    '{"consul": "localhost:8500"}'
    >>> render("{{ range loop 3 }}{{ . }},{{ end }}", {})
    '0,1,2,'
    """
    return "".join(_render_parts(template, env, name))


def _render_parts(template: str, env: Mapping[str, str], name: str) -> list[str]:
    out: list[str] = []
    _Renderer(env, name).render(_parse(template, name), None, out)
    return out
