"""Every refusal is a 4xx (or 5xx) with {"error": code, "detail": sentence}: the exception, the
handlers that turn FastAPI's and Starlette's own errors into that shape, and the documented bodies."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitlab.serve.schemas import ErrorBody


class ApiError(Exception):
    """A request the service refuses: the status code and the {"error", "detail"} body."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    # x-error carries the code to the Guard's metrics without it parsing the body
    return JSONResponse({"error": error, "detail": detail}, status_code=status,
                        headers={"x-error": error, **(headers or {})})


def responses(*codes: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` of a route that may refuse with these codes."""
    return {code: {"model": ErrorBody} for code in codes}


def validation_detail(errors: Iterable[dict]) -> str:
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _api_error(request: Request, e: ApiError) -> JSONResponse:
    return error_response(e.status, e.error, e.detail, e.headers)


async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", validation_detail(e.errors()))


async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
    error = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
    detail = {404: f"no such endpoint: {request.url.path}",
              405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
    return error_response(e.status_code, error, detail, e.headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
