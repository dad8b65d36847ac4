"""The small, sandboxed language of every template a user writes (letters, later mail templates).

A template is plain text with placeholders: `{{ customer.name }}`, optionally with filters,
`{{ customer.name|upper }}`, `{{ customer.address|default:"—" }}`. That is all there is: no
tags, loops, conditions, includes or attribute lookups, so nothing a user writes can nest,
repeat, reach an object or run code. The caller names the placeholders and gives their values
as plain strings; any other name, and any other filter, is an error that names it.

Cost is linear in the template's size: one left-to-right scan, each placeholder tokenised once,
a bounded number of filters per placeholder each bounded by the output limit, and the
rendering stops as soon as the text passes `TEMPLATE_MAX_OUTPUT_CHARS`. Templates longer than
`TEMPLATE_MAX_CHARS` are refused before any work.

The result is plain text (a `str`, never Django's SafeString): the text part of a mail takes
it as it is; anything that shows it as HTML must escape it (Django's `{{ }}` does). Values are
data, never template: a customer name holding `{{ … }}` is printed as written.

This module sits in the project package, below every app, and imports no app: `accounts`,
`invoices` and `outbox` can all use it without importing upward.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext

# At most this many filters on one placeholder: each costs up to the output limit.
MAX_FILTERS = 4
# The longest text a filter argument (`default:"…"`) may hold.
MAX_ARGUMENT_CHARS = 200
# How much of a faulty piece of template an error message quotes.
_QUOTE_CHARS = 60

# The next thing that is not plain text: a placeholder, or a Django tag or comment (which this
# language does not have: a letter written for the old engine must fail, not print its tags).
_OPENER = re.compile(r"\{[{%#]")
# Inside {{ … }}: each alternative consumes at least one character and the quoted ones stop at
# their closing quote or at a line end, so tokenising is linear. A lone quote is unterminated.
_TOKEN = re.compile(r"""\s+|\||:|"[^"\n]*"|'[^'\n]*'|[^\s|:"']+|["']""")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _capfirst(value: str) -> str:
    return value[:1].upper() + value[1:]


# name → (function, takes an argument)
FILTERS: dict[str, tuple[Callable[..., str], bool]] = {
    "upper": (str.upper, False),
    "lower": (str.lower, False),
    "title": (str.title, False),
    "capfirst": (_capfirst, False),
    "default": (lambda value, fallback: value if value.strip() else fallback, True),
}


class TemplateError(ValidationError):
    """A template that cannot be rendered, with a translated message naming the problem."""


@dataclass(frozen=True)
class Placeholder:
    name: str
    filters: tuple[tuple[str, str | None], ...]


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"


def _example(names: Iterable[str]) -> str:
    first = next(iter(names), "name")
    return f"{{{{ {first} }}}}"


def placeholders_list(names: Iterable[str]) -> str:
    """ "{{ customer.name }}, {{ customer.address }}": the placeholders a help text offers."""
    return ", ".join(f"{{{{ {name} }}}}" for name in names)


def _placeholder_parse(inner: str, *, names: dict[str, None], line: int) -> Placeholder:
    """One placeholder's inside ("customer.name|default:'x'") → Placeholder."""
    tokens = [m.group() for m in _TOKEN.finditer(inner) if not m.group().isspace()]
    written = _quote("{{" + inner + "}}")
    if not tokens or not _NAME.fullmatch(tokens[0]):
        raise TemplateError(
            gettext(
                "“%(text)s” on line %(line)s is not a placeholder. Write a name in double "
                "braces, such as %(example)s, optionally with filters: %(filters)s."
            )
            % {
                "text": written,
                "line": line,
                "example": _example(names),
                "filters": ", ".join(FILTERS),
            },
            code="syntax",
        )
    name = tokens[0]
    if name not in names:
        raise TemplateError(
            gettext("Unknown placeholder “%(name)s” on line %(line)s. You can use: %(names)s.")
            % {"name": _quote(name), "line": line, "names": placeholders_list(names)},
            code="unknown_placeholder",
        )
    filters: list[tuple[str, str | None]] = []
    rest = tokens[1:]
    while rest:
        if rest[0] != "|" or len(rest) < 2 or not _NAME.fullmatch(rest[1]):
            raise TemplateError(
                gettext(
                    "“%(text)s” on line %(line)s is not a placeholder: after the name only "
                    "filters may follow, each as |name, such as %(example)s."
                )
                % {"text": written, "line": line, "example": f"{{{{ {name}|upper }}}}"},
                code="syntax",
            )
        filter_name, rest = rest[1], rest[2:]
        if filter_name not in FILTERS:
            raise TemplateError(
                gettext("Unknown filter “%(filter)s” on line %(line)s. You can use: %(filters)s.")
                % {"filter": _quote(filter_name), "line": line, "filters": ", ".join(FILTERS)},
                code="unknown_filter",
            )
        argument = None
        if rest and rest[0] == ":":
            if len(rest) < 2 or rest[1][0] not in "\"'" or len(rest[1]) < 2:
                raise TemplateError(
                    gettext(
                        "The filter “%(filter)s” on line %(line)s needs its text in quotes, "
                        "such as %(example)s."
                    )
                    % {"filter": filter_name, "line": line, "example": f'{filter_name}:"—"'},
                    code="argument",
                )
            argument, rest = rest[1][1:-1], rest[2:]
        takes_argument = FILTERS[filter_name][1]
        if takes_argument and argument is None:
            raise TemplateError(
                gettext(
                    "The filter “%(filter)s” on line %(line)s needs its text in quotes, "
                    "such as %(example)s."
                )
                % {"filter": filter_name, "line": line, "example": f'{filter_name}:"—"'},
                code="argument",
            )
        if not takes_argument and argument is not None:
            raise TemplateError(
                gettext("The filter “%(filter)s” on line %(line)s takes no text.")
                % {"filter": filter_name, "line": line},
                code="argument",
            )
        if argument is not None and len(argument) > MAX_ARGUMENT_CHARS:
            raise TemplateError(
                gettext(
                    "The text of the filter “%(filter)s” on line %(line)s is too long: at most "
                    "%(limit)s characters."
                )
                % {"filter": filter_name, "line": line, "limit": MAX_ARGUMENT_CHARS},
                code="argument",
            )
        filters.append((filter_name, argument))
        if len(filters) > MAX_FILTERS:
            raise TemplateError(
                gettext("The placeholder on line %(line)s has more than %(limit)s filters.")
                % {"line": line, "limit": MAX_FILTERS},
                code="filters",
            )
    return Placeholder(name, tuple(filters))


