"""Dependencies shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from ..service import Federation
from ..settings import Settings


# Dependencies are async on purpose: FastAPI runs plain functions in a thread pool, a needless
# hop per request for what are attribute reads.
async def get_federation(request: Request) -> Federation:
    return request.app.state.federation  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def check_token(settings: Settings, authorization: str | None) -> bool:
    expected = settings.token()
    if expected is None:
        return True
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() not in ("token", "bearer"):
        return False
    # Constant time: the comparison must not tell how much of a guess was right.
    return hmac.compare_digest(value.strip().encode(), expected.encode())


async def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    if not check_token(settings, authorization):
        # configurable-http-proxy answers 403 for a missing or wrong token; so do we.
        raise HTTPException(status_code=403, detail="missing or wrong token")


FederationDep = Annotated[Federation, Depends(get_federation)]
Authorized = Depends(require_token)
