"""The routes' dependencies: the worker's service, its settings, the current model.

All `async def`: FastAPI runs a plain `def` dependency in a thread, a hop per request for nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from digitlab.serve.config import ServeConfig
from digitlab.serve.service import Loaded, Service


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_settings(service: Annotated[Service, Depends(get_service)]) -> ServeConfig:
    return service.cfg


ModelName = Annotated[str | None, Query(alias="model", max_length=100, description=(
    "the model to answer with: a name of GET /v1/models (`digitlab serve --models DIR`); default: the "
    "service's own model"))]


async def current_model(service: Annotated[Service, Depends(get_service)], model: ModelName = None) -> Loaded:
    """The model this request is answered with (?model=NAME, else the service's own), taken once at its
    start: a reload swaps the service's reference, so a request in flight finishes on the model it
    started with. 503 until the service's model is loaded; 404 for a name it does not serve."""
    return await service.named(model)


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[ServeConfig, Depends(get_settings)]
ModelDep = Annotated[Loaded, Depends(current_model)]
MinConfidence = Annotated[float | None, Query(ge=0.0, le=1.0, description="answer \"unsure\" (label null, the "
                                            "best reading in guess) below this calibrated confidence (default: "
                                            "the reader's decision, the same as the CLI's)")]
