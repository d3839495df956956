"""Health and the client configuration: open to monitors and the page, never behind the key."""

from fastapi import APIRouter

from embeddings.model import licence_of
from service.config import DEFAULT_MODE, MODES
from service.http.deps import SettingsDep, SnapshotDep
from service.http.errors import error_responses
from service.http.schemas import ClientConfig, CollectionInfo, Health, ModelInfo

system_routes = APIRouter(prefix="/api")


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
def client_config(settings: SettingsDep) -> ClientConfig:
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
    )
