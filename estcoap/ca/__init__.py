"""The built-in CA: init_ca() makes a CA directory, LocalCA serves EST from it, Store records."""

from ..codec.keytypes import PrivateKey
from .create import CaExistsError, init_ca
from .keys import KEY_TYPES, generate_key
from .local import LocalCA
from .paths import CaPaths
from .store import IssuedRecord, PendingRecord, Store, StoreError, UnknownRequest

__all__ = [
    "KEY_TYPES",
    "CaExistsError",
    "CaPaths",
    "IssuedRecord",
    "LocalCA",
    "PendingRecord",
    "PrivateKey",
    "Store",
    "StoreError",
    "UnknownRequest",
    "generate_key",
    "init_ca",
]
