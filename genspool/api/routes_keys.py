"""API key management over HTTP (``admin`` only); the same as ``genspool keys``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from genspool.api.auth import requires
from genspool.api.deps import Svc
from genspool.core.keys import Scope

__all__ = ["KeyCreate", "router"]

router = APIRouter(prefix="/v1", tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(description="The tenant whose jobs the key submits and sees.")
    scopes: list[Scope] = Field(min_length=1, description="Any of submit, read, admin.")
    name: str | None = Field(None, max_length=200, description="A label for people.")
    rpm: int | None = Field(None, ge=1, description="Most submissions per minute.")


@router.get("/keys", summary="API keys (never their secrets)")
@requires(Scope.ADMIN)
async def list_keys(svc: Svc) -> dict[str, Any]:
    keys = await svc.keys.list_keys()
    return {"object": "list", "data": [k.public() for k in keys]}


@router.post("/keys", status_code=201, summary="Create an API key; the key is shown only here")
@requires(Scope.ADMIN)
async def create_key(svc: Svc, spec: KeyCreate) -> dict[str, Any]:
    key, token = await svc.keys.create(spec.tenant, spec.scopes, name=spec.name, rpm=spec.rpm)
    return {**key.public(), "key": token}


@router.post("/keys/{key_id}/revoke", summary="Revoke an API key for good")
@requires(Scope.ADMIN)
async def revoke_key(svc: Svc, key_id: str) -> dict[str, Any]:
    return (await svc.keys.revoke(key_id)).public()
