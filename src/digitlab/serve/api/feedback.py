"""Corrections: "wrong? it is a 7", stored for fine-tuning, bounded in size, rate and total."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request

from digitlab.serve import feedback as store
from digitlab.serve.api.deps import ServiceDep
from digitlab.serve.api.inputs import FEEDBACK_BODY, FeedbackDep
from digitlab.serve.errors import ApiError, responses
from digitlab.serve.schemas import FeedbackStored
from digitlab.serve.service import Loaded, Service
from digitlab.serve.work import correction

router = APIRouter(tags=["feedback"])


async def may_correct(request: Request, service: ServiceDep) -> None:
    """The write token (when set), the client's rate and the database's size, checked before the body
    is read: a refused client costs no decoding."""
    cfg = service.cfg
    if cfg.feedback_token and request.headers.get("authorization", "") != f"Bearer {cfg.feedback_token}":
        raise ApiError(401, "unauthorized", "corrections need Authorization: Bearer <the --feedback-token>",
                       {"www-authenticate": "Bearer"})
    client = request.client.host if request.client else "unknown"
    if wait := service.feedback_rate.take(client):
        raise ApiError(429, "rate_limited", f"at most {cfg.feedback_per_minute} corrections a minute from one "
                       f"client: try again in {math.ceil(wait)} s", {"retry-after": str(math.ceil(wait))})
    if store.size_on_disk(cfg.feedback_db) >= cfg.feedback_max_mb * 2**20:
        raise ApiError(507, "storage_full", f"the corrections database has reached its {cfg.feedback_max_mb:g} MB "
                       "limit (--feedback-max-mb): export and clear it, or raise the limit")


def store_correction(service: Service, loaded: Loaded | None, source, label: int, predicted: int | None,
                     user: str | None) -> tuple[int, str | None]:
    if loaded is None:
        raise ApiError(503, "not_ready", "the model is loading: corrections are checked by the reader")
    kept = correction(loaded, source, service.cfg)
    row = store.add(service.db(), kept["image"], "image/png", label, predicted, user, loaded.name,
                    digit=kept["digit"], kept_apart=kept["kept_apart"])
    return row, kept["kept_apart"]


@router.post("/v1/feedback", response_model=FeedbackStored, response_model_exclude_none=True, status_code=201,
             responses=responses(400, 401, 408, 413, 415, 422, 429, 500, 503, 507), openapi_extra=FEEDBACK_BODY,
             dependencies=[Depends(may_correct)],
             summary='A correction ("wrong? it is a 7"), stored for fine-tuning: the 28x28 digit and a small crop')
async def post_feedback(service: ServiceDep, given: FeedbackDep) -> dict:
    c = given.correction
    row, kept_apart = await service.run(store_correction, service, service.loaded, given.source, c.label,
                                        c.predicted, c.user)
    return {"id": row, "label": c.label, "kept_apart": kept_apart}



