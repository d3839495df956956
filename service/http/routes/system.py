"""Health, metrics and the client configuration: open to monitors and the page (metrics behind the key
only with DJQA_METRICS_REQUIRE_KEY)."""

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from embeddings.model import licence_of
from service.config import DEFAULT_MODE, MODES
from service.http.deps import SettingsDep, SnapshotDep, require_metrics_key
from service.http.errors import error_responses
from service.http.schemas import ClientConfig, CollectionInfo, Health, ModelInfo
from service.monitoring import exposition

system_routes = APIRouter(prefix="/api")
metrics_routes = APIRouter()


@system_routes.get(
    "/health",
    summary="服务状态",
    response_model=Health,
    responses=error_responses((503, "索引不可用，或 Milvus 不可访问（store_unavailable）")),
)
def health(snapshot: SnapshotDep) -> Health:
    """索引、存储和模型的概况；服务正常时 status 为 ok，Milvus 不可访问时返回 503（store_unavailable）。"""
    store = snapshot.searcher.store
    store.check_reachable()
    manifest = store.manifest
    return Health(
        documents=manifest["document_count"],
        passages=manifest["passage_count"],
        model=" + ".join(model["name"] for model in manifest["models"]),
        models=[
            ModelInfo(
                name=model["name"],
                weights_sha256=model["weights_sha256"],
                engine=model["engine"],
                licence=licence_of(model["weights_sha256"]),
            )
            for model in manifest["models"]
        ],
        built_at=manifest.get("built_at"),
        index_version=snapshot.version,
        store=store.kind,
        store_reachable=True,
        collections=[CollectionInfo(**vars(count)) for count in snapshot.searcher.collections.values()],
    )


@system_routes.get("/config", summary="页面配置", response_model=ClientConfig)
def client_config(settings: SettingsDep, request: Request) -> ClientConfig:
    """检索方式和各项上限（返回条数、问题长度、上传文件），页面据此设置输入框、选项和说明。"""
    return ClientConfig(
        modes=list(MODES),
        default_mode=DEFAULT_MODE,
        max_top_k=settings.max_top_k,
        default_top_k=settings.default_top_k,
        max_query_chars=settings.max_query_chars,
        max_upload_files=settings.max_upload_files,
        max_upload_bytes=settings.max_upload_bytes,
        max_unpacked_bytes=settings.max_unpacked_bytes,
        max_document_chars=settings.max_document_chars,
        max_document_passages=settings.max_document_passages,
        max_pdf_pages=settings.max_pdf_pages,
        generation=settings.generation_configured,
        question_log=request.app.state.question_log is not None,
    )


@metrics_routes.get(
    "/metrics",
    summary="Prometheus 指标",
    dependencies=[Depends(require_metrics_key)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus 文本格式"}},
)
def metrics(request: Request) -> Response:
    """请求数和耗时（按路由模板和状态码）、各模型的问题编码耗时、检索各阶段耗时、索引版本与文档和段落数、
    各状态的上传任务数、生成式回答改用摘编答案的次数（按原因）。"""
    return Response(exposition(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
