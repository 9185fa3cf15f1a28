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


async def current_model(service: Annotated[Service, Depends(get_service)]) -> Loaded:
    """The model this request is answered with, taken once at its start: a reload swaps the service's
    reference, so a request in flight finishes on the model it started with. 503 until one is loaded."""
    return service.current()


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[ServeConfig, Depends(get_settings)]
ModelDep = Annotated[Loaded, Depends(current_model)]
MinConfidence = Annotated[float | None, Query(ge=0.0, le=1.0, description="answer \"unsure\" (label null, the "
                                            "best reading in guess) below this calibrated confidence (default: "
                                            "the reader's decision, the same as the CLI's)")]
