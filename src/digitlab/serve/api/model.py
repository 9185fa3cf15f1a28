"""The models: the cards, the list of what a request may name, and loading the model again without a restart."""

from __future__ import annotations

from fastapi import APIRouter, Request

from digitlab.serve.api.deps import ModelDep, ServiceDep
from digitlab.serve.errors import ApiError, responses
from digitlab.serve.schemas import ModelCard, ModelList
from digitlab.serve.service import Loaded

router = APIRouter(tags=["model"])


def card(loaded: Loaded) -> dict:
    return {"model": loaded.name, "path": str(loaded.path), "sha256": loaded.sha256,
            "loaded_at": loaded.loaded_at, "card": loaded.model.card}


@router.get("/v1/model", response_model=ModelCard, responses=responses(404, 503),
            summary="The model card of the served model (?model=NAME: of that model)")
async def model_card(loaded: ModelDep) -> dict:
    return card(loaded)


@router.get("/v1/models", response_model=ModelList, responses=responses(503),
            summary="The models a request may choose with ?model=NAME, and which of them are loaded")
async def model_list(service: ServiceDep) -> dict:
    default = service.current()
    models = [{"name": default.name.partition("@")[0], "default": True, "loaded": True, "model": default.name}]
    if service.models is not None:
        for name in service.models.names():
            loaded = service.models.cached(name)
            models.append({"name": name, "default": False, "loaded": loaded is not None,
                           "model": loaded.name if loaded else None})
    return {"models": models, "cache_size": service.cfg.models_cache if service.models else 1}


@router.post("/v1/model/reload", response_model=ModelCard, responses=responses(403, 500),
             summary="Load the model file again (replace it first); requests in flight finish on the old one")
async def reload_model(request: Request, service: ServiceDep) -> dict:
    token = service.cfg.reload_token
    if token:
        if request.headers.get("authorization", "") != f"Bearer {token}":
            raise ApiError(403, "forbidden", "reloading needs Authorization: Bearer <the --reload-token>")
    elif (request.client.host if request.client else "") not in ("127.0.0.1", "::1"):
        raise ApiError(403, "forbidden", "without --reload-token only loopback clients may reload the model")
    try:
        loaded = await service.reload()
    except Exception as e:  # noqa: BLE001 - a bad new file: say why, keep serving the old model
        raise ApiError(500, "reload_failed", f"{e}; still serving the previous model") from None
    if service.models is not None:  # and the folder: new, removed and replaced models
        await service.rescan()
    return card(loaded)
