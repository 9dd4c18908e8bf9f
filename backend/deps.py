"""FastAPI dependencies as `Annotated` aliases, used as plain parameter types in routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.container import Services


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
