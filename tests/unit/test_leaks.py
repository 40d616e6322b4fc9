"""The leak scanner itself (no AWS): what it finds, and that its reports leak nothing."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reliability.leaks import (
    Leak,
    assert_no_leaks,
    find_leaks,
    fingerprint,
    format_leaks,
)

EMAIL = "Zxq-PERSONAL-7f3a@example.org"
NAME = "Zxq Secretname"
ACCENTED = "Zoë Sécretnàme"


def _all_forms(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        value.lower(),
        value.upper(),
        json.dumps(value)[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(raw).decode(),
    ]


def _no_form_of(value: str, text: str) -> bool:
    return not any(form.casefold() in text.casefold() for form in _all_forms(value))


def test_clean_text_has_no_leaks() -> None:
    texts = {"log": '{"event": "message.dead_lettered", "reason": "data.email: not valid"}'}
    assert find_leaks(texts, [EMAIL, NAME]) == []
    assert_no_leaks(texts, [EMAIL, NAME])


def test_plain_occurrence_with_source_and_offset() -> None:
    text = f"prefix {NAME} suffix"
    [leak] = find_leaks({"reason": text}, [NAME])
    assert (leak.source, leak.offset, leak.length, leak.encoding) == (
        "reason",
        7,
        len(NAME),
        "plain",
    )
    assert leak.value_length == len(NAME)
    assert leak.value_sha256 == fingerprint(NAME)
    assert text[leak.offset : leak.offset + leak.length] == NAME


@pytest.mark.parametrize("variant", [NAME.lower(), NAME.upper(), NAME.swapcase()])
def test_case_insensitive(variant: str) -> None:
    [leak] = find_leaks({"log": f"x={variant}"}, [NAME])
    assert leak.offset == 2


@pytest.mark.parametrize(
    ("encoded", "encoding"),
    [
        (json.dumps(ACCENTED)[1:-1], "json"),
        (json.dumps(ACCENTED)[1:-1].upper(), "json"),
        (repr(ACCENTED + "\x85")[1:-2], "plain"),  # repr keeps printable non-ASCII as is
        (ascii(ACCENTED)[1:-1], "ascii"),
        (urllib.parse.quote(ACCENTED, safe=""), "url"),
        (urllib.parse.quote(ACCENTED, safe="").lower(), "url"),
        (urllib.parse.quote_plus(ACCENTED, safe=""), "url-plus"),
    ],
)
def test_textual_encodings(encoded: str, encoding: str) -> None:
    leaks = find_leaks({"src": f"<<{encoded}>>"}, [ACCENTED])
    assert [(leak.offset, leak.encoding) for leak in leaks] == [(2, encoding)]


def test_json_escaped_control_characters() -> None:
    value = "Zxq\x1bSecret\x85name"
    line = json.dumps({"reason": value})
    [leak] = find_leaks({"log": line}, [value])
    assert leak.encoding == "json"


@pytest.mark.parametrize("shift", [0, 1, 2])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_at_every_alignment(shift: int, urlsafe: bool) -> None:
    # A value somewhere inside a larger blob: its base64 depends on the bytes before it.
    blob = b"\xfb\xff"[:shift] + b"prefix:" + EMAIL.encode() + b":suffix\xff\xfe"
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = encode(blob).decode()
    leaks = find_leaks({"attr": text}, [EMAIL])
    assert leaks, text
    assert all(leak.encoding.startswith("base64") for leak in leaks)


def test_base64_of_the_value_alone() -> None:
    encoded = base64.b64encode(NAME.encode()).decode()
    leaks = find_leaks({"attr": f"token={encoded}"}, [NAME])
    assert [leak.encoding for leak in leaks] == ["base64+0"]
    assert leaks[0].offset == len("token=")


def test_base64_is_case_sensitive() -> None:
    # Swapping the case of base64 gives other bytes: not a leak (and no false positive).
    encoded = base64.b64encode(EMAIL.encode()).decode().swapcase()
    assert find_leaks({"attr": encoded}, [EMAIL]) == []


def test_every_occurrence_in_every_source() -> None:
    texts = {
        "a": f"{NAME} and {NAME.lower()}",
        "b": f"nothing here; {urllib.parse.quote(EMAIL)}",
        "c": "clean",
    }
    leaks = find_leaks(texts, [NAME, EMAIL])
    assert [(leak.source, leak.offset) for leak in leaks] == [
        ("a", 0),
        ("a", len(NAME) + 5),
        ("b", len("nothing here; ")),
    ]


def test_one_report_per_occurrence() -> None:
    # For an ASCII value without special characters most encodings look the same.
    assert len(find_leaks({"x": f"[{NAME}]"}, [NAME])) == 1
    assert len(find_leaks({"x": "Zxq"}, ["Zxq", "Zxq"])) == 1


def test_reports_never_show_the_value() -> None:
    other = "+447700900777"
    text = f'{{"given_name": "{NAME}", "email": "{EMAIL}", "phone": "{other}", "n": 1}}'
    leaks = find_leaks({"log": text}, [NAME, EMAIL, other])
    assert len(leaks) == 3
    report = format_leaks(leaks) + repr(leaks) + "".join(str(leak) for leak in leaks)
    for value in (NAME, EMAIL, other):
        assert _no_form_of(value, report)
    # But the neighbourhood is shown, and the values are named by length and hash.
    assert '"given_name": "<personal len=14 sha256=' in leaks[0].snippet
    assert f"sha256={fingerprint(EMAIL)}>" in leaks[0].snippet  # the neighbour is redacted too


def test_snippet_never_cuts_a_neighbouring_value_in_half() -> None:
    padding = "-" * 30
    text = f"{EMAIL}{padding}{NAME}{padding}{EMAIL}"
    for leak in find_leaks({"t": text}, [NAME, EMAIL]):
        for value in (NAME, EMAIL):
            for length in range(6, len(value)):
                assert value[:length] not in leak.snippet
                assert value[-length:] not in leak.snippet


def test_overlapping_values_are_redacted_once() -> None:
    local = EMAIL.split("@")[0]
    leaks = find_leaks({"t": f"<{EMAIL}>"}, [local, EMAIL])
    assert len(leaks) == 2  # two values, one place
    for leak in leaks:
        assert leak.snippet == f"<<personal len={len(EMAIL)} sha256={fingerprint(EMAIL)}>>"


def test_snippet_is_one_escaped_line() -> None:
    [leak] = find_leaks({"t": f"line1\n\x1b[31m{NAME}\x00\nline3"}, [NAME])
    assert "\n" not in leak.snippet and "\x1b" not in leak.snippet and "\x00" not in leak.snippet
    assert leak.snippet.startswith("line1\\n")


def test_long_text_snippet_is_bounded() -> None:
    text = "a" * 10_000 + NAME + "b" * 10_000
    [leak] = find_leaks({"t": text}, [NAME])
    assert leak.offset == 10_000
    assert len(leak.snippet) < 200
    assert leak.snippet.startswith("...") and leak.snippet.endswith("...")


def test_assert_no_leaks_fails_without_the_value() -> None:
    with pytest.raises(AssertionError) as failure:
        assert_no_leaks({"dlq": f"reason: {EMAIL}"}, [EMAIL])
    message = str(failure.value)
    assert "dlq@8" in message and "1 personal value(s) leaked" in message
    assert _no_form_of(EMAIL, message)


def test_empty_value_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        find_leaks({"t": "x"}, [NAME, ""])


def test_surrogates_in_values_and_texts_do_not_crash() -> None:
    value = "Zxq\ud800Secret"
    [leak] = find_leaks({"t": f"<{value}>"}, [value])
    assert leak.offset == 1
    assert "\ud800" not in leak.snippet


def test_leak_is_a_value_object() -> None:
    leak = find_leaks({"t": NAME}, [NAME])[0]
    assert isinstance(leak, Leak)
    assert leak == find_leaks({"t": NAME}, [NAME])[0]
    assert NAME not in repr(leak) and NAME not in str(leak)


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(min_size=4, max_size=20).filter(lambda v: v.strip() == v and v.strip()),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
    form=st.sampled_from(["plain", "json", "url", "base64"]),
)
def test_finds_any_value_in_any_form(value: str, before: str, after: str, form: str) -> None:
    encoded = {
        "plain": value,
        "json": json.dumps(value)[1:-1],
        "url": urllib.parse.quote(value, safe=""),
        "base64": base64.b64encode(value.encode("utf-8", "surrogatepass")).decode(),
    }[form]
    if form == "base64" and len(encoded) < 12:
        return  # short base64 fragments are ignored on purpose (false positives)
    leaks = find_leaks({"t": before + encoded + after}, [value])
    assert leaks
    for leak in leaks:
        assert value not in leak.snippet
