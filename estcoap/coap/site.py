"""The EST-coaps resource tree: /.well-known/est[/<label>]/<op>, a short root, discovery."""

from __future__ import annotations

from collections.abc import Sequence

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.resource import Site, WKCResource

from ..codec.operations import EST_WELL_KNOWN, OPERATIONS, is_label
from ..observe.hooks import NO_HOOK, RequestHook
from ..service import EstService
from .block1 import DEFAULT_BLOCK1_LIMITS, Block1Assembler, Block1Limits
from .block2 import BoundedBlock2Cache
from .options import option_refusal
from .resources import EstResource, EstRootResource

DEFAULT_MAX_BODY = 64 * 1024


class EstSite(Site):
    """A Site that refuses what no resource may see, and whose 4.04 says what was not found.

    Every request passes here first, discovery and unknown paths included: options the
    server does not process are refused (coap/options.py), and so is a body, in one
    datagram or in Block1 blocks, for a resource that takes none, before aiocoap's own
    Block1 spool (no cap, 5.00 on a gap) could buffer it.
    """

    assembler: Block1Assembler  # one for all EST resources, so its limits hold for all
    responses: BoundedBlock2Cache  # likewise for Block2 responses

    async def render_to_pipe(self, pipe):
        request = pipe.request
        refusal = option_refusal(request)
        if refusal is None:
            try:
                child, routed = self._find_child_and_pathstripped_message(request)
            except KeyError:
                refusal = _not_found(request)
            else:
                refusal = _body_refusal(child, request)
        if refusal is not None:
            pipe.add_response(refusal, is_last=True)
            return None
        pipe.request = routed
        return await child.render_to_pipe(pipe)

    def _find_child_and_pathstripped_message(self, request):
        # aiocoap strips the Uri-Path with a deep copy of all options and a URI string per
        # request; an EST resource reads no Uri-Path (its position is its operation), so
        # it gets the request as it came.
        child = self._resources.get(request.opt.uri_path)
        if isinstance(child, EstResource):
            return child, request
        return super()._find_child_and_pathstripped_message(request)


def _not_found(request: Message) -> Message:
    path = "/".join(request.opt.uri_path)
    if len(path) > 80:  # the diagnostic must fit the response datagram
        path = path[:80] + "..."
    diagnostic = f"no resource /{path} (unknown label or operation)"
    return Message(code=Code.NOT_FOUND, payload=diagnostic.encode())


def _body_refusal(resource: object, request: Message) -> Message | None:
    if getattr(resource, "takes_body", False):
        return None
    if request.opt.block1 is None and not request.payload:
        return None
    # Block1 is understood here, so not 4.02 (RFC 7959 s2.3 keeps that for a server
    # that does not process the option). What is refused is the body: RFC 7959 s2.9.3
    # answers a body a resource will not take with 4.13, Size1 giving the most it takes,
    # here nothing. Answered at the first block, so nothing is buffered.
    message = Message(code=Code.REQUEST_ENTITY_TOO_LARGE, payload=b"this resource takes no payload")
    message.opt.size1 = 0
    return message


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def build_site(
    service: EstService,
    *,
    labels: Sequence[str] = (),
    short_root: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    block1_limits: Block1Limits = DEFAULT_BLOCK1_LIMITS,
    well_known: bool = True,
    hook: RequestHook = NO_HOOK,
) -> EstSite:
    """The aiocoap Site serving EST-coaps for `service`.

    short_root (e.g. "/est") serves the same resources at a shorter path and makes
    discovery advertise it instead of /.well-known/est (RFC 9148 s4.1). well_known=False
    serves the short root only, as libEST does with /est. hook hears of every request
    answered (metrics, request log).
    """
    for label in labels:
        if not is_label(label):
            raise ValueError(f"invalid label {label!r}: a label must not be an operation name")
    site = EstSite()
    discovery = WKCResource(site.get_resources_as_linkheader, impl_info=None)
    discovery._block2 = BoundedBlock2Cache()
    site.add_resource((".well-known", "core"), discovery)
    # One response cache for all EST resources (its keys hold the Uri-Path), so its
    # bounds hold for all of them together.
    responses = site.responses = BoundedBlock2Cache()
    assembler = site.assembler = Block1Assembler(max_body, block1_limits)
    roots = [_segments(EST_WELL_KNOWN)] if well_known else []
    if short_root:
        roots.append(_segments(short_root))
    if not roots:
        raise ValueError("serve at least one EST root: keep /.well-known/est or give short_root")
    advertised_root = roots[-1]
    for root in roots:
        advertise = root == advertised_root
        site.add_resource(root, EstRootResource(advertise))
        for label_or_none in (None, *labels):
            base = root + ((label_or_none,) if label_or_none else ())
            for spec in OPERATIONS:
                if spec.short_name is None:
                    continue
                resource = EstResource(
                    spec,
                    service,
                    label_or_none,
                    assembler,
                    advertise=advertise and label_or_none is None,
                    hook=hook,
                )
                resource._block2 = responses
                site.add_resource(base + (spec.short_name,), resource)
    return site
