from service.ingest.read import text_blocks
from service.ingest.structure import outline
from service.text import numbered_level

SPEECH = """在2021年全市卫生健康系统党建工作会议上的讲话
同志们：
今天我们召开全市卫生健康系统党建工作会议，主要任务是总结工作、部署任务。
一、提高政治站位
党的建设关系全局，必须常抓不懈。
（一）压实主体责任。各级党组织书记要履行第一责任人职责，层层传导压力。
一是建立责任清单。明确班子成员的责任。
二要强化考核，把党建考核结果与评优评先挂钩。
第一，抓好学习教育。
二、推动融合发展
党建业务深度融合
各医院坚持围绕中心抓党建，推动党建与业务同频共振。
"""


def test_numbered_heading_levels() -> None:
    assert numbered_level("一、提高政治站位") == 1
    assert numbered_level("（一）压实主体责任。") == 2
    assert numbered_level("(二)存在的问题和不足") == 2
    assert numbered_level("一是建立责任清单。") == 3
    assert numbered_level("二要强化考核") == 3
    assert numbered_level("第一，抓好学习教育。") == 3
    assert numbered_level("2019年，在县委的领导下") is None


def test_title_and_metadata_are_detected() -> None:
    result = outline([b for b in text_blocks(SPEECH) if b.text], fallback_title="file")
    assert result.title == "在2021年全市卫生健康系统党建工作会议上的讲话"
    assert (result.doc_type, result.year, result.level) == ("讲话", 2021, "市")


def test_section_paths_follow_heading_levels() -> None:
    paragraphs = outline([b for b in text_blocks(SPEECH) if b.text], "file").paragraphs
    by_start = {p.text[:6]: p for p in paragraphs}
    assert by_start["一是建立责任"].section_path == ("一、提高政治站位", "（一）压实主体责任", "一是建立责任清单")
    assert by_start["二要强化考核"].section_path[-1] == "二要强化考核…"
    assert by_start["二要强化考核"].is_passage
    assert by_start["各医院坚持围"].section_path == ("二、推动融合发展", "党建业务深度融合")


def test_heading_only_lines_title_and_salutation_are_not_passages() -> None:
    paragraphs = outline([b for b in text_blocks(SPEECH) if b.text], "file").paragraphs
    not_passages = {p.text for p in paragraphs if not p.is_passage}
    assert {"一、提高政治站位", "同志们：", "党建业务深度融合"} <= not_passages
    assert "（一）压实主体责任。各级党组织书记要履行第一责任人职责，层层传导压力。" not in not_passages


def test_speech_without_title_line_gets_title_from_its_meeting() -> None:
    text = "同志们：\n今天我们在这里召开全县卫生健康系统党建工作座谈会，主要任务是部署工作。"
    result = outline([b for b in text_blocks(text) if b.text], "file")
    assert result.title == "在全县卫生健康系统党建工作座谈会上的讲话"
    assert result.level == "县"


def test_report_without_title_gets_title_from_first_sentence() -> None:
    text = "局党组坚持党建引领业务发展。一、基本情况\n全局共有党支部五个。"
    assert outline([b for b in text_blocks(text) if b.text], "file").title == "局党组坚持党建引领业务发展"


def test_report_title_is_the_closing_clause_of_a_long_lead_sentence() -> None:
    text = (
        "按照创建“六好党支部”的工作要求，*县卫健局结合实际，发挥行业特点，采取有力举措，"
        "实行“四个统一”融合业务工作，成效明显。\n一、基本情况\n全局共有党支部五个。"
    )
    result = outline([b for b in text_blocks(text) if b.text], "file")
    assert result.title == "实行“四个统一”融合业务工作"
    assert result.level == "县"
