"""The request options this server processes, and the refusal of all others that matter.

RFC 7252 s5.4.1: an unrecognized critical option (odd number) in a confirmable or
non-confirmable request is answered with 4.02 Bad Option, before anything acts on the
request. "Recognized" means processed by this server, not merely known to aiocoap: it
decodes OSCORE (9), EDHOC (21), If-Match (1) and others, and nothing here acts on them,
so a `sen` carrying OSCORE must not be served as if the option were absent.

RFC 7252 s5.4.5 and s5.4.3 treat a repeated non-repeatable option, or a value of a
length outside the option's range, like an unrecognized option: 4.02 as well when the
option is critical. Elective options (even numbers) are ignored, as s5.4.1 says.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber


@dataclass(frozen=True)
class _Rule:
    repeatable: bool
    max_length: int  # bytes (RFC 7252 s5.10 table; RFC 7959 s2.2 for the Block options)


# The critical options an EST-coaps request may carry, and what RFC 7252 allows of them.
PROCESSED: dict[int, _Rule] = {
    OptionNumber.URI_HOST: _Rule(repeatable=False, max_length=255),
    OptionNumber.URI_PORT: _Rule(repeatable=False, max_length=2),
    OptionNumber.URI_PATH: _Rule(repeatable=True, max_length=255),
    OptionNumber.URI_QUERY: _Rule(repeatable=True, max_length=255),
    OptionNumber.ACCEPT: _Rule(repeatable=False, max_length=2),
    OptionNumber.BLOCK2: _Rule(repeatable=False, max_length=3),
    OptionNumber.BLOCK1: _Rule(repeatable=False, max_length=3),
}
# Understood but not served: s5.7.2 answers a request for proxying with 5.05.
PROXY_OPTIONS = (OptionNumber.PROXY_URI, OptionNumber.PROXY_SCHEME)


def option_refusal(request: Message) -> Message | None:
    """The response refusing `request` for its options, or None when they are acceptable."""
    for number, group in groupby(request.opt.option_list(), key=lambda o: int(o.number)):
        if number in PROXY_OPTIONS:
            return _answer(Code.PROXYING_NOT_SUPPORTED, "this server is not a proxy")
        if number % 2 == 0:  # elective
            continue
        rule = PROCESSED.get(number)
        if rule is None:
            return _answer(Code.BAD_OPTION, f"unrecognized critical option {number}")
        occurrences = list(group)
        if len(occurrences) > 1 and not rule.repeatable:
            return _answer(Code.BAD_OPTION, f"option {number} repeated")
        if any(len(o.encode()) > rule.max_length for o in occurrences):
            return _answer(Code.BAD_OPTION, f"option {number} value too long")
    for block in (request.opt.block1, request.opt.block2):
        if block is not None and block.size_exponent == 7:
            # RFC 7959 s2.2: SZX 7 is reserved (BERT is for reliable transports only).
            return _answer(Code.BAD_REQUEST, "Block SZX 7 is reserved")
    return None


def _answer(code: Code, diagnostic: str) -> Message:
    return Message(code=code, payload=diagnostic.encode())
