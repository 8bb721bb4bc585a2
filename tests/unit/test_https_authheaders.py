"""HTTP auth header syntax and Digest arithmetic against RFC 7616 s3.9.1."""

from __future__ import annotations

import pytest

from estcoap.codec.authheaders import (
    AuthHeaderError,
    digest_ha1,
    digest_response,
    parse_authorization,
    parse_challenges,
)
from estcoap.https.auth import HttpAuthenticator
from estcoap.https.users import User

# RFC 7616 s3.9.1: GET /dir/index.html, user Mufasa, password "Circle of Life".
RFC7616 = dict(
    method="GET",
    uri="/dir/index.html",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    nc="00000001",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    qop="auth",
)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example_responses(algorithm: str, expected: str) -> None:
    ha1 = digest_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert digest_response(algorithm, ha1, **RFC7616) == expected


def test_several_challenges_in_one_header_and_quoted_commas() -> None:
    header = 'Basic realm="a, b", Digest realm="x", qop="auth, auth-int", nonce="n\\"1", stale=TRUE'
    basic, digest = parse_challenges([header])
    assert (basic.scheme, basic.params) == ("basic", {"realm": "a, b"})
    assert digest.scheme == "digest"
    assert digest.params == {"realm": "x", "qop": "auth, auth-int", "nonce": 'n"1', "stale": "TRUE"}


def test_basic_token68_with_padding() -> None:
    cred = parse_authorization("Basic dXNlcjpwdw==")
    assert (cred.scheme, cred.token68) == ("basic", "dXNlcjpwdw==")
    with pytest.raises(AuthHeaderError):
        parse_authorization("Basic a, Basic b")


def _answer(auth: HttpAuthenticator, nonce: str, password: str = "pw", nc: str = "00000001") -> str:
    ha1 = digest_ha1("SHA-256", "u", auth.realm, password)
    resp = digest_response(
        "SHA-256", ha1, method="POST", uri="/x", nonce=nonce, nc=nc, cnonce="c", qop="auth"
    )
    return (
        f'Digest username="u", realm="{auth.realm}", uri="/x", algorithm=SHA-256, nonce="{nonce}", '
        f'nc={nc}, cnonce="c", qop=auth, response="{resp}"'
    )


async def test_authenticator_nonce_states() -> None:
    auth = HttpAuthenticator([User("u", password="pw")], nonce_lifetime=60)
    nonce = parse_challenges(auth.challenges())[0].params["nonce"]
    assert (await auth.authenticate(_answer(auth, nonce), "POST", "/x")).user == "u"
    assert "replayed" in (await auth.authenticate(_answer(auth, nonce), "POST", "/x")).reason
    wrong = await auth.authenticate(_answer(auth, nonce, "bad", "00000002"), "POST", "/x")
    assert wrong.user is None
    forged = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    assert "not issued" in (await auth.authenticate(_answer(auth, forged), "POST", "/x")).reason
    assert "uri" in (await auth.authenticate(_answer(auth, nonce, nc="3"), "POST", "/y")).reason
    auth.nonce_lifetime = -10  # every nonce is now expired: a correct answer is only stale
    outcome = await auth.authenticate(_answer(auth, nonce, nc="00000004"), "POST", "/x")
    assert outcome.user is None and outcome.stale
