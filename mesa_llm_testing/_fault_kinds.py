"""The fault catalogue: every way the fake can fail a call, and which failures are transient.

Pure data, no imports beyond the standard library, so every layer can use it. How
each kind looks on the wire (status, OpenAI error body) is in ``_fault_answers``;
which litellm exception it arrives as is in ``_provider_errors.fault_exception`` and is
checked against litellm's own mapping of the real HTTP answer by
``tests/test_layers_agree.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

__all__ = ["DEFAULT_KINDS", "TRANSIENT_KINDS", "FaultKind"]


class FaultKind(enum.StrEnum):
    """A way an LLM call can fail, each shaped like the real provider (OpenAI) failure.

    ================  ===========  ======================================  =========
    kind              HTTP         what litellm raises (OpenAI provider)   transient
    ================  ===========  ======================================  =========
    rate_limit        429          RateLimitError                          yes
    timeout           no answer    Timeout                                 yes
    malformed_json    200          (a reply whose JSON does not parse)     yes
    server_error      500/502/     InternalServerError, BadGatewayError,   yes
                      503/504      ServiceUnavailableError, Timeout
    connection_error  reset        InternalServerError ("Connection        yes
                                   error.")
    empty_response    200          (an empty reply)                        yes
    bad_request       400          BadRequestError                         no
    auth              401          AuthenticationError                     no
    permission        403          APIError (status 403: litellm maps an   no
                                   OpenAI 403 to its generic APIError)
    not_found         404          NotFoundError (unknown model)           no
    context_window    400          ContextWindowExceededError              no
    content_policy    400          ContentPolicyViolationError             no
    truncated         200          (finish_reason "length", a cut reply)   no
    overloaded        529/503      APIError (status 529),                  yes
                                   ServiceUnavailableError
    bad_gateway       502/504      BadGatewayError, Timeout                yes
    connection_reset  200, cut     InternalServerError ("Connection        yes
                                   error.")
    missing_fields    200          InternalServerError (no ``choices``,    yes
                                   or a choice without ``message``)
    ================  ===========  ======================================  =========

    The first six are the :data:`DEFAULT_KINDS` a ``FaultPlan(rate=...)`` draws from,
    so plans made before the others existed inject the same faults; ask for the
    others with ``kinds=`` (or ``--kinds``; ``all`` means every kind).
    """

    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    MALFORMED_JSON = "malformed_json"
    SERVER_ERROR = "server_error"
    CONNECTION_ERROR = "connection_error"
    EMPTY_RESPONSE = "empty_response"
    # Added later: declared after the first six so default plans keep their draws.
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    TRUNCATED = "truncated"
    OVERLOADED = "overloaded"
    BAD_GATEWAY = "bad_gateway"
    CONNECTION_RESET = "connection_reset"
    MISSING_FIELDS = "missing_fields"

    def __str__(self) -> str:
        return self.value

    @property
    def transient(self) -> bool:
        """Whether a retry may succeed (the provider is busy or glitched, not refusing)."""
        return self in TRANSIENT_KINDS

    @classmethod
    def parse(cls, value: str | FaultKind) -> FaultKind:
        """The kind named by ``value`` (any case); ValueError naming the valid values."""
        if isinstance(value, FaultKind):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValueError(
            f"mesa_llm_testing: unknown fault kind {value!r}; valid kinds: {valid_kinds()}"
        )

    @classmethod
    def parse_many(cls, text: str | Iterable[str | FaultKind] | None) -> tuple[FaultKind, ...]:
        """Parse ``"rate_limit,timeout"`` (or an iterable of kinds) into kinds in canonical order.

        ``None`` and ``""`` mean :data:`DEFAULT_KINDS`; ``"all"`` means every kind.
        Duplicates are dropped, and the result is in declaration order so
        ``"timeout,rate_limit"`` and ``"rate_limit,timeout"`` inject the same faults.
        """
        if text is None:
            return DEFAULT_KINDS
        if isinstance(text, str):
            items: list[str | FaultKind] = [p for p in (s.strip() for s in text.split(",")) if p]
            if not items:
                return DEFAULT_KINDS
            if [str(i).lower() for i in items] == ["all"]:
                return tuple(cls)
        else:
            items = list(text)
        chosen = {cls.parse(item) for item in items}
        return tuple(kind for kind in cls if kind in chosen)


def valid_kinds() -> str:
    """The kind names, comma-separated, for error messages."""
    return ", ".join(kind.value for kind in FaultKind)


#: What ``FaultPlan(rate=...)`` draws from unless given ``kinds=``: the original six.
DEFAULT_KINDS: Final = (
    FaultKind.RATE_LIMIT,
    FaultKind.TIMEOUT,
    FaultKind.MALFORMED_JSON,
    FaultKind.SERVER_ERROR,
    FaultKind.CONNECTION_ERROR,
    FaultKind.EMPTY_RESPONSE,
)

#: Kinds a retry may cure. The others (a bad request, auth, permission, unknown model,
#: context window, content policy, a reply cut at max_tokens) fail the same way again.
TRANSIENT_KINDS: Final = frozenset(
    {
        FaultKind.RATE_LIMIT,
        FaultKind.TIMEOUT,
        FaultKind.MALFORMED_JSON,
        FaultKind.SERVER_ERROR,
        FaultKind.CONNECTION_ERROR,
        FaultKind.EMPTY_RESPONSE,
        FaultKind.OVERLOADED,
        FaultKind.BAD_GATEWAY,
        FaultKind.CONNECTION_RESET,
        FaultKind.MISSING_FIELDS,
    }
)
