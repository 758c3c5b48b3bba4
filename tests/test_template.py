"""The <zs-meta> template pass (core/template.py): which responses it applies to and what it writes."""

import pytest

from zeroserve.core import template

META = {"user": "ada", "greeting": "hello <b>"}


@pytest.mark.parametrize("content_type", ["text/html", "text/html; charset=utf-8", "application/xml"])
def test_template_applies_to_html_and_xml(content_type):
    """The pass applies to HTML (with or without parameters) and to exactly application/xml."""
    assert template.applies(content_type, META)


@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", "application/xml; charset=utf-8",
                                          "application/json", "text/htmlx"])
def test_template_skips_other_types(content_type):
    """Other types, including application/xml with parameters, are not templated."""
    assert not template.applies(content_type, META)


def test_template_needs_metadata():
    """Without any metadata an HTML page is not templated."""
    assert not template.applies("text/html; charset=utf-8", {})


def test_template_replaces_keys_trimmed():
    """Each tag becomes the value of its trimmed key; values are inserted as they are."""
    page = b"<p><zs-meta> user </zs-meta> says <zs-meta>greeting</zs-meta></p>"
    assert template.render(page, META) == b"<p>ada says hello <b></p>"


def test_template_unknown_key_is_empty():
    """A key that is not set becomes the empty string."""
    assert template.render(b"[<zs-meta>nope</zs-meta>]", META) == b"[]"


def test_template_unterminated_tag_copied():
    """An opening tag without a closing tag is copied through with the rest of the file."""
    page = b"a<zs-meta>user</zs-meta>b<zs-meta>user c"
    assert template.render(page, META) == b"aadab<zs-meta>user c"


def test_template_invalid_utf8_unchanged():
    """A file that is not valid UTF-8 is served unchanged."""
    page = b"\xff<zs-meta>user</zs-meta>"
    assert template.render(page, META) == page


def test_template_multibyte_text_kept():
    """UTF-8 text around tags survives, and values may hold any characters."""
    page = "é<zs-meta>k</zs-meta>ü".encode()
    assert template.render(page, {"k": "日本"}) == "é日本ü".encode()