def template_parse(source: str, *, names: Iterable[str]) -> list[str | Placeholder]:
    """`source` as plain-text pieces and placeholders, every name checked against `names`.

    Raises TemplateError (a ValidationError) for a template that is too long, a tag, an
    unclosed or malformed placeholder, an unknown name or filter.
    """
    names = tuple(names)
    if len(source) > _CACHED_CHARS:
        return list(_parsed.__wrapped__(source, names, settings.TEMPLATE_MAX_CHARS))
    return list(_parsed(source, names, settings.TEMPLATE_MAX_CHARS))


# A job renders one template for thousands of mails: it is parsed once. Only a parse that
# succeeded is kept (an error is raised again, in the language active then), and only of a
# template of a usual size: a parse takes up to ~100 bytes a character ("{{a}}" 2,000 times),
# so 32 of at most 4,000 characters hold at most ~13 MB, whatever anyone types.
_CACHED_CHARS = 4000


@functools.lru_cache(maxsize=32)
def _parsed(source: str, names: tuple[str, ...], limit: int) -> tuple[str | Placeholder, ...]:
    names = dict.fromkeys(names)  # a set that keeps the caller's order for the messages
    if len(source) > limit:
        raise TemplateError(
            gettext("The template is too long: %(count)s characters, at most %(limit)s.")
            % {"count": len(source), "limit": limit},
            code="template_too_long",
        )
    parts: list[str | Placeholder] = []
    position, line = 0, 1
    while match := _OPENER.search(source, position):
        start = match.start()
        line += source.count("\n", position, start)
        if start > position:
            parts.append(source[position:start])
        if match.group() != "{{":
            closer = "%}" if match.group() == "{%" else "#}"
            end = source.find(closer, start, start + 200)
            tag = source[start : end + 2] if end != -1 else source[start : start + 20]
            raise TemplateError(
                gettext(
                    "“%(tag)s” on line %(line)s: tags and comments are not supported here, "
                    "only placeholders such as %(example)s."
                )
                % {"tag": _quote(tag.replace("\n", " ")), "line": line, "example": _example(names)},
                code="tag",
            )
        end = source.find("}}", start + 2)
        if end == -1:
            raise TemplateError(
                gettext("The placeholder opened with {{ on line %(line)s is not closed with }}.")
                % {"line": line},
                code="unclosed",
            )
        parts.append(_placeholder_parse(source[start + 2 : end], names=names, line=line))
        line += source.count("\n", start, end)
        position = end + 2
    if position < len(source):
        parts.append(source[position:])
    return tuple(parts)


def template_check(source: str, *, names: Iterable[str]) -> None:
    """Raise TemplateError unless `source` is a valid template over `names` (no values needed)."""
    template_parse(source, names=names)


def _too_long(limit: int) -> TemplateError:
    return TemplateError(
        gettext("The text would be longer than %(limit)s characters.") % {"limit": limit},
        code="output_too_long",
    )


def template_render(source: str, values: Mapping[str, str]) -> str:
    """`source` with its placeholders replaced by `values` (name → plain string).

    The names of `values` are the whitelist. Raises TemplateError for a bad template, or when
    the text would pass TEMPLATE_MAX_OUTPUT_CHARS (code "output_too_long").
    """
    for name, value in values.items():
        if not isinstance(value, str):  # a model or a lazy object could reach other data
            raise TypeError(f"placeholder {name} must be a str, not {type(value).__name__}")
    limit = settings.TEMPLATE_MAX_OUTPUT_CHARS
    pieces: list[str] = []
    size = 0
    for part in template_parse(source, names=values):
        if isinstance(part, str):
            text = part
        else:
            text = values[part.name]
            if len(text) > limit:
                raise _too_long(limit)
            for filter_name, argument in part.filters:
                function, takes_argument = FILTERS[filter_name]
                text = function(text, argument) if takes_argument else function(text)
                if len(text) > limit:  # str.upper may lengthen ("ß" → "SS")
                    raise _too_long(limit)
        size += len(text)
        if size > limit:
            raise _too_long(limit)
        pieces.append(text)
    return "".join(pieces)
