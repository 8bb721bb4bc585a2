"""The key types the project uses, named once (codec is the lowest layer, so every other
part can import them from here)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# Keys a device, a CA or an RA may hold: what generate_key() makes and load_private_key()
# accepts.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

# Keys CMS here signs and encrypts with (RFC 7030 s4.4.2): Ed25519 has no key transport
# or key agreement in CMS, so a sealed key's signer and recipient are EC or RSA.
CmsPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
CmsPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
