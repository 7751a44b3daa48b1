"""Bedrock's token quota, as the test server enforces it: tokens per minute per model.

Why a module of its own: throttling on Bedrock is governed by a *token* quota per model (requests per
minute are no longer enforced by bedrock-runtime), and how a request draws on it decides whether an
application is throttled far below its real usage.  A test (or a benchmark) that wants to see an app
paced, throttled and recovering like it would be on Bedrock needs the same accounting, not a request
counter.  The rules (AWS user guide, "How tokens are counted in Amazon Bedrock"):

* **Reservation at request start**: ``total input tokens + max_tokens`` is taken from the model's
  quota, where total input counts cache reads and writes too and an unset ``max_tokens`` means the
  model's *maximum* output (tens of thousands of tokens for Claude 4).  If the quota does not hold
  the reservation, Bedrock answers ``429 ThrottlingException`` ("Too many tokens") at once.
* **Settlement at request end**: the reservation is replaced by what the request really cost:
  ``input + cache writes + output x burndown``.  Cache reads are refunded; the burndown factor is
  5 for the Claude 4 family (Opus 4, Sonnet 4, Haiku 4.5, ...) and 1 for the other models.  A
  request whose cost exceeds its reservation (Claude 4 writing more than ``max_tokens / 5``) draws
  the difference at settlement, which can leave the quota in debt until it refills.
* The quota refills continuously at ``tokens_per_minute / 60`` per second, up to a capacity of
  ``tokens_per_minute`` (``burst=`` changes the capacity): a token bucket.

How the test server counts (deterministic, so tests can compute the expected numbers):

* **Input tokens** are ``ceil(len(text) / 4)`` for every text of the prompt: each string under a
  text key (``text``, ``content``, ``prompt``, ``inputText``, ``system``, ``message``,
  ``description``) of the prompt sections (``system``, ``messages``, ``toolConfig``, ``tools``,
  ``prompt``, ``inputText``, ``message``, ``chat_history``), plus the JSON of tool schemas and tool
  inputs.  A non-JSON body counts 0.
* **Prompt caching**: the prompt up to the last cache point (a Converse ``cachePoint`` block or an
  Anthropic block with ``cache_control``) is the cached prefix.  The first request with a given
  prefix *writes* it (``cacheWriteInputTokens``), every later one for the same model *reads* it
  (``cacheReadInputTokens``); ``inputTokens`` is the rest of the prompt.  No minimum length, no TTL.
* **max_tokens** is read from ``inferenceConfig.maxTokens`` (Converse) or the InvokeModel body
  (``max_tokens``, ``maxTokens``, ``maxTokenCount``, ``max_gen_len``, ``max_new_tokens``, also inside
  ``inferenceConfig`` / ``textGenerationConfig``), else the model's default from :data:`bedrock_hooks.model_limits.MODEL_LIMITS`.
* **Output tokens** are ``output_tokens=`` of the quota (a number, or a function of the recorded
  request), by default the :data:`~.replies.DEFAULT_TEXT` answer (7 tokens); clipped to
  ``max_tokens`` with stop reason ``max_tokens``.  The answer text has exactly that many tokens.

Only answers the server *generates* draw on a quota (``Reply.ok()`` without a body, the default,
also behind ``Reply.delay``): a scripted error, fault or custom body is what the test wants the
service to say, and bypasses it.  A reservation is held while a delayed answer waits and while a
stream is being sent; it is settled when the answer was written (if the client vanished first, only
the input is charged).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Optional, Union

from ..model_limits import MODEL_LIMITS, UNKNOWN, ModelLimits, limits_of
from .replies import DEFAULT_TEXT, Reply
from .wire import RecordedRequest

#: Operations that run a model, and so reserve and settle tokens.
INFERENCE_OPERATIONS = frozenset({"Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream"})

#: Bedrock's message when a request's tokens do not fit the quota.
TOO_MANY_TOKENS = "Too many tokens, please wait before trying again."

#: Characters per token of the server's deterministic count.
CHARS_PER_TOKEN = 4


#: The per-family arithmetic (default max output, burndown) is the library's own table
#: (:mod:`bedrock_hooks.model_limits`): one owner for facts about Bedrock, so the pacer and the server
#: it is tested against can never disagree about them. A test needing other numbers passes
#: ``max_output=`` / ``burndown=`` to ``server.quota()``.
DEFAULT_LIMITS = UNKNOWN


#: Body sections that hold the prompt, walked in this order (the order Bedrock builds a prompt in).
PROMPT_SECTIONS = ("toolConfig", "tools", "system", "messages", "prompt", "inputText", "message", "chat_history")
#: Keys whose string values are prompt text.
TEXT_KEYS = frozenset({"text", "content", "prompt", "inputText", "system", "message", "description"})
#: Keys whose JSON values are counted as their serialized text (tool schemas, tool inputs and results).
JSON_KEYS = frozenset({"json", "input", "input_schema"})
#: Where InvokeModel bodies of the model families put the output limit (Converse: ``maxTokens``).
MAX_TOKEN_KEYS = ("max_tokens", "maxTokens", "maxTokenCount", "max_gen_len", "max_new_tokens")
_MAX_TOKEN_PARENTS = ("inferenceConfig", "textGenerationConfig", "parameters")

#: Output tokens of the default answer: a number, or a function of the request.
OutputTokens = Union[int, Callable[[RecordedRequest], int]]


def count_tokens(text: str) -> int:
    """The server's token count of one text: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def model_limits(model_id: Optional[str]) -> ModelLimits:
    """Default max output and burndown of ``model_id`` (``us.``/``eu.``... profiles as their model)."""
    return limits_of(model_id or "")


