"""Decoding errors: what kind each is, nesting, Unicode, and messages that never carry the input."""

import orjson
import pytest

from schemas import PromptRequest, QualityFeedback, SchemaError, codec, decode
from schemas import limits as L
from schemas.limits import MAX_EVENT_BYTES
from tests.unit.schemas.examples import request


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_unicode"),
        (b'{"prompt_id": "p", "text": "\\ud800"}', "invalid_unicode"),
        (b"[" * 1000 + b"]" * 1000, "too_deep"),
        (b"[1, 2]", "validation"),
        (b"x" * (MAX_EVENT_BYTES + 1), "too_large"),
    ],
)
def test_decode_errors_say_what_kind(data, kind):
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, data)
    assert err.value.kind == kind
    assert str(err.value).startswith("PromptRequest: ")


def test_decode_errors_do_not_echo_the_input():
    secret = "my password is hunter2"
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, request(text=secret, tolerance=3))
    assert "hunter2" not in str(err.value)


# --- nesting, Unicode and other payloads the parser refuses ---------------------------------------

def _nested(levels, container):
    """A JSON value `levels` arrays or objects deep, a number at the bottom."""
    if container == "array":
        return b"[" * levels + b"1" + b"]" * levels
    return b'{"k":' * levels + b"1" + b"}" * levels


DEEP = {
    "metadata value": lambda v: b'{"prompt_id":"p","text":"hi","metadata":{"k":' + v + b"}}",
    "text": lambda v: b'{"prompt_id":"p","text":' + v + b"}",
    "unknown field": lambda v: b'{"prompt_id":"p","text":"hi","extra":' + v + b"}",
    "root": lambda v: v,
}


@pytest.mark.parametrize("container", ["array", "object"])
@pytest.mark.parametrize("where", list(DEEP))
def test_deep_nesting_is_too_deep_not_invalid_json(where, container):
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, DEEP[where](_nested(1000, container)))
    assert err.value.kind == "too_deep"
    assert str(err.value).startswith(
        f"PromptRequest: JSON nested deeper than {L.MAX_JSON_DEPTH} levels at line 1 column "
    )


def test_deep_nesting_in_other_events_is_too_deep():
    deep = _nested(1000, "array")
    data = b'{"prompt_id":"p","model_id":"m","quality":' + deep + b',"source":"u"}'
    with pytest.raises(SchemaError) as err:
        decode(QualityFeedback, data)
    assert err.value.kind == "too_deep"


@pytest.mark.parametrize("container", ["array", "object"])
def test_the_parser_limit_is_max_json_depth(container):
    """Pins the limit of pydantic-core's parser: MAX_JSON_DEPTH levels parse, one more does not."""
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, _nested(L.MAX_JSON_DEPTH, container))
    assert err.value.kind == "validation"  # parsed: not a PromptRequest
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, _nested(L.MAX_JSON_DEPTH + 1, container))
    assert err.value.kind == "too_deep"


def test_nesting_below_the_limit_is_a_validation_error_naming_the_field():
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, DEEP["metadata value"](_nested(50, "array")))
    assert err.value.kind == "validation"
    assert "metadata.k" in str(err.value)


LONE_SURROGATES = [
    rb'"\ud800"',  # a high half at the end of the string
    rb'"a\ud800b"',  # a high half followed by a character
    rb'"\ud800\n"',  # ... by another escape
    rb'"\ud800\u0041"',  # ... by a \u escape that is not a low half
    rb'"\udc00"',  # a low half alone
    rb'"\uDBFF\uDBFF"',  # two high halves
]


@pytest.mark.parametrize("text", LONE_SURROGATES, ids=lambda t: t.decode())
def test_a_lone_surrogate_escape_is_invalid_unicode(text):
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, b'{"prompt_id":"p","text":' + text + b"}")
    assert err.value.kind == "invalid_unicode"
    message = str(err.value)
    assert message.startswith("PromptRequest: not valid Unicode: a lone UTF-16 surrogate escape")
    assert "hex escape" not in message
    assert "at line 1 column " in message


def test_a_lone_surrogate_escape_in_a_key_or_another_field_is_invalid_unicode():
    for data in (rb'{"prompt_id":"\ud800","text":"hi"}',
                 rb'{"prompt_id":"p","text":"hi","metadata":{"\udfff":1}}'):
        with pytest.raises(SchemaError) as err:
            decode(PromptRequest, data)
        assert err.value.kind == "invalid_unicode"


