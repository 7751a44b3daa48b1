"""Fuzzing: whatever arrives on the wire or in the environment, classification, hints and configuration
never raise, and every configuration value that is rejected is named in a warning.

Wire input goes through botocore's own rest-json parser first (as in production: status, headers
including ``x-amzn-ErrorType``/``Retry-After``/``Date``, arbitrary bodies), then into
``facts_from_parsed`` / ``facts_from_exception`` / ``classify`` / ``build_info`` / ``hint_line`` /
``annotate_exception``; the helpers (``parse_wait``, ``parse_retry_after_header``, ``measure_skew``)
are also fed raw garbage.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import types

import botocore.session
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EventStreamError, ReadTimeoutError
from botocore.parsers import create_parser
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from urllib3.exceptions import ProtocolError

from bedrock_hooks import config, remedies
from bedrock_hooks.catalog import ENTRIES
from bedrock_hooks.classification import (
    Classification,
    ErrorFacts,
    classify,
    facts_from_exception,
    facts_from_parsed,
    parse_retry_after_header,
    parse_wait,
)
from bedrock_hooks.hints import PREFIX, HintFacts, annotate_exception, build_info, hint_line
from bedrock_hooks.remedies import measure_skew

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # big reprs

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")
_CONVERSE = _MODEL.operation_model("Converse")
_PARSER = create_parser("rest-json")

# -- strategies -----------------------------------------------------------------------------------

KNOWN_CODES = sorted({code for entry in ENTRIES for code in entry.codes})
KNOWN_PHRASES = ["Too many tokens per day", "Signature expired: 20250101T000000Z", "try again after 15 minutes",
                 "retry in 1e400 seconds", "The security token included in the request is expired",
                 "use case details", "subscription is still being processed", "end of its life", "Input is too long"]
numbers_as_text = st.one_of(
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "0x10", "1_000", " 7 ", "٣",
                     "9" * 5000, "-0", "0.0001", "1e-400"]),
)
huge_text = st.builds(lambda ch, n: ch * n, st.characters(), st.integers(1_000, 200_000))
any_text = st.one_of(st.text(), st.text(alphabet=st.characters(codec="utf-8"), max_size=50), numbers_as_text,
                     huge_text, st.sampled_from(KNOWN_CODES + KNOWN_PHRASES + ["", " ", "\x00", "\ud800", "é" * 3]))
codes = st.one_of(st.none(), st.sampled_from(KNOWN_CODES), any_text,
                  st.sampled_from(KNOWN_CODES).map(lambda c: f"{c}:http://internal.amazon.com/coral/com.amazon/"),
                  st.sampled_from(KNOWN_CODES).map(lambda c: f"com.amazon#{c[0].lower()}{c[1:]}"))
statuses = st.one_of(st.none(), st.integers(100, 599), st.integers(-(2**63), 2**63),
                     st.sampled_from([400, 403, 404, 408, 413, 424, 429, 500, 502, 503, 504]))
http_dates = st.one_of(any_text, st.sampled_from([
    "Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 -2359", "Fri, 31 Dec 9999 23:59:59 +2359",
    "Thu, 01 Jan 1970 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994", "Tue, 31 Feb 2023 25:61:61 GMT", "0", "-1", ",,,,", "Mon, 32 Foo 99999 x",
]))
header_values = st.one_of(any_text, http_dates)
headers = st.dictionaries(
    st.one_of(st.sampled_from(["Retry-After", "retry-after", "Date", "date", "x-amzn-ErrorType", "Content-Type",
                               "x-amzn-RequestId", "X-Amz-Date"]), st.text(max_size=20)),
    header_values, max_size=6)
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), any_text),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
bodies = st.one_of(
    st.binary(max_size=300),
    any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.dictionaries(st.sampled_from(["message", "Message", "__type", "code", "errorMessage"]), json_values,
                    max_size=4).map(lambda d: json.dumps(d, allow_nan=True).encode()),
    st.sampled_from([b"", b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"{", b"null", b"[]", b'"x"',
                     b"<html>" + b"x" * 2_000_000 + b"</html>"]),
)


def _latin1(value: str) -> str:
    return value.encode("latin-1", "replace").decode("latin-1")


@st.composite
def wire_errors(draw):
    """What botocore makes of an arbitrary HTTP error: (http_response, parsed)."""
    status = draw(st.one_of(st.integers(300, 599), st.sampled_from([400, 403, 404, 408, 424, 429, 500, 502, 503])))
    hdrs = {_latin1(k): _latin1(v) for k, v in draw(headers).items()}
    code = draw(codes)
    if code is not None:
        hdrs["x-amzn-ErrorType"] = _latin1(code)
    body = draw(bodies)
    response_dict = {"status_code": status, "headers": hdrs, "body": body}
    try:
        parsed = _PARSER.parse(response_dict, _CONVERSE.output_shape)
    except Exception:  # botocore's own parser giving up is botocore's business
        assume(False)
    http_response = types.SimpleNamespace(status_code=status, headers=hdrs, content=body)
    return http_response, parsed


@st.composite
def exceptions(draw):
    kind = draw(st.sampled_from(["client", "stream", "closed", "timeout", "protocol", "plain", "os"]))
    message = draw(any_text)
    if kind in ("client", "stream"):
        http_response, parsed = draw(wire_errors())
        return (ClientError if kind == "client" else EventStreamError)(parsed, "Converse")
    if kind == "closed":
        return ConnectionClosedError(endpoint_url=message[:200])
    if kind == "timeout":
        return ReadTimeoutError(endpoint_url=message[:200], error=message[:50])
    if kind == "protocol":
        return ProtocolError(message, ConnectionResetError(104, "Connection reset by peer"))
    if kind == "os":
        return draw(st.sampled_from([ConnectionResetError, BrokenPipeError, TimeoutError, ConnectionRefusedError]))(message)
    return Exception(message)


facts = st.builds(ErrorFacts, status=statuses, code=codes, message=any_text, headers=headers,
                  exception=st.one_of(st.none(), exceptions()))
odd_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30))
hint_facts = st.builds(HintFacts, attempts=st.one_of(st.none(), st.integers(-5, 10**9)),
                       reason=st.one_of(st.none(), any_text), clock_skew=odd_floats,
                       credential_source=st.one_of(st.none(), any_text), botocore_version=st.one_of(st.none(), any_text),
                       notes=st.lists(any_text, max_size=3))
classifications = st.builds(Classification, entry=st.sampled_from(ENTRIES), facts=facts, retry_after=odd_floats)


def _sane_retry_after(value) -> bool:
    return value is None or (isinstance(value, float) and math.isfinite(value) and value >= 0)


# -- classification -----------------------------------------------------------------------------

@FUZZ
@given(facts)
def test_classify_never_raises(f):
    result = classify(f)
    if result is not None:
        assert _sane_retry_after(result.retry_after), result.retry_after


@FUZZ
@given(wire_errors(), st.one_of(st.none(), exceptions()))
def test_wire_errors_never_break_facts_or_hints(wire, exception):
    http_response, parsed = wire
    found = facts_from_parsed(http_response, parsed, exception)
    assert found is not None  # an error status is never taken for a success
    result = classify(found)
    if result is not None:
        assert _sane_retry_after(result.retry_after), result.retry_after
        info = build_info(result, HintFacts(attempts=3, reason="max-attempts"))
        json.dumps(info, allow_nan=False)  # plain data a program can log or serialise
        line = hint_line(info)
        assert line.startswith(PREFIX) and "\n" not in line


@FUZZ
@given(exceptions())
def test_exceptions_never_break_facts_or_annotation(exc):
    result = classify(facts_from_exception(exc))
    if result is None:
        return
    info = build_info(result, HintFacts(attempts=1))
    before = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else None
    annotate_exception(exc, info)
    annotate_exception(exc, info)  # twice: the line is appended once
    assert exc.bedrock_hooks is info
    if before is not None:
        assert exc.args[0].count(PREFIX) == max(1, before.count(PREFIX))
    if isinstance(exc, ClientError):
        assert exc.response["BedrockHooks"] is info


@FUZZ
@given(any_text)
def test_parse_wait_never_raises(message):
    assert _sane_retry_after(parse_wait(message))


@FUZZ
@given(st.one_of(headers, st.dictionaries(st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER"]), header_values,
                                          min_size=1)),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_retry_after_header_never_raises(hdrs, now):
    value = parse_retry_after_header(hdrs, now)
    if now is None or math.isfinite(now):
        assert _sane_retry_after(value), value


@FUZZ
@given(st.one_of(headers, st.dictionaries(st.sampled_from(["Date", "date"]), http_dates, min_size=1)),
       st.one_of(st.none(), st.floats(-1e12, 1e12)))
def test_clock_skew_measurement_never_raises(hdrs, received_at):
    skew = measure_skew(hdrs, received_at)
    assert skew is None or math.isfinite(skew)


def _http_date(when: datetime.datetime, minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return when.strftime("%a, %d %b ") + f"{when.year:04d}" + when.strftime(" %H:%M:%S ") + \
        f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


valid_dates = st.builds(_http_date, st.datetimes(min_value=datetime.datetime(1, 1, 2),
                                                 max_value=datetime.datetime(9999, 12, 30)),
                        st.integers(-(23 * 60 + 59), 23 * 60 + 59))


@pytest.mark.needs_internals("clock-skew")
@FUZZ
@given(st.one_of(valid_dates, http_dates))
def test_any_measured_skew_can_be_signed_with(date):
    """A skew measured from any Date header (year 9999 with a -2359 zone...) never makes signing raise."""
    import botocore.auth

    skew = measure_skew({"Date": date})
    if not skew:
        return
    assert remedies.enable_clock_patch()
    try:
        remedies.arm_signing_offset(skew)
        assert isinstance(botocore.auth.get_current_datetime(), datetime.datetime)
    finally:
        remedies.disarm_signing_offset()
        remedies.disable_clock_patch()


# -- hints ----------------------------------------------------------------------------------------

@FUZZ
@given(classifications, hint_facts)
def test_hints_never_raise(classification, hint):
    info = build_info(classification, hint)
    line = hint_line(info)
    assert line.startswith(f"{PREFIX} {classification.entry.name} (")


@FUZZ
@given(classifications, hint_facts, st.one_of(st.just(()), st.tuples(any_text), st.tuples(st.integers(), any_text),
                                              st.tuples(st.none())),
       st.one_of(st.none(), json_values, st.builds(dict, Error=json_values)))
def test_annotation_of_any_exception_never_raises(classification, hint, args, response):
    exc = Exception(*args)
    if response is not None:
        exc.response = response
    annotate_exception(exc, build_info(classification, hint))
    assert exc.bedrock_hooks["entry"] == classification.entry.name


# -- configuration ----------------------------------------------------------------------------------

class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _load(**kwargs):
    """load_settings with fresh once-per-process warning state, returning (settings, warning messages)."""
    config._warned.clear()
    records = _Records()
    logger = logging.getLogger("bedrock_hooks.config")
    logger.addHandler(records)
    try:
        result = config.load_settings(**kwargs)
    finally:
        logger.removeHandler(records)
        config._warned.clear()
    return result, records.messages


def _oracle(option, raw):
    """(used, value, warned): whether ``raw`` is used, the value it gives, and whether it is warned about."""
    try:
        return True, option.parse(raw), False
    except config.Clamped as exc:  # beyond the bound: the bound is used, with a warning
        return True, exc.value, True
    except Exception:
        return False, None, True


env_values = st.one_of(any_text, st.sampled_from(["on", "OFF", "yes", "0", "1", "true", "disabled", "DEBUG", "warn",
                                                   "bedrock", "bedrock-runtime,bedrock", "s3", "bedrock,s3",
                                                   "bedrock-agent-runtime", "5", "0.5", "off"]))
environments = st.dictionaries(st.sampled_from([o.env for o in config.OPTIONS]),
                               env_values.map(lambda v: v.replace("\x00", "")), min_size=1)


@FUZZ
@given(environments)
def test_any_environment_loads_and_names_every_rejected_value(environ):
    settings_, warnings = _load(environ=environ)
    if not settings_.enabled:  # master switch off: nothing else is parsed, nothing else is said
        assert all(getattr(settings_, o.name) == o.default for o in config.OPTIONS if o.name != "enabled")
        assert not [w for w in warnings if "BEDROCK_HOOKS_ENABLED" not in w], warnings
        return
    for option in config.OPTIONS:
        raw = environ.get(option.env)
        value = getattr(settings_, option.name)
        if raw is None:
            assert value == option.default
            continue
        accepted, parsed, warned = _oracle(option, raw)
        if accepted:
            assert value == parsed and settings_.sources[option.name] == option.env
        else:
            assert value == option.default, (option.env, raw, value)
            assert settings_.sources[option.name] == "default"
        if warned:
            shown = config._raw_text(raw, option.secret)  # a secret option's value is never shown
            assert len(shown) <= config.PREVIEW_CHARS + 20
            named = f"{option.env}={shown!r}"
            assert any(named in w and "ignoring" in w for w in warnings), (named, warnings)
            assert (option.env, shown, config._show(value)) in settings_.rejected
            assert all(w.encode("utf-8") for w in warnings)  # printable by any handler
    if "BEDROCK_HOOKS_SERVICES" in environ:
        names = environ["BEDROCK_HOOKS_SERVICES"].replace(",", " ").split()
        unknown = [n.lower() for n in names if n.lower() not in config._known_bedrock_services()]
        if unknown:
            assert any("BEDROCK_HOOKS_SERVICES" in w for w in warnings), warnings


@FUZZ
@given(st.sampled_from(config.OPTIONS),
       st.one_of(env_values, st.none(), st.booleans(), st.integers(-10**20, 10**20),
                 st.floats(allow_nan=True, allow_infinity=True), st.lists(st.text(max_size=10), max_size=3),
                 st.just(object())))
def test_any_override_loads_and_names_the_rejected_value(option, raw):
    settings_, warnings = _load(environ={}, **{option.name: raw})
    value = getattr(settings_, option.name)
    accepted, parsed, warned = _oracle(option, raw)
    if accepted:
        assert value == parsed
    else:
        assert value == option.default
    if warned:
        assert any(f"install({option.name}=...)" in w and "ignoring" in w for w in warnings), warnings

