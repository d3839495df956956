from service.ingest.clean import clean_blocks
from service.ingest.read import text_blocks


def cleaned(text: str) -> list[str]:
    return [block.text for block in clean_blocks(text_blocks(text))]


BODY = (
    "一、加强党的政治建设\n"
    "各级党组织要认真落实“三会一课”制度，组织党员开展免费义诊活动，把党的温暖送到群众身边。\n"
    "加强医院官网、微信公众号等阵地管理，确保意识形态领域安全。\n"
    "县X医院党委书记*同志作交流发言。"
)


def test_banner_block_of_another_site_is_removed() -> None:
    text = "本文档由用户上传 仅供参考\n扫码关注 领取更多\n海量范文 每日更新\n\n\n" + BODY
    assert cleaned(text) == BODY.split("\n")


def test_disclaimer_lines_counters_and_links_are_removed() -> None:
    text = (
        "1. 本站文档均由用户上传，版权归原作者所有，如有侵权请联系客服删除。\n"
        "阅读次数：1024\n"
        "原文地址：https://example.com/doc/123.html\n" + BODY + "\n下载积分：10 会员免费下载\n文档评论（3）"
    )
    assert cleaned(text) == BODY.split("\n")


def test_related_documents_list_is_removed_up_to_the_end() -> None:
    text = BODY + "\n相关推荐：\n2023年党支部工作计划.docx\n医院党建工作总结范文\n某某局年度述职报告.pdf\n"
    assert cleaned(text) == BODY.split("\n")


def test_body_lines_with_a_common_site_word_are_kept() -> None:
    lines = cleaned(BODY)
    assert any("免费义诊" in line for line in lines)
    assert any("微信公众号" in line for line in lines)


def test_anonymisation_marks_are_kept() -> None:
    assert cleaned(BODY)[-1] == "县X医院党委书记*同志作交流发言。"


def test_spaces_are_normalised() -> None:
    assert cleaned("\u3000\u3000今天  我们召开会议。 ") == ["今天 我们召开会议。"]
