"""The operator console: a third front (aiohttp pages) over the CA's store, with its own
users and sessions (docs/console.md). It imports no other front, nor the client or gateway."""

from .server import ConsoleServer, PlainHttpRefused, is_loopback, start_console
from .tally import BothHooks, RequestTally
from .users import ConsoleUsersError, users_path

__all__ = [
    "BothHooks",
    "ConsoleServer",
    "ConsoleUsersError",
    "PlainHttpRefused",
    "RequestTally",
    "is_loopback",
    "start_console",
    "users_path",
]
