"""What the store's shared SQL needs of a backend: a cursor (sqlite3's has it, store_pg
wraps psycopg's to have it: ? placeholders) and the errors driver errors become."""

from __future__ import annotations

from typing import Any, Protocol


class StoreError(Exception):
    """A store problem worth a one-line message."""


class IntegrityViolation(StoreError):
    """A write a constraint refused; constraint names it as TABLE.COLUMN (issued.serial)
    where the backend can tell, else the driver's words."""

    def __init__(self, message: str, constraint: str) -> None:
        super().__init__(message)
        self.constraint = constraint


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...
