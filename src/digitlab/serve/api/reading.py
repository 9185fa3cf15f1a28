"""Reading: one digit, a number, a batch of digits."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, UploadFile

from digitlab.serve.api.deps import MinConfidence, ModelDep, ServiceDep
from digitlab.serve.api.inputs import IMAGE_BODY, ImageDep, multipart_only
from digitlab.serve.errors import ApiError, responses
from digitlab.serve.schemas import BatchPrediction, Prediction, Reading
from digitlab.serve.work import predict_one, read_one

router = APIRouter(tags=["reading"])
REFUSALS = responses(400, 404, 408, 413, 415, 422, 500, 503)


@router.post("/v1/predict", response_model=Prediction, response_model_exclude_unset=True, responses=REFUSALS,
             openapi_extra=IMAGE_BODY, summary="One digit: label, calibrated confidence, probabilities, box")
async def predict(loaded: ModelDep, image: ImageDep, service: ServiceDep, min_confidence: MinConfidence = None,
                  include_image: Annotated[bool, Query(description="add the 28x28 the model saw")] = False) -> dict:
    mc = image.min_confidence if image.min_confidence is not None else min_confidence
    return await service.run(predict_one, loaded, image.source, service.cfg, mc, include_image)


@router.post("/v1/read", response_model=Reading, responses=REFUSALS, openapi_extra=IMAGE_BODY,
             summary="A number: its text and a box per digit, in the uploaded image's pixels")
async def read(loaded: ModelDep, image: ImageDep, service: ServiceDep, min_confidence: MinConfidence = None) -> dict:
    mc = image.min_confidence if image.min_confidence is not None else min_confidence
    return await service.run(read_one, loaded, image.source, service.cfg, mc)


@router.post("/v1/predict/batch", response_model=BatchPrediction, response_model_exclude_unset=True,
             responses=REFUSALS, dependencies=[Depends(multipart_only)],
             summary="Up to max_batch images, one multipart field each")
async def predict_batch(loaded: ModelDep, service: ServiceDep,
                        image: Annotated[list[UploadFile], File(description="the image files, one field each")],
                        min_confidence: MinConfidence = None) -> dict:
    if len(image) > service.cfg.max_batch:
        raise ApiError(413, "batch_too_large", f"{len(image)} images: at most {service.cfg.max_batch} per request")
    images = [await f.read() for f in image]

    def one(i: int, data: bytes) -> dict:
        try:
            return predict_one(loaded, data, service.cfg, min_confidence, False)
        except ApiError as e:
            raise ApiError(e.status, e.error, f"image {i}: {e.detail}") from None

    # one pool task per image: they are preprocessed side by side and meet in the batcher
    results = await asyncio.gather(*(service.run(one, i, d) for i, d in enumerate(images)))
    return {"results": results, "model": loaded.name}


# The stdlib server's routes, for one release (see README): same handlers, same answers.
router.add_api_route("/api/predict", predict, methods=["POST"], response_model=Prediction,
                     response_model_exclude_unset=True, include_in_schema=False)
router.add_api_route("/api/read", read, methods=["POST"], response_model=Reading, include_in_schema=False)
