"""FastAPI dependencies as `Annotated` aliases, used as plain parameter types in routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from models import User
from services.auth_service import get_current_user
from services.container import Services


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
CurrentUserDep = Annotated[User, Depends(get_current_user)]
