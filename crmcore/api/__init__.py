"""The REST API (litestar + msgspec)."""

from litestar.di import NamedDependency

from ..deployment import Deployment
from .app import create_app
from .auth import CurrentActor, OptionalActor

#: Annotate a plugin route handler's parameter with it to receive the deployment:
#: ``async def handler(deployment: CurrentDeployment) -> dict``.
CurrentDeployment = NamedDependency[Deployment]

#: ``actor: CurrentActor`` gives a handler the request's actor (``OptionalActor`` on a public
#: route); see :mod:`crmcore.api.auth`.
__all__ = ["create_app", "CurrentActor", "CurrentDeployment", "OptionalActor"]
