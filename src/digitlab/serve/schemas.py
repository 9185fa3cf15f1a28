"""Request and response bodies as pydantic models: they validate JSON input and document the API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Box = Annotated[list[int], Field(min_length=4, max_length=4,
                                 description="left, top, right, bottom in the uploaded image's pixels")]
Pixel = Annotated[int, Field(ge=0, le=255)]
Row = Annotated[list[Pixel], Field(min_length=28, max_length=28)]


class ImageJSON(BaseModel):
    """One image as JSON: `image` (base64 or a data: URL of an image file) or `pixels` (28 rows of 28
    values 0-255, ink bright on dark as in MNIST)."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="base64 of an image file, or a data: URL")
    pixels: Annotated[list[Row], Field(min_length=28, max_length=28)] | None = None
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_of(self) -> ImageJSON:
        if (self.image is None) == (self.pixels is None):
            raise ValueError('give exactly one of "image" or "pixels"')
        return self


class ImageForm(BaseModel):
    """One image as a multipart form (`curl -F image=@digit.png`)."""

    image: bytes = Field(description="the image file: PNG, JPEG, GIF, WebP, BMP, TIFF...")


class Correction(BaseModel):
    """What a correction says besides its image."""

    model_config = ConfigDict(extra="forbid")
    label: int = Field(ge=0, le=9, description="the right digit")
    predicted: int | None = Field(None, ge=0, le=9, description="what the model answered, if known")
    user: str | None = Field(None, max_length=200, description="who corrected it (a user or app id)")


class FeedbackForm(Correction):
    """A correction as a multipart form."""

    model_config = ConfigDict(extra="ignore")
    image: bytes = Field(description="the image the reader got wrong")


class FeedbackJSON(ImageJSON, Correction):
    """A correction as JSON: the image as for /v1/predict, and the right label."""

    model_config = ConfigDict(extra="forbid")


class Prediction(BaseModel):
    label: int | None = Field(description="the digit; null when the reader abstains (see status)")
    confidence: float = Field(description="calibrated: 0.9 means right about 9 times in 10")
    probabilities: list[float] | None = Field(description="per digit 0-9; null when no digit was found")
    box: Box | None = Field(description="the digit's ink in the uploaded image's pixels, if the reader gives it")
    status: Literal["ok", "no digit", "not a digit", "unsure"] | str
    guess: int | None = Field(None, description="the most likely digit, also when label is null (where the reader "
                                                "gives it)")
    model: str = Field(description="name@sha256-prefix of the model that answered (the name: ?model=)")
    hint: str | None = Field(None, description="present when the picture looks like several digits: read it with "
                                               "POST /v1/read instead")
    image: str | None = Field(None, description="the 28x28 the model saw, a PNG data URL (with ?include_image=true)")


class BatchPrediction(BaseModel):
    results: list[Prediction]
    model: str


class ReadDigit(BaseModel):
    label: int | None = Field(description="the digit; null when the reader is unsure of it (see status)")
    guess: int = Field(description="the most likely digit, also when label is null")
    status: Literal["ok", "unsure"]
    confidence: float
    box: Box


class Reading(BaseModel):
    text: str = Field(description="the best reading, left to right (every digit's guess); in a row of printed "
                                  "boxes, an empty box between digits is a space")
    status: Literal["ok", "unsure", "no digit"] = Field(description="ok only when every digit is and nothing "
                                                                    "casts doubt on the number")
    confidence: float = Field(description="the product of the digits' confidences")
    doubt: str | None = Field(None, description="why the number is unsure although each digit is sure (an empty "
                                                "box inside it, boxes that do not hold all the writing)")
    digits: list[ReadDigit]
    model: str


class FeedbackStored(BaseModel):
    id: int
    label: int
    stored: bool = True
    kept_apart: str | None = Field(None, description='why it is kept out of fine-tuning ("not a digit"); absent '
                                                     'when it is not')


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    path: str
    sha256: str
    loaded_at: float
    card: dict


class ModelEntry(BaseModel):
    name: str = Field(description="what ?model= takes")
    default: bool = Field(description="the model that answers when a request names none")
    loaded: bool = Field(description="in memory now (the others load on their first request)")
    model: str | None = Field(description="name@sha256-prefix of the loaded file, as answers name it; null "
                                          "until loaded")


class ModelList(BaseModel):
    models: list[ModelEntry]
    cache_size: int = Field(description="at most this many of the folder's models are loaded at once")


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    error: str = Field(description="a short code: not_an_image, too_large, unsupported_media_type, ...")
    detail: str = Field(description="what is wrong, in a sentence")
