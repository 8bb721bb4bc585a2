"""The issuance policy over real sockets (issue 11, item 1): each attack of the issue
reproduced over CoAPs and HTTPS, a user restricted by a policy file, `open` mode, the
CSR attributes template that provision() follows, and the gateway naming the device."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.ca import LocalCA
from estcoap.ca.policy import IssuancePolicy
from estcoap.ca.ra import issue_ra
from estcoap.client import EstClient, EstClientError
from estcoap.client.api import template_subject
from estcoap.coap.server import start_coaps_server
from estcoap.codec.csrattrs import requested_template
from estcoap.codec.names import REQUESTER_HEADER, parse_name
from estcoap.codec.operations import Operation, spec_for
from estcoap.codec.pkcs10 import build_csr
from estcoap.gateway import UpstreamSettings, open_upstream
from estcoap.gateway.wiring import start_gateway
from estcoap.https import start_https_server, user_from_arg
from tests.integration.coaps_fixtures import Deployment, Device, make_deployment

pytestmark = pytest.mark.timeout(120)

SERIAL = "device-0001"
USER, PASSWORD = "alice", "correct horse"
ALICE_POLICY = """
[[grant]]
identity = "user:alice"
subject = { CN = ["sensor-*"], O = ["Acme"] }
dns = ["*.factory.example"]
max_sans = 2
"""


@pytest.fixture(name="deployment")
def deployment_fixture(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


@contextlib.asynccontextmanager
async def serving(
    deployment: Deployment, policy: IssuancePolicy | None = None
) -> AsyncIterator[tuple[LocalCA, str, str]]:
    """One LocalCA behind both fronts: (ca, coaps URL, https URL)."""
    ca = LocalCA.open(
        deployment.paths.dir, trust_clients=[deployment.maker.certificate], policy=policy
    )
    paths = deployment.paths
    coaps = await start_coaps_server(
        ca,
        [("127.0.0.1", 0)],
        cert_chain=paths.server_cert,
        key=paths.server_key,
        trust_anchors=ca.client_trust_anchors(),
    )
    https = await start_https_server(
        ca,
        "127.0.0.1",
        0,
        cert_chain=paths.server_cert,
        key=paths.server_key,
        users=[user_from_arg(f"{USER}:{PASSWORD}")],
    )
    try:
        yield ca, coaps.url, https.url
    finally:
        await coaps.close()
        await https.close()
        ca.close()


def device_client(deployment: Deployment, device: Device, url: str) -> EstClient:
    return EstClient(
        url, trust=deployment.paths.ca_cert, cert=device.cert_path, key=device.key_path
    )


def user_client(deployment: Deployment, url: str) -> EstClient:
    return EstClient(url, trust=deployment.paths.ca_cert, user=USER, password=PASSWORD)


def ca_name(deployment: Deployment) -> str:
    cert = x509.load_pem_x509_certificate(deployment.paths.ca_cert.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def nul_name() -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.SERIAL_NUMBER, SERIAL),
            x509.NameAttribute(NameOID.COMMON_NAME, "device-0001\x00.evil"),
        ]
    )


MINE = f"serialNumber={SERIAL}"
MANY_SANS = [x509.IPAddress(ipaddress.ip_address(0x0A000000 + i)) for i in range(2500)]
# (subject, SANs, what the 4.03/403 diagnostic says): the attacks of issue 11, item 1.
DEVICE_ATTACKS = [
    ("CN=device-0002", [], f"subject must carry {MINE} (the identity of your IDevID)"),
    (
        "serialNumber=device-0002",
        [],
        f"must carry {MINE} (the identity of your IDevID) and no "
        "other serialNumber; it carries device-0002",
    ),
    ("CA", [], "subject is the CA's own name"),
    (nul_name(), [], "subject CN holds a control character"),
    (
        MINE,
        [x509.DNSName("*.example.com")],
        f"subjectAltName DNS:*.example.com is not granted to device:{SERIAL} (allowed: none)",
    ),
    (MINE, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], "IP:127.0.0.1 is not granted"),
    (
        MINE,
        [x509.UniformResourceIdentifier("urn:dev:device-0002")],
        "URI:urn:dev:device-0002 is not granted",
    ),
    (MINE, MANY_SANS, "CSR asks for 2500 subjectAltNames; at most 32 are allowed"),
]


def subject_of(deployment: Deployment, subject: str | x509.Name) -> x509.Name:
    if subject == "CA":
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name(deployment))])
    return subject if isinstance(subject, x509.Name) else parse_name(subject)


@pytest.mark.parametrize("scheme", ["coaps", "https"])
async def test_a_device_gets_only_its_own_identity(deployment: Deployment, scheme: str) -> None:
    device = deployment.device(SERIAL)
    async with serving(deployment) as (ca, coaps_url, https_url):
        url = coaps_url if scheme == "coaps" else https_url
        refused = "4.03" if scheme == "coaps" else "403"
        async with device_client(deployment, device, url) as est:
            for subject, sans, diagnostic in DEVICE_ATTACKS:
                with pytest.raises(EstClientError) as caught:
                    await est.enroll(
                        key=ec.generate_private_key(ec.SECP256R1()),
                        subject=subject_of(deployment, subject),
                        sans=sans,
                    )
                assert caught.value.status == refused, caught.value
                assert diagnostic in caught.value.diagnostic
            # and serverkeygen is held to the same rule
            with pytest.raises(EstClientError) as caught:
                await est.serverkeygen(subject="CN=device-0002")
            assert caught.value.status == refused
            # its own identity, with other attributes beside it, is issued
            wanted = parse_name(f"{MINE},CN=kitchen sensor,O=Acme")
            chain = await est.enroll(key=ec.generate_private_key(ec.SECP256R1()), subject=wanted)
            assert chain[0].subject == wanted
        # nothing was issued for any of the attacks
        issued = [r.certificate.subject for r in ca.store.issued_list()]
        assert issued.count(wanted) == 1 and len(issued) == 2  # init's server cert + this


async def test_a_forged_certificate_cannot_be_made_so_cannot_renew(deployment: Deployment) -> None:
    """The second half of the attack: a device-0002 certificate obtained by device-0001
    would then re-enroll as device-0002. It is never issued, so only the real one renews."""
    mine = deployment.device(SERIAL)
    async with serving(deployment) as (ca, coaps_url, _):
        async with device_client(deployment, mine, coaps_url) as est:
            with pytest.raises(EstClientError, match="4.03"):
                await est.provision("serialNumber=device-0002")
            provisioned = await est.provision()
    assert provisioned.certificate.subject == parse_name(MINE)


@pytest.mark.parametrize("scheme", ["coaps", "https"])
async def test_csrattrs_template_names_the_subject_and_provision_follows_it(
    deployment: Deployment, scheme: str
) -> None:
    device = deployment.device(SERIAL)
    async with serving(deployment) as (_, coaps_url, https_url):
        url = coaps_url if scheme == "coaps" else https_url
        async with device_client(deployment, device, url) as est:
            attrs = await est.csrattrs()
            template = requested_template(attrs)
            assert template is not None
            assert template_subject(attrs) == parse_name(MINE)
            result = await est.provision()  # no subject given: the template's
        assert result.certificate.subject == parse_name(MINE)
        # a password user (a provisioner) is told no subject: it chooses
        async with user_client(deployment, https_url) as est:
            assert requested_template(await est.csrattrs()) is None


async def test_a_user_is_held_to_its_grants(deployment: Deployment, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(ALICE_POLICY)
    async with serving(deployment, IssuancePolicy.load(policy_file)) as (_, _, https_url):
        async with user_client(deployment, https_url) as est:
            key = ec.generate_private_key(ec.SECP256R1())
            chain = await est.enroll(
                key=key, subject="CN=sensor-7,O=Acme", sans=[x509.DNSName("s7.factory.example")]
            )
            assert chain[0].subject == parse_name("CN=sensor-7,O=Acme")
            outside = [
                (
                    "CN=device-0002",
                    [],
                    "subject attribute CN=device-0002 is not granted to "
                    "user:alice (allowed: CN=sensor-*, O=Acme)",
                ),
                (
                    "CN=sensor-8",
                    [x509.DNSName("*.factory.example")],
                    "DNS:*.factory.example is not granted",
                ),
                (
                    "CN=sensor-8",
                    [x509.DNSName("www.example.com")],
                    "DNS:www.example.com is not granted to user:alice (allowed: "
                    "DNS:*.factory.example)",
                ),
                (
                    "CN=sensor-8",
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                    "IP:127.0.0.1 is not granted",
                ),
                (
                    "CN=sensor-8",
                    [x509.DNSName(f"s{i}.factory.example") for i in range(3)],
                    "user:alice may have at most 2",
                ),
            ]
            for subject, sans, diagnostic in outside:
                with pytest.raises(EstClientError) as caught:
                    await est.enroll(key=key, subject=subject, sans=sans)
                assert caught.value.status == "403"
                assert diagnostic in caught.value.diagnostic


async def test_a_user_without_grants_is_a_provisioner_within_the_limits(
    deployment: Deployment,
) -> None:
    async with serving(deployment) as (_, _, https_url):
        async with user_client(deployment, https_url) as est:
            key = ec.generate_private_key(ec.SECP256R1())
            chain = await est.enroll(
                key=key, subject="CN=device-0002", sans=[x509.DNSName("device-0002.example")]
            )
            assert chain[0].subject == parse_name("CN=device-0002")
            for subject, sans, diagnostic in [
                (nul_name(), [], "control character"),
                ("CN=x", MANY_SANS, "at most 32 are allowed"),
                ("CN=x", [x509.DNSName("a\x00.example")], "DNS:'a\\x00.example' holds a control"),
                ("CA", [], "subject is the CA's own name"),
            ]:
                with pytest.raises(EstClientError) as caught:
                    await est.enroll(key=key, subject=subject_of(deployment, subject), sans=sans)
                assert caught.value.status == "403"
                assert diagnostic in caught.value.diagnostic


async def test_open_mode_issues_as_before_and_warns(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    device = deployment.device(SERIAL)
    with caplog.at_level(logging.WARNING, logger="estcoap.ca.local"):
        async with serving(deployment, IssuancePolicy.open()) as (_, coaps_url, _):
            async with device_client(deployment, device, coaps_url) as est:
                chain = await est.enroll(
                    key=ec.generate_private_key(ec.SECP256R1()), subject="CN=device-0002"
                )
                assert chain[0].subject == parse_name("CN=device-0002")
                assert requested_template(await est.csrattrs()) is None
                # even open: no NUL, bounded SANs
                with pytest.raises(EstClientError, match="control character"):
                    await est.enroll(
                        key=ec.generate_private_key(ec.SECP256R1()), subject=nul_name()
                    )
    assert any(
        "issuance policy OPEN" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_serve_policy_open_warns_on_stderr_and_a_bad_file_is_one_line(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "estcoap.cli"]
    subprocess.run(
        [*cli, "ca", "init", str(tmp_path / "ca"), "--hostname", "127.0.0.1"],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [*cli, "serve", "--ca", str(tmp_path / "ca"), "--https", "127.0.0.1:0", "--policy", "open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert line.startswith("estcoap serve: WARNING: issuance policy OPEN"), line
    finally:
        proc.terminate()
        proc.wait(10)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[grant]]\nidentity = "user:bob"\ndns = ["x"]\nsubjet = {}\n')
    done = subprocess.run(
        [*cli, "serve", "--ca", str(tmp_path / "ca"), "--https", "127.0.0.1:0", "--policy", bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"estcoap serve: {bad}: grant 1: unknown key(s) subjet (known: dns, email, identity, ip, "
        "max_sans, other_name, serverkeygen, subject, uri)"
    ]


async def test_the_gateway_names_the_device_and_the_ca_holds_it_to_it(
    deployment: Deployment,
) -> None:
    """CoAPs device -> gateway (RA) -> HTTPS -> LocalCA: the CA sees only the RA's
    certificate, and the device's identity in EST-Requester."""
    device = deployment.device(SERIAL)
    ra = issue_ra(deployment.paths.dir, name="factory gateway")
    ca_cert = x509.load_pem_x509_certificate(deployment.paths.ca_cert.read_bytes())
    async with serving(deployment) as (ca, _, https_url):
        upstream = open_upstream(
            UpstreamSettings(
                url=https_url, trust=[ca_cert], ra_chain=[ra.certificate, ca_cert], ra_key=ra.key
            ),
            trust_clients=[deployment.maker.certificate],
        )
        gateway = await start_gateway(
            upstream,
            [("127.0.0.1", 0)],
            cert_chain=deployment.paths.server_cert,
            key=deployment.paths.server_key,
        )
        try:
            async with device_client(deployment, device, gateway.url) as est:
                with pytest.raises(EstClientError) as caught:
                    await est.enroll(
                        key=ec.generate_private_key(ec.SECP256R1()), subject="CN=device-0002"
                    )
                assert caught.value.status == "4.03"
                assert (
                    f"subject must carry {MINE} (the identity of the device the RA vouches "
                    "for)" in caught.value.diagnostic
                )
                # the template reaches the device through the gateway; provision() follows it
                result = await est.provision()
            assert result.certificate.subject == parse_name(MINE)
            # a device that is no RA cannot name another device in EST-Requester
            async with device_client(deployment, device, https_url) as est:
                transport = await est.transport()
                csr = build_csr(
                    ec.generate_private_key(ec.SECP256R1()), parse_name("serialNumber=device-0002")
                )
                reply = await transport.call(  # type: ignore[call-arg]
                    spec_for(Operation.SIMPLEENROLL),
                    None,
                    csr,
                    headers={REQUESTER_HEADER: "serialNumber=device-0002"},
                )
            assert reply.status == "403"
            assert f"subject must carry {MINE} (the identity of your IDevID)" in reply.diagnostic
            record = next(r for r in ca.store.issued_list() if r.certificate == result.certificate)
            assert record.requester == "cert:CN=factory gateway"
        finally:
            await gateway.close()
