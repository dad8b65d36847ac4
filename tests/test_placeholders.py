"""The placeholder language of user-written templates (directo_mail.placeholders): what it
renders, every error it names, and its bounds."""

from __future__ import annotations

import pytest
from django.utils.safestring import SafeData

from directo_mail import placeholders
from directo_mail.placeholders import (
    MAX_ARGUMENT_CHARS,
    MAX_FILTERS,
    TemplateError,
    placeholders_list,
    template_check,
    template_render,
)

pytestmark = [pytest.mark.usefixtures("english")]

VALUES = {"customer.name": "Smith & <Sons>", "customer.address": "1 High St\nLeeds", "empty": ""}


def _error(source: str, values: dict | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as raised:
        template_render(source, VALUES if values is None else values)
    return raised.value


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Dear {{ customer.name }},", "Dear Smith & <Sons>,"),
        ("{{customer.name}}", "Smith & <Sons>"),
        ("{{ customer.name|upper }}", "SMITH & <SONS>"),
        ("{{ customer.name | lower }}", "smith & <sons>"),
        ("{{ customer.address|title }}", "1 High St\nLeeds"),
        ("{{ empty|default:'n/a' }}|{{ empty|default:\"—\" }}", "n/a|—"),
        ("{{ customer.name|default:'n/a' }}", "Smith & <Sons>"),
        ("{{ empty|default:'sir'|capfirst }}", "Sir"),
        ("A stray }} and a single { brace.", "A stray }} and a single { brace."),
        ("", ""),
    ],
)  # fmt: skip
def test_it_renders_placeholders_and_filters(source, expected):
    rendered = template_render(source, VALUES)
    assert rendered == expected
    assert type(rendered) is str and not isinstance(rendered, SafeData)  # the caller escapes


def test_a_value_is_data_never_template():
    values = {"customer.name": "{{ customer.secret }}{% debug %}", "customer.secret": "s3cret"}
    assert template_render("[{{ customer.name }}]", values) == "[{{ customer.secret }}{% debug %}]"


def test_values_must_be_plain_strings():
    with pytest.raises(TypeError):
        template_render("{{ customer }}", {"customer": object()})


@pytest.mark.parametrize(
    ("source", "code", "message"),
    [
        ("a\nb {{ customer.phone }}", "unknown_placeholder",
         "Unknown placeholder “customer.phone” on line 2. You can use: {{ customer.name }}, "
         "{{ customer.address }}, {{ empty }}."),
        ("{{ customer.name|ljust:'200' }}", "unknown_filter",
         "Unknown filter “ljust” on line 1. You can use: upper, lower, title, capfirst, default."),
        ("\n\n{% for x in y %}{{ x }}{% endfor %}", "tag",
         "“{% for x in y %}” on line 3: tags and comments are not supported here, only "
         "placeholders such as {{ customer.name }}."),
        ("{# a comment #}", "tag", "“{# a comment #}” on line 1: tags and comments"),
        ("x {{ customer.name ", "unclosed",
         "The placeholder opened with {{ on line 1 is not closed with }}."),
        ("{{ }}", "syntax", "“{{ }}” on line 1 is not a placeholder."),
        ("{{ 'literal'|upper }}", "syntax", "“{{ 'literal'|upper }}” on line 1 is not a"),
        ("{{ customer.name upper }}", "syntax", "after the name only filters may follow"),
        ("{{ customer.name|default }}", "argument",
         "The filter “default” on line 1 needs its text in quotes, such as default:\"—\"."),
        ("{{ customer.name|default:x }}", "argument", "needs its text in quotes"),
        ("{{ customer.name|default:'x }}", "argument", "needs its text in quotes"),
        ("{{ customer.name|upper:'x' }}", "argument", "The filter “upper” on line 1 takes no"),
        ("{{ customer.name|default:'" + "x" * (MAX_ARGUMENT_CHARS + 1) + "' }}", "argument",
         f"is too long: at most {MAX_ARGUMENT_CHARS} characters"),
        ("{{ customer.name" + "|upper" * (MAX_FILTERS + 1) + " }}", "filters",
         f"The placeholder on line 1 has more than {MAX_FILTERS} filters."),
        ("{{ {{ customer.name }} }}", "syntax", "is not a placeholder"),
        ("{{ customer.__class__ }}", "unknown_placeholder", "placeholder “customer.__class__”"),
    ],
)  # fmt: skip
def test_each_error_is_named(source, code, message):
    error = _error(source)
    assert error.code == code
    assert message in error.message


def test_a_long_piece_is_quoted_short_in_the_message():
    error = _error("{{ " + "x" * 5000 + " }}")
    assert error.code == "unknown_placeholder" and len(error.message) < 300


def test_the_template_size_bound(settings):
    settings.TEMPLATE_MAX_CHARS = 100
    assert template_render("x" * 100, {}) == "x" * 100
    error = _error("x" * 101, {})
    assert (error.code, error.message) == (
        "template_too_long",
        "The template is too long: 101 characters, at most 100.",
    )


def test_the_output_bound_counts_text_values_and_what_filters_make(settings):
    settings.TEMPLATE_MAX_OUTPUT_CHARS = 10
    assert template_render("{{ v }}{{ v }}", {"v": "12345"}) == "1234512345"
    for source, values in (
        ("{{ v }}{{ v }}x", {"v": "12345"}),  # text after the values
        ("{{ v }}", {"v": "x" * 11}),  # one value alone
        ("{{ v|upper }}", {"v": "ß" * 6}),  # upper doubles ß: 12 characters
        ("{{ e|default:'abcdefghijk' }}", {"e": ""}),  # the fallback
    ):
        error = _error(source, values)
        assert (error.code, error.message) == (
            "output_too_long",
            "The text would be longer than 10 characters.",
        )


def test_check_and_list_need_no_values():
    template_check("{{ a }} {{ b|upper }}", names=["a", "b"])
    with pytest.raises(TemplateError):
        template_check("{{ c }}", names=["a", "b"])
    assert placeholders_list(["b", "a"]) == "{{ b }}, {{ a }}"


def test_errors_are_in_the_users_language():
    from django.utils import translation

    with translation.override("pl"):
        message = _error("{{ customer.phone }}").message
    assert "customer.phone" in message and not message.startswith("Unknown placeholder")


def test_a_template_is_parsed_once_and_a_huge_one_is_never_kept():
    """A job renders one template thousands of times: its parse is kept. One of thousands of
    placeholders ("{{a}}" repeated) is not: parses of 32 such templates would hold a gigabyte."""
    placeholders._parsed.cache_clear()
    usual = "Dzień dobry {{ name }}, faktura {{ number|upper }}."
    for name in ("Anna", "Jan"):
        assert template_render(usual, {"name": name, "number": "fv/1"}) == (
            f"Dzień dobry {name}, faktura FV/1."
        )
    assert placeholders._parsed.cache_info().hits == 1

    huge = "{{ a }}" * 2000
    assert template_render(huge, {"a": "x"}) == "x" * 2000
    assert template_render(huge, {"a": "y"}) == "y" * 2000
    assert placeholders._parsed.cache_info().currsize == 1  # only the usual one


def test_a_kept_parse_still_checks_the_names_of_each_use():
    placeholders._parsed.cache_clear()
    template_render("{{ name }}", {"name": "Anna"})
    with pytest.raises(TemplateError) as refused:
        template_render("{{ name }}", {"number": "FV/1"})  # another caller's names
    assert refused.value.code == "unknown_placeholder"
