"""The HTTPS front's password-failure limits live in estcoap.throttle (the console uses
them too, and fronts import no other front); these names stay importable from here."""

from ..throttle import AuthLimits, FailureLimit, retry_after, source_key, user_key

__all__ = ["AuthLimits", "FailureLimit", "retry_after", "source_key", "user_key"]