def output_text(tokens: int) -> str:
    """An answer of exactly ``tokens`` tokens: :data:`DEFAULT_TEXT` when that is its length."""
    if tokens == count_tokens(DEFAULT_TEXT):
        return DEFAULT_TEXT
    filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. "
    chars = tokens * CHARS_PER_TOKEN
    return (filler * (chars // len(filler) + 1))[:chars]


# --------------------------------------------------------------------------- #
# What a request asks for
# --------------------------------------------------------------------------- #


class Prompt(NamedTuple):
    """The prompt's tokens: all of them, the cached prefix among them, and that prefix's digest."""

    tokens: int
    prefix_tokens: int = 0
    prefix_digest: str = ""


def prompt_tokens(body: Any) -> Prompt:
    """Count the prompt of a Converse or InvokeModel body (see the module docstring)."""
    if not isinstance(body, Mapping):
        return Prompt(0)
    walk = _PromptWalk()
    for section in PROMPT_SECTIONS:
        if section in body:
            walk.visit(section, body[section])
    return Prompt(walk.tokens, walk.prefix_tokens, walk.prefix_digest)


class _PromptWalk:
    def __init__(self) -> None:
        self.tokens = 0
        self.prefix_tokens = 0
        self.prefix_digest = ""
        self._digest = hashlib.sha256()

    def _count(self, text: str) -> None:
        self.tokens += count_tokens(text)
        self._digest.update(text.encode("utf-8", "surrogatepass") + b"\0")

    def _mark(self) -> None:
        self.prefix_tokens = self.tokens
        self.prefix_digest = self._digest.hexdigest()

    def visit(self, key: str, value: Any) -> None:
        if isinstance(value, str):
            if key in TEXT_KEYS or key in PROMPT_SECTIONS:
                self._count(value)
        elif isinstance(value, Mapping):
            if key in JSON_KEYS:
                self._count(json.dumps(value, sort_keys=True, separators=(",", ":")))
                return
            for child_key, child in value.items():
                if child_key == "cachePoint":  # Converse: the prompt so far is cached
                    self._mark()
                else:
                    self.visit(str(child_key), child)
            if "cache_control" in value:  # Anthropic: this block and all before it are cached
                self._mark()
        elif isinstance(value, list):
            for item in value:
                self.visit(key, item)


def requested_max_tokens(body: Any) -> Optional[int]:
    """The output limit a request sets, or None when it sets none."""
    if not isinstance(body, Mapping):
        return None
    scopes = [body] + [body[p] for p in _MAX_TOKEN_PARENTS if isinstance(body.get(p), Mapping)]
    for scope in scopes:
        for key in MAX_TOKEN_KEYS:
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


# --------------------------------------------------------------------------- #
# The token bucket
# --------------------------------------------------------------------------- #


class TokenQuota:
    """Tokens per minute as a token bucket: refilled continuously at ``tokens_per_minute / 60`` per
    second up to ``burst`` (default: one minute's worth), thread-safe, on an injectable clock.

    The balance may go negative: a settlement that costs more than its reservation is charged anyway,
    and the quota is in debt until it refills.
    """

    def __init__(self, tokens_per_minute: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not tokens_per_minute > 0:
            raise ValueError("tokens_per_minute must be > 0")
        if burst is not None and not burst > 0:
            raise ValueError("burst must be > 0")
        self.tokens_per_minute = float(tokens_per_minute)
        self.capacity = float(burst if burst is not None else tokens_per_minute)
        self._clock = clock
        self._lock = threading.Lock()
        self._balance = self.capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._balance = min(self.capacity, self._balance + elapsed * self.tokens_per_minute / 60.0)

    @property
    def available(self) -> float:
        """Tokens in the bucket now (negative while in debt)."""
        with self._lock:
            self._refill()
            return self._balance

    def try_reserve(self, tokens: float) -> bool:
        """Take ``tokens`` if the bucket holds them; False (nothing taken) otherwise."""
        with self._lock:
            self._refill()
            if tokens > self._balance:
                return False
            self._balance -= tokens
            return True

    def settle(self, reserved: float, actual: float) -> None:
        """Replace a reservation by the real cost: give back ``reserved - actual`` (negative: charge)."""
        with self._lock:
            self._refill()
            self._balance = min(self.capacity, self._balance + reserved - actual)


# --------------------------------------------------------------------------- #
# Quotas of a server
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class QuotaRule:
    """``BedrockServer.quota()``'s arguments: which models (an ID or an ``fnmatch`` pattern, each
    matching model with a bucket of its own) and how their tokens are counted."""

    model: str
    tokens_per_minute: float
    burst: Optional[float] = None
    burndown: Optional[float] = None
    max_output: Optional[int] = None
    output_tokens: Optional[OutputTokens] = None

    def matches(self, model_id: str) -> bool:
        return model_id == self.model or fnmatch.fnmatchcase(model_id, self.model)


@dataclasses.dataclass(frozen=True)
class Reservation:
    """One admitted request: what it reserved, and the usage its answer reports.

    ``input_tokens`` excludes the cached prefix (as Bedrock's ``inputTokens`` does).
    """

    model_id: str
    reserved: int
    input_tokens: int
    output_tokens: int
    max_tokens: int
    burndown: float
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: The answer was cut at ``max_tokens``.
    cut: bool = False

    @property
    def stop_reason(self) -> str:
        """``max_tokens`` when the answer was cut at the limit, else ``end_turn``."""
        return "max_tokens" if self.cut else "end_turn"

    @property
    def text(self) -> str:
        return output_text(self.output_tokens)

    @property
    def total_tokens(self) -> int:
        """Bedrock's ``totalTokens``: input, output and cache tokens."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def cached(self) -> bool:
        return bool(self.cache_read_tokens or self.cache_write_tokens)

    def cost(self, completed: bool = True) -> float:
        """What settlement charges: input + cache writes + output x burndown (no output if not completed)."""
        output = self.output_tokens * self.burndown if completed else 0.0
        return self.input_tokens + self.cache_write_tokens + output


@dataclasses.dataclass(frozen=True)
class QuotaStats:
    """Counters of one model's quota (tokens are quota tokens: output counted with its burndown)."""

    admitted: int = 0
    throttled: int = 0
    #: Tokens reserved at request start, summed.
    reserved: int = 0
    #: Tokens charged at settlement, summed (the quota really consumed).
    settled: float = 0.0
    #: Reservations not yet settled, and the tokens they hold.
    in_flight: int = 0
    in_flight_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: Tokens in the bucket when the stats were taken.
    available: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _ModelState:
    def __init__(self, rule: QuotaRule, clock: Callable[[], float]) -> None:
        self.rule = rule
        self.bucket = TokenQuota(rule.tokens_per_minute, burst=rule.burst, clock=clock)
        self.stats = QuotaStats()
        self.prefixes: dict[str, None] = {}  # cached prompt prefixes (insertion-ordered, bounded)

    def count(self, **deltas: float) -> None:
        self.stats = dataclasses.replace(
            self.stats, **{k: getattr(self.stats, k) + v for k, v in deltas.items()})


#: Cached prefixes remembered per model (the oldest is forgotten first).
MAX_PREFIXES = 1024


class QuotaBook:
    """The quotas of one server: rules, a bucket per model, counters.  Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._rules: list[QuotaRule] = []
        self._models: dict[str, _ModelState] = {}

    def add(self, rule: QuotaRule) -> None:
        """Add a rule; it wins over earlier rules for the models it matches (their buckets restart)."""
        TokenQuota(rule.tokens_per_minute, burst=rule.burst)  # validate now, in the test's thread
        with self._lock:
            self._rules.append(rule)
            for model_id in [m for m, state in self._models.items() if rule.matches(m)]:
                del self._models[model_id]

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._models.clear()

    def __bool__(self) -> bool:
        return bool(self._rules)

    def _state(self, model_id: str) -> Optional[_ModelState]:
        state = self._models.get(model_id)
        if state is None:
            rule = next((r for r in reversed(self._rules) if r.matches(model_id)), None)
            if rule is None:
                return None
            state = self._models[model_id] = _ModelState(rule, self.clock)
        return state

    def admit(self, request: RecordedRequest) -> Union[Reservation, Reply, None]:
        """Reserve for ``request``: a :class:`Reservation`, the 429 to answer, or None (no quota)."""
        if request.operation not in INFERENCE_OPERATIONS or not request.model_id:
            return None
        with self._lock:
            state = self._state(request.model_id)
            if state is None:
                return None
            reservation, prefix = self._plan(state, request)
            if not state.bucket.try_reserve(reservation.reserved):
                state.count(throttled=1)
                return Reply.throttling(TOO_MANY_TOKENS)
            if reservation.cache_write_tokens:
                state.prefixes[prefix] = None
                while len(state.prefixes) > MAX_PREFIXES:
                    del state.prefixes[next(iter(state.prefixes))]
            state.count(admitted=1, reserved=reservation.reserved, in_flight=1,
                        in_flight_tokens=reservation.reserved)
            return reservation

    def settle(self, reservation: Reservation, completed: bool = True) -> None:
        """Settle an admitted request once its answer was written (``completed``) or abandoned."""
        with self._lock:
            state = self._models.get(reservation.model_id)
            if state is None:  # the rule was replaced or cleared meanwhile: nothing to settle against
                return
            cost = reservation.cost(completed)
            state.bucket.settle(reservation.reserved, cost)
            state.count(settled=cost, in_flight=-1, in_flight_tokens=-reservation.reserved,
                        input_tokens=reservation.input_tokens,
                        output_tokens=reservation.output_tokens if completed else 0,
                        cache_read_tokens=reservation.cache_read_tokens,
                        cache_write_tokens=reservation.cache_write_tokens)

    def stats(self) -> dict[str, QuotaStats]:
        """Counters per model ID that drew on a quota so far."""
        with self._lock:
            items = list(self._models.items())
        return {m: dataclasses.replace(s.stats, available=s.bucket.available) for m, s in items}

    def _plan(self, state: _ModelState, request: RecordedRequest) -> tuple[Reservation, str]:
        """The reservation ``request`` needs, and the key of its cached prefix."""
        rule, limits = state.rule, model_limits(request.model_id)
        body = _json_body(request)
        prompt = prompt_tokens(body)
        max_tokens = requested_max_tokens(body) or rule.max_output or limits.max_output
        burndown = rule.burndown if rule.burndown is not None else limits.burndown
        wanted = _output_tokens(rule.output_tokens, request)
        # Converse and InvokeModel build different prompts from the same text: separate caches.
        prefix = f"{request.operation.startswith('Converse')}:{prompt.prefix_digest}"
        read = write = 0
        if prompt.prefix_tokens:
            if prefix in state.prefixes:
                read = prompt.prefix_tokens
            else:
                write = prompt.prefix_tokens
        return Reservation(
            model_id=request.model_id or "",
            reserved=prompt.tokens + max_tokens,
            input_tokens=prompt.tokens - prompt.prefix_tokens,
            output_tokens=max(0, min(wanted, max_tokens)),
            max_tokens=max_tokens,
            burndown=float(burndown),
            cache_read_tokens=read,
            cache_write_tokens=write,
            cut=wanted > max_tokens,
        ), prefix


def _json_body(request: RecordedRequest) -> Any:
    try:
        return request.json()
    except ValueError:
        return None


def _output_tokens(spec: Optional[OutputTokens], request: RecordedRequest) -> int:
    if spec is None:
        return count_tokens(DEFAULT_TEXT)
    return int(spec(request) if callable(spec) else spec)

