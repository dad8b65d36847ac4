"""The translation catalogues (pl, et, en): complete, in sync with the code, compiled, used."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import polib
import pytest
from django.conf import settings
from pytest_django.asserts import assertContains, assertNotContains

from accounts.models import User
from tests import factories

LANGUAGES = ["pl", "et", "en"]
PLURAL_FORMS = {
    "pl": (
        "nplurals=3; plural=(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);"
    ),
    "et": "nplurals=2; plural=(n != 1);",
    "en": "nplurals=2; plural=(n != 1);",
}
# %(name)s, %s, %d, %% ... as Python formats them (blocktranslate's {{ var }} become %(var)s).
PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]")
# What `makemessages` must not look at: the same as the documented command, plus what git ignores.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "tests", "var", ".env", "__pycache__", ".pytest_cache", ".ruff_cache",
    "node_modules", "staticfiles", "*.mo",
)  # fmt: skip


def _po_path(language: str, root: Path | None = None) -> Path:
    return (root or Path(settings.BASE_DIR)) / "locale" / language / "LC_MESSAGES" / "django.po"


def _po(language: str, root: Path | None = None) -> polib.POFile:
    return polib.pofile(str(_po_path(language, root)))


def _msgids(po: polib.POFile) -> set[tuple[str | None, str, str]]:
    return {(e.msgctxt, e.msgid, e.msgid_plural) for e in po if not e.obsolete}


def _describe(keys: set[tuple[str | None, str, str]]) -> str:
    return "\n".join(
        f"  {(ctxt + ' | ') if ctxt else ''}{msgid!r}" for ctxt, msgid, _plural in sorted(keys)
    )


def _messages(mo: polib.MOFile) -> dict:
    messages = {}
    for entry in mo:
        if not entry.msgid:  # the header: its text is regenerated, not translated
            continue
        key = (entry.msgctxt, entry.msgid, entry.msgid_plural)
        messages[key] = (
            tuple(sorted(entry.msgstr_plural.items())) if entry.msgid_plural else entry.msgstr
        )
    return messages


# -- (1) complete catalogues -----------------------------------------------------------------
@pytest.mark.parametrize("language", LANGUAGES)
def test_catalogue_is_complete(language):
    po = _po(language)
    assert not po.metadata_is_fuzzy, f"{language}: the header is marked fuzzy"
    assert po.metadata.get("Language") == language
    assert po.metadata.get("Plural-Forms") == PLURAL_FORMS[language]
    assert po.metadata.get("Content-Type") == "text/plain; charset=UTF-8"
    untranslated = {(e.msgctxt, e.msgid, e.msgid_plural) for e in po.untranslated_entries()}
    assert not untranslated, f"{language}: untranslated entries:\n{_describe(untranslated)}"
    fuzzy = {(e.msgctxt, e.msgid, e.msgid_plural) for e in po.fuzzy_entries()}
    assert not fuzzy, f"{language}: fuzzy entries (review, drop the flag):\n{_describe(fuzzy)}"
    plural_count = int(re.match(r"nplurals=(\d+)", PLURAL_FORMS[language])[1])
    for entry in po:
        if entry.msgid_plural:
            assert len(entry.msgstr_plural) == plural_count, (
                f"{language}: {entry.msgid!r} needs {plural_count} plural forms"
            )


@pytest.mark.parametrize("language", LANGUAGES)
def test_placeholders_are_kept(language):
    problems = []
    for entry in _po(language):
        if entry.obsolete or not entry.translated():
            continue
        if entry.msgid_plural:
            wanted = Counter(PLACEHOLDER.findall(entry.msgid_plural))
            allowed = set(wanted) | set(PLACEHOLDER.findall(entry.msgid))
            seen: set[str] = set()
            for index, text in sorted(entry.msgstr_plural.items()):
                found = set(PLACEHOLDER.findall(text))
                seen |= found
                if not found <= allowed:
                    problems.append(f"{entry.msgid!r} [{index}]: unknown {found - allowed}")
            if not set(wanted) <= seen:
                problems.append(f"{entry.msgid_plural!r}: lost {set(wanted) - seen}")
        else:
            wanted = Counter(PLACEHOLDER.findall(entry.msgid))
            found = Counter(PLACEHOLDER.findall(entry.msgstr))
            if wanted != found:
                problems.append(
                    f"{entry.msgid!r}: {sorted(wanted.elements())} != {sorted(found.elements())}"
                )
    assert not problems, f"{language}: placeholders differ:\n" + "\n".join(problems)


def test_languages_have_the_same_messages():
    reference = _msgids(_po("pl"))
    for language in ["et", "en"]:
        other = _msgids(_po(language))
        assert other == reference, (
            f"{language} and pl differ.\nOnly in {language}:\n{_describe(other - reference)}\n"
            f"Only in pl:\n{_describe(reference - other)}\nRun `make messages`."
        )


def test_polish_and_estonian_letters_survive():
    """A catalogue saved in the wrong encoding loses ł, ą, õ ... ; these words must be intact."""
    polish = {e.msgid: e.msgstr for e in _po("pl")}
    estonian = {e.msgid: e.msgstr for e in _po("et")}
    assert polish["Mail sender"] == "Nadawca wiadomości e-mail"
    assert polish["Mail server and port"] == "Serwer poczty mailowej i port"
    assert polish["User name"] == "Nazwa użytkownika"
    assert polish["Password"] == "Hasło"
    assert estonian["Mail sending user code"] == "Meili saatmise kasutaja kood"


# -- (2) in sync with the code ---------------------------------------------------------------
def test_catalogue_matches_the_code(tmp_path):
    """`makemessages` on a copy of the source finds exactly the committed messages."""
    tree = tmp_path / "src"
    shutil.copytree(settings.BASE_DIR, tree, ignore=NOT_SOURCE)
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "makemessages",
            "-l",
            "pl",
            "--no-location",
            "--ignore=.venv/*",
            "--ignore=tests/*",
            "--ignore=var/*",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"makemessages failed:\n{result.stdout}\n{result.stderr}"
    committed = _msgids(_po("pl"))
    fresh = _msgids(_po("pl", tree))
    new, gone = fresh - committed, committed - fresh
    assert not new and not gone, (
        "The catalogues are out of date: run `make messages`, then translate.\n"
        f"Strings in the code but not in the catalogues:\n{_describe(new)}\n"
        f"Strings in the catalogues but no longer in the code:\n{_describe(gone)}"
    )


# -- (3) compiled -----------------------------------------------------------------------------
@pytest.mark.parametrize("language", LANGUAGES)
def test_mo_is_compiled_from_the_po(language, tmp_path):
    po_path = _po_path(language)
    mo_path = po_path.with_suffix(".mo")
    assert mo_path.exists(), f"{mo_path} is missing: run `manage.py compilemessages`"
    fresh = tmp_path / "django.mo"
    polib.pofile(str(po_path)).save_as_mofile(str(fresh))
    committed_messages = _messages(polib.mofile(str(mo_path)))
    fresh_messages = _messages(polib.mofile(str(fresh)))
    stale = {
        key
        for key in committed_messages.keys() | fresh_messages.keys()
        if committed_messages.get(key) != fresh_messages.get(key)
    }
    assert not stale, (
        f"{mo_path} is older than the .po: run `manage.py compilemessages`. Differs in:\n"
        + _describe(stale)
    )
    committed_header = polib.mofile(str(mo_path)).metadata.get("Plural-Forms")
    assert committed_header == PLURAL_FORMS[language]


# -- (4) used by the pages --------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "texts"),
    [
        ("pl", ["Nadawca wiadomości e-mail", "Serwer poczty mailowej i port", "Nazwa użytkownika"]),
        ("et", ["Meili saatja", "Meiliserver ja port", "Kasutajanimi"]),
        ("en", ["Mail sender", "Mail server and port", "User name"]),
    ],
)
def test_card_page_speaks_the_users_language(client, language, texts):
    client.force_login(factories.user(language=language))
    response = client.get("/accounts/card/")
    assert response.status_code == 200
    assertContains(response, f'<html lang="{language}">')
    for text in texts:
        assertContains(response, text)


@pytest.mark.django_db
def test_language_switcher_stores_the_choice(client):
    user = factories.user(language="en")
    login = client.post(
        "/accounts/login/", {"username": user.code, "password": factories.LOGIN_PASSWORD}
    )
    assert login.status_code == 302  # the login page: axes refuses client.login() (no request)
    assertContains(client.get("/accounts/card/"), "Mail sender")

    response = client.post("/i18n/setlang/", {"language": "pl", "next": "/accounts/card/"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/card/"
    user.refresh_from_db()
    assert user.language == "pl"
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "pl"
    page = client.get(response["Location"])
    assertContains(page, "Nadawca wiadomości e-mail")
    assertContains(page, "Serwer poczty mailowej i port")
    assertNotContains(page, "Mail sender")


@pytest.mark.django_db
def test_language_switcher_refuses_an_unknown_language(client):
    user = factories.user(language="")
    client.force_login(user)

    response = client.post("/i18n/setlang/", {"language": "xx", "next": "/accounts/card/"})

    assert response.status_code == 302
    assert response["Location"] == "/accounts/card/"
    assert settings.LANGUAGE_COOKIE_NAME not in response.cookies
    assert User.objects.get(pk=user.pk).language == ""
    assert client.get("/accounts/card/").status_code == 200


@pytest.mark.django_db
def test_language_switcher_never_redirects_off_site(client):
    client.force_login(factories.user(language="en"))

    for bad in ["https://evil.example/", "//evil.example/", "javascript:alert(1)"]:
        response = client.post("/i18n/setlang/", {"language": "et", "next": bad})
        assert response.status_code == 302
        assert response["Location"] == "/", bad


@pytest.mark.django_db
def test_anonymous_visitor_gets_the_login_page_in_the_chosen_language(client):
    response = client.post("/i18n/setlang/", {"language": "et", "next": "/accounts/login/"})

    assert response.status_code == 302
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "et"
    page = client.get("/accounts/login/")
    assertContains(page, '<html lang="et">')
    assertContains(page, "Logi sisse")
    assertContains(page, "Salasõna")
