"""Registry exceptions: each says what was wrong and what to do about it."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""


class UnsupportedDatabaseError(RegistryError):
    """The URL names a database the registry has no dialect-specific code for."""


class UnknownEvolutionRunError(RegistryError):
    """A strategy was recorded against an evolution run that is not in the registry."""


class UnknownStrategyError(RegistryError):
    """A strategy id (or a parent id) is not in the registry."""


class UnknownAccountError(RegistryError):
    """An account id is not in the registry."""


class UnknownOrderError(RegistryError):
    """A client order id is not in the registry."""


class InvalidStatusTransitionError(RegistryError):
    """A strategy status change that the lifecycle does not allow."""


class InvalidOrderTransitionError(RegistryError):
    """An order status change that the order lifecycle does not allow."""


class ClientOrderIdConflictError(RegistryError):
    """The same client order id was reused for a different order."""


class FillConflictError(RegistryError):
    """The same broker fill id was reported twice with different contents."""


class InvalidRegistryInputError(RegistryError, ValueError):
    """A value handed to the registry is malformed (missing column, negative quantity, naive time, ...)."""
