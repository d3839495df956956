"""Remove what is not the document: download-site notices, ads, "related documents" lists, counters.

The rules are general (patterns of such sites), not tuned to particular files. Anonymisation marks
such as `*` and `X` are part of the text and kept.
"""

import re
from dataclasses import replace

from service.records import Block
from service.text import FULL_STOPS

# Words typical of download-site chrome. Body text uses some of them too ("免费义诊", "微信公众号
# 阵地管理"), so a line is chrome only when they are dense: three in any line, two in a short one.
SITE_WORDS = (
    "会员", "VIP", "vip", "下载", "付费", "版权", "侵权", "举报", "订阅", "本站", "上传", "退款",
    "客服", "免费", "仅供", "禁止外传", "权益", "扫码", "转载", "免责", "原创", "文档", "积分", "倒卖",
    "QQ",
)  # fmt: skip
SHORT_LINE = 40

# A line matching any of these is never document text.
SITE_LINE = re.compile(
    r"文档评论\s*[(（]\d+[)）]"
    r"|(?:阅读|浏览|下载|收藏|点赞|评论)(?:量|数|次数)\s*[:：]?\s*\d"
    r"|https?://|www\.\w"
    r"|(?:电话|热线|QQ群?|微信)\s*[:：]\s*[\d\-\s]{5,}"
    r"|^[-•·]?\s*.{2,80}\.(?:docx?|pdf|pptx?|xlsx?|wps|txt)$",
    re.IGNORECASE,
)

# A heading that introduces a list of other documents; the list runs to the next real paragraph.
RELATED_HEADER = re.compile(
    r"^(?:您可能关注的文档|相关(?:文档|推荐|阅读|资料|下载)|猜你喜欢|热门(?:文档|推荐)"
    r"|推荐(?:文档|阅读)|更多(?:精彩|资料|文档)\S*)\s*[:：]?$"
)
SENTENCE_END = re.compile(rf"[{FULL_STOPS}]$")
SPACES = re.compile(r"[ \t\u3000\u00a0]+")


def site_word_count(line: str) -> int:
    return sum(1 for word in SITE_WORDS if word in line)


def is_site_line(line: str) -> bool:
    words = site_word_count(line)
    return bool(SITE_LINE.search(line)) or words >= 3 or (words >= 2 and len(line) <= SHORT_LINE)


def is_body_paragraph(line: str) -> bool:
    """A long line ending a sentence: where a trailing list of links gives way to text again."""
    return len(line) > 60 and bool(SENTENCE_END.search(line))


def normalise(text: str) -> str:
    return SPACES.sub(" ", text).strip()


def drop_related_lists(blocks: list[Block]) -> list[Block]:
    kept: list[Block] = []
    in_list = False
    for block in blocks:
        if RELATED_HEADER.match(block.text):
            in_list = True
            continue
        if in_list and (not block.text or not is_body_paragraph(block.text)):
            continue
        in_list = False
        kept.append(block)
    return kept


def split_groups(blocks: list[Block]) -> list[list[Block]]:
    """Groups of consecutive non-empty blocks, separated by blank lines."""
    groups: list[list[Block]] = [[]]
    for block in blocks:
        if block.text:
            groups[-1].append(block)
        elif groups[-1]:
            groups.append([])
    return [group for group in groups if group]


def is_site_group(group: list[Block]) -> bool:
    """A short group at the document's edge in which site lines are common: a banner or footer.

    Its other lines are slogans ("自建平台、实时分享"), never a sentence of body text.
    """
    plain = [b.text for b in group if site_word_count(b.text) == 0 and not is_site_line(b.text)]
    if len(group) > 12 or any(len(text) > SHORT_LINE or SENTENCE_END.search(text) for text in plain):
        return False
    flagged = sum(1 for block in group if site_word_count(block.text) >= 1 or is_site_line(block.text))
    return flagged * 3 >= len(group) and sum(site_word_count(b.text) for b in group) >= 2


def strip_edge_groups(groups: list[list[Block]]) -> list[list[Block]]:
    while groups and is_site_group(groups[0]):
        groups = groups[1:]
    while groups and is_site_group(groups[-1]):
        groups = groups[:-1]
    return groups


def clean_blocks(blocks: list[Block]) -> list[Block]:
    """Normalise spacing and drop boilerplate; returns the non-empty blocks of the document."""
    normalised = [replace(block, text=normalise(block.text)) for block in blocks]
    # Banners are judged as whole groups first: some of their lines look innocent on their own.
    groups = strip_edge_groups(split_groups(drop_related_lists(normalised)))
    return [block for group in groups for block in group if not is_site_line(block.text)]
