"""Every service, listed once, in start order: the runner, the CLI, replay and the tests
read this list (adding a service is one new package and one line here)."""

from __future__ import annotations

from runtime.app import Service
from services.identity.service import SERVICE as IDENTITY
from services.sharing.service import SERVICE as SHARING
from services.social.service import SERVICE as SOCIAL
from services.storage.service import SERVICE as STORAGE
from services.sync.service import SERVICE as SYNC

SERVICES: tuple[Service, ...] = (IDENTITY, SOCIAL, STORAGE, SHARING, SYNC)


def names() -> list[str]:
    """The services' names, in start order."""
    return [s.name for s in SERVICES]


def named(name: str) -> Service:
    """The service called ``name``."""
    for service in SERVICES:
        if service.name == name:
            return service
    raise KeyError(f"no service called {name!r}; there are {', '.join(names())}")
