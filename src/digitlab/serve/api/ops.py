"""Operations and pages: liveness, readiness, metrics, the drawing pad and the API docs (offline)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from digitlab.serve.api.deps import ServiceDep
from digitlab.serve.errors import responses
from digitlab.serve.schemas import Health

router = APIRouter(tags=["ops"])
STATIC = resources.files("digitlab.serve").joinpath("static")
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, served from the fastapi-offline package: no CDN


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, responses=responses(503), summary="Ready once the model is loaded")
async def readyz(service: ServiceDep) -> dict:
    service.current()
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text exposition")
async def metrics(service: ServiceDep) -> PlainTextResponse:
    batcher = service.loaded.batcher if service.loaded else None
    extra = {"digitlab_inferences_pending": service.pending,
             "digitlab_model_loaded": int(service.loaded is not None),
             # network calls and the images they read, since the current model was loaded: their
             # ratio is the micro-batches' mean size
             "digitlab_network_calls": batcher.calls if batcher else 0,
             "digitlab_network_images": batcher.images if batcher else 0}
    return PlainTextResponse(service.metrics.render(extra), media_type="text/plain; version=0.0.4")


router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/api/health", healthz, methods=["GET"], include_in_schema=False)  # the old server's


PAD = STATIC.joinpath("index.html").read_text(encoding="utf-8")


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
async def pad() -> HTMLResponse:
    return HTMLResponse(PAD)


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
                               swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")


def mount_files(app: FastAPI) -> None:
    """The pad's files under /static and Swagger UI's under /docs-assets, both from installed packages."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(resources.files("fastapi_offline").joinpath("static"))),
              name="docs-assets")
