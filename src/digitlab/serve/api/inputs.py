"""Request bodies that come in more than one content type, as dependencies.

An image can be sent as a multipart form, as the raw file with an image content type, or as JSON.
FastAPI declares one media type per body, so these dependencies pick the parser by Content-Type and
validate with the pydantic models of `schemas`; `request_body` documents the same models in OpenAPI
(FastAPI's way for bodies it does not parse itself), so the schema comes from the models, not by hand.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitlab.serve.api.deps import SettingsDep
from digitlab.serve.config import ServeConfig
from digitlab.serve.errors import ApiError, validation_detail
from digitlab.serve.schemas import Correction, FeedbackForm, FeedbackJSON, ImageForm, ImageJSON

RAW_TYPES = "image/* or application/octet-stream"
MAX_FIELD_BYTES = 64 * 1024  # a text field of a form (label, user): no need for more


def request_body(json: type[BaseModel] | None, form: type[BaseModel] | None, raw: bool) -> dict:
    """`openapi_extra` of a route whose body these dependencies parse, from the pydantic models."""
    content: dict = {}
    if form is not None:
        content["multipart/form-data"] = {"schema": form.model_json_schema()}
    if raw:
        content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
    if json is not None:
        content["application/json"] = {"schema": json.model_json_schema()}
    return {"requestBody": {"required": True, "content": content}}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def validated(model: type[BaseModel], data: dict | bytes):
    try:
        return model.model_validate_json(data) if isinstance(data, bytes) else model.model_validate(data)
    except ValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors()):
            raise ApiError(400, "invalid_json", f"the body is not valid JSON ({e.errors()[0]['msg']})") from None
        raise ApiError(422, "invalid_request", validation_detail(e.errors())) from None


def decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", '"image" is not valid base64 (or a data: URL holding base64)') from None


def json_source(payload: ImageJSON) -> bytes | np.ndarray:
    return decode_base64(payload.image) if payload.image is not None else np.array(payload.pixels, np.uint8)


async def read_form(request: Request, cfg: ServeConfig) -> FormData:
    try:
        # one file more than allowed, so a batch one too large is told so (413), not refused as malformed
        return await request.form(max_files=cfg.max_batch + 1, max_fields=32, max_part_size=MAX_FIELD_BYTES)
    except StarletteHTTPException as e:
        if "Too many files" in str(e.detail):
            raise ApiError(413, "batch_too_large", f"at most {cfg.max_batch} images per request") from None
        raise ApiError(400, "invalid_multipart", f"malformed multipart form ({e.detail})") from None


async def form_images(form: FormData) -> list[bytes]:
    fields = form.getlist("image")
    if not fields:
        raise ApiError(400, "missing_image", 'the form has no "image" file field')
    images = []
    for field in fields:
        if not isinstance(field, UploadFile):
            raise ApiError(400, "missing_image", 'the "image" field must be a file upload, not text')
        images.append(await field.read())
    return images


async def body(request: Request, what: str) -> bytes:
    data = await request.body()
    if not data:
        raise ApiError(400, "empty_body", f"the body is empty: send {what}")
    return data


@dataclass(frozen=True)
class ImageInput:
    source: bytes | np.ndarray  # an image file's bytes, or 28x28 pixels
    min_confidence: float | None = None  # given in a JSON body (the query parameter otherwise)


async def image_input(request: Request, cfg: SettingsDep) -> ImageInput:
    """The image of /v1/predict and /v1/read, whichever way it was sent."""
    media = media_type(request)
    if media == "multipart/form-data":
        return ImageInput((await form_images(await read_form(request, cfg)))[0])
    if media.startswith("image/") or media == "application/octet-stream":
        return ImageInput(await body(request, "the image file's bytes"))
    if media == "application/json":
        payload = validated(ImageJSON, await body(request, 'JSON {"image": ...} or {"pixels": ...}'))
        return ImageInput(json_source(payload), payload.min_confidence)
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {media or '(none)'!r} not accepted: send multipart/form-data with an "
                   f'"image" file, the image bytes as {RAW_TYPES}, or application/json')


async def multipart_only(request: Request) -> None:
    if media_type(request) != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", 'send multipart/form-data with one "image" field per image')


@dataclass(frozen=True)
class FeedbackInput:
    source: bytes | np.ndarray
    correction: Correction


async def feedback_input(request: Request, cfg: SettingsDep) -> FeedbackInput:
    """A correction, as a multipart form (image, label, predicted, user) or as JSON."""
    media = media_type(request)
    if media == "multipart/form-data":
        form = await read_form(request, cfg)
        (image, *_) = await form_images(form)
        fields = {k: form.get(k) for k in ("label", "predicted", "user") if form.get(k) not in (None, "")}
        payload = validated(FeedbackForm, {"image": image, **fields})
        return FeedbackInput(image, Correction(label=payload.label, predicted=payload.predicted, user=payload.user))
    if media == "application/json":
        payload = validated(FeedbackJSON, await body(request, 'JSON {"image": ..., "label": ...}'))
        return FeedbackInput(json_source(payload), payload)
    raise ApiError(415, "unsupported_media_type", "send multipart/form-data (image, label) or application/json")


ImageDep = Annotated[ImageInput, Depends(image_input)]
FeedbackDep = Annotated[FeedbackInput, Depends(feedback_input)]
IMAGE_BODY = request_body(ImageJSON, ImageForm, raw=True)
FEEDBACK_BODY = request_body(FeedbackJSON, FeedbackForm, raw=False)
