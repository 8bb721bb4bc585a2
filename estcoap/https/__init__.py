"""EST over HTTPS (RFC 7030, RFC 8951): the server front, its TLS and HTTP authentication."""

from .auth import HttpAuthenticator
from .front import DEFAULT_MAX_BODY, HttpsFront
from .server import HttpsServer, start_https_server
from .users import REALM, User, add_user, parse_users_file, user_from_arg

__all__ = [
    "DEFAULT_MAX_BODY",
    "REALM",
    "HttpAuthenticator",
    "HttpsFront",
    "HttpsServer",
    "User",
    "add_user",
    "parse_users_file",
    "start_https_server",
    "user_from_arg",
]
