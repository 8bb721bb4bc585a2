"""The EST-coaps resource tree: /.well-known/est[/<label>]/<op>, a short root, discovery."""

from __future__ import annotations

from collections.abc import Sequence

from aiocoap import error
from aiocoap.resource import Site, WKCResource

from ..codec.operations import EST_WELL_KNOWN, OPERATIONS, is_operation_name
from ..service import EstService
from .block1 import Block1Assembler
from .resources import EstResource, EstRootResource

DEFAULT_MAX_BODY = 64 * 1024


class EstSite(Site):
    """A Site whose 4.04 says what was not found (an unknown label, usually)."""

    async def render_to_pipe(self, pipe):  # type: ignore[no-untyped-def]
        try:
            return await super().render_to_pipe(pipe)
        except error.NotFound as exc:
            if exc.message:
                raise
            path = "/".join(pipe.request.opt.uri_path)
            raise error.NotFound(f"no resource /{path} (unknown label or operation)") from None

    def _find_child_and_pathstripped_message(self, request):  # type: ignore[no-untyped-def]
        # aiocoap strips the Uri-Path with a deep copy of all options and a URI string per
        # request; an EST resource reads no Uri-Path (its position is its operation), so
        # it gets the request as it came.
        child = self._resources.get(request.opt.uri_path)
        if isinstance(child, EstResource):
            return child, request
        return super()._find_child_and_pathstripped_message(request)


def _segments(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def build_site(
    service: EstService,
    *,
    labels: Sequence[str] = (),
    short_root: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    well_known: bool = True,
) -> Site:
    """The aiocoap Site serving EST-coaps for `service`.

    short_root (e.g. "/est") serves the same resources at a shorter path and makes
    discovery advertise it instead of /.well-known/est (RFC 9148 s4.1). well_known=False
    serves the short root only, as libEST does with /est.
    """
    for label in labels:
        if is_operation_name(label) or "/" in label or not label:
            raise ValueError(f"invalid label {label!r}: a label must not be an operation name")
    site = EstSite()
    site.add_resource(
        (".well-known", "core"), WKCResource(site.get_resources_as_linkheader, impl_info=None)
    )
    assembler = Block1Assembler(max_body)
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
                )
                site.add_resource(base + (spec.short_name,), resource)
    return site