def test_a_surrogate_pair_and_an_escaped_backslash_are_fine():
    assert decode(PromptRequest, rb'{"prompt_id":"p","text":"\ud83d\ude00"}').text == "😀"
    assert decode(PromptRequest, rb'{"prompt_id":"p","text":"\\ud800"}').text == "\\ud800"


def test_a_str_with_a_lone_surrogate_is_invalid_unicode():
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, '{"prompt_id":"p","text":"\ud800"}')
    assert err.value.kind == "invalid_unicode"
    assert "lone UTF-16 surrogate" in str(err.value)
    assert decode(PromptRequest, '{"prompt_id":"p","text":"é"}').text == "é"


@pytest.mark.parametrize(
    ("data", "at"),
    [
        (b"\xff", 0),
        (b"\xff\xfe\x00", 0),  # UTF-16 with its byte order mark
        (b'{"prompt_id":"p","text":"\xff"}', 25),
        (b'{"prompt_id":"p","text":"caf\xc3"}', 28),  # a truncated 2-byte character
        (b'{"prompt_id":"p","text":"\xed\xa0\x80"}', 25),  # a surrogate encoded as UTF-8 (CESU)
        (b'{"prompt_id":"p","text":"\xc0\xaf"}', 25),  # an overlong encoding
        (b'{"prompt_id":"p","text":"hi"}\xff', 29),  # after the object
        (b'{"prompt_id":"p","text":"hi","metadata":{"\xe9":1}}', 42),  # Latin-1 in a key
    ],
)
def test_bytes_that_are_not_utf8_are_invalid_unicode(data, at):
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, data)
    assert err.value.kind == "invalid_unicode"
    assert str(err.value) == f"PromptRequest: not valid UTF-8 at byte {at}"


def test_a_utf8_byte_order_mark_is_named():
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, b"\xef\xbb\xbf" + request())
    assert err.value.kind == "invalid_json"
    assert "byte order mark" in str(err.value)


def test_a_syntax_error_says_where_once():
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, b'{"prompt_id":"p",}')
    assert err.value.kind == "invalid_json"
    assert str(err.value).startswith("PromptRequest: invalid JSON: ")
    assert "line 1 column" in str(err.value)
    assert str(err.value).count("nvalid JSON") == 1


def test_a_memoryview_is_decoded():
    assert decode(PromptRequest, memoryview(request())).prompt_id == "p-1"


def test_every_error_kind_is_documented_in_the_codec():
    for kind in ("empty", "too_large", "invalid_unicode", "too_deep", "invalid_json", "validation"):
        assert f'"{kind}"' in codec.__doc__


# --- messages never carry the input ---------------------------------------------------------------

SECRET = "my password is hunter2"
_TEXT = orjson.dumps(SECRET)  # the secret as a JSON string


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (request(text=SECRET, tolerance=SECRET), "validation"),
        (request(text=SECRET, tolerance="0.5", sent_at=SECRET), "validation"),
        (request(text=SECRET, metadata={"k": [SECRET]}), "validation"),
        (request(text=SECRET, allowed_models=SECRET), "validation"),
        (request(text=SECRET, tenant=[SECRET]), "validation"),
        (b'{"prompt_id":"p","text":' + _TEXT[:-1] + rb'\ud800"}', "invalid_unicode"),
        (b'{"prompt_id":"p","text":' + _TEXT[:-1] + b'\xff"}', "invalid_unicode"),
        (b'{"prompt_id":"p","text":' + _TEXT + b',"metadata":{"k":' + _nested(500, "array") + b"}}",
         "too_deep"),
        (b'{"prompt_id":"p","text":' + _TEXT + b",}", "invalid_json"),
        (b'{"prompt_id":"p","text":' + _TEXT + b"} " + _TEXT, "invalid_json"),
        (b"\xef\xbb\xbf" + request(text=SECRET), "invalid_json"),
    ],
)
def test_no_message_repeats_the_input(data, kind):
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, data)
    assert err.value.kind == kind
    assert "hunter2" not in str(err.value)


def test_a_str_payload_message_does_not_repeat_the_input():
    with pytest.raises(SchemaError) as err:
        decode(PromptRequest, '{"prompt_id":"p","text":"hunter2 \ud800"}')
    assert "hunter2" not in str(err.value)
