"""The issuance policy for a PSK requester (issue 15): held to the subject its key is bound
to in every mode, no subjectAltName unless a grant for psk:<identity> gives it, and the
CSR template names the bound subject."""

from __future__ import annotations

import pytest
from cryptography import x509

from estcoap.ca.policy import IssuancePolicy, Requester
from estcoap.codec.names import parse_name
from estcoap.service import Forbidden

BOUND = parse_name("serialNumber=sensor-7,CN=sensor seven")
PSK = Requester.psk("sensor-7", BOUND)


def san(*names: str) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.DNSName(n) for n in names])


@pytest.mark.parametrize("policy", [IssuancePolicy(), IssuancePolicy.open()])
def test_only_the_bound_subject_in_any_mode(policy: IssuancePolicy) -> None:
    policy.check(PSK, BOUND, None)
    for other in ("CN=sensor seven", "serialNumber=sensor-8,CN=sensor seven", "CN=x"):
        with pytest.raises(
            Forbidden, match="subject must be serialNumber=sensor-7,CN=sensor seven"
        ):
            policy.check(PSK, parse_name(other), None)


def test_subject_alt_names_only_as_a_grant_gives() -> None:
    with pytest.raises(Forbidden, match="subjectAltName"):
        IssuancePolicy().check(PSK, BOUND, san("sensor-7.factory.example"))
    granted = IssuancePolicy.from_mapping(
        {"grant": [{"identity": "psk:sensor-*", "dns": ["{identity}.factory.example"]}]}
    )
    granted.check(PSK, BOUND, san("sensor-7.factory.example"))
    with pytest.raises(Forbidden, match="not granted to psk:sensor-7"):
        granted.check(PSK, BOUND, san("sensor-8.factory.example"))


def test_serverkeygen_follows_the_policy_and_grants() -> None:
    IssuancePolicy().check(PSK, BOUND, None, serverkeygen=True)
    devices_only = IssuancePolicy.from_mapping({"serverkeygen": False})
    with pytest.raises(Forbidden, match="serverkeygen is not granted to psk:sensor-7"):
        devices_only.check(PSK, BOUND, None, serverkeygen=True)
    regranted = IssuancePolicy.from_mapping(
        {"serverkeygen": False, "grant": [{"identity": "psk:sensor-7", "serverkeygen": True}]}
    )
    regranted.check(PSK, BOUND, None, serverkeygen=True)


def test_the_template_names_the_bound_subject_in_any_mode() -> None:
    assert IssuancePolicy().template_subject(PSK) == BOUND
    assert IssuancePolicy.open().template_subject(PSK) == BOUND
