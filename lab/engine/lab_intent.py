"""Tool choice from a question's intent, for the lab engine's scripted model (NOT SGLang): test-only.

A competent model asked "北京今天天气怎么样？" with a tool ``get_weather`` ("Get the current
weather in a given location") calls it, although the question never says "weather" in English.
This module does that with rules, small and deterministic:

* the question and every tool (its name *and* description) are mapped to *topics* through one
  vocabulary table (``VOCABULARY``: English and Chinese terms per topic);
* the tool sharing the most topics with the question is chosen; a tool whose name words appear
  in the question literally still counts (a tool outside the table, e.g. ``lookup_inventory``);
* a request for a task the rules cannot compute but know (``TASK_ANSWERS``: a binary search
  tree) gets that answer, in the question's language;
* an image description names the colour in the question's language (Chinese: both scripts);
* arguments come from the question: a place (the capitalised words after "in/for/at", else a
  known name in either script, else the Chinese words before 天气/气温), and enum values named in either script.

Standard library only; everything the rules need to know about words is in ``VOCABULARY``.
"""

from __future__ import annotations

import re

# The one vocabulary table: (kind, canonical value, terms in questions/names/descriptions).
# kind "topic": what a question is about and what a tool does; "enum": a value a question can
# ask for (matched against a tool's enum options by canonical value); "place": a place name
# (the question's own spelling is kept as the argument); "colour": how an image's colour is
# named in each language. Terms are lower case; a term of ASCII
# letters matches at a word start, any other term as a substring.
VOCABULARY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("topic", "weather", ("weather", "forecast", "temperature", "rain", "snow", "sunny", "climate",
                          "天气", "气温", "温度", "下雨", "下雪", "预报", "晴", "冷不冷", "热不热")),
    ("topic", "time", ("time", "clock", "hour", "date", "timezone", "时间", "几点", "日期", "时区")),
    ("topic", "search", ("search", "look up", "lookup", "find", "搜索", "查找", "检索", "查一下")),
    ("topic", "stock", ("stock", "share price", "ticker", "shares", "股票", "股价", "行情")),
    ("topic", "email", ("email", "e-mail", "mail", "邮件", "邮箱", "发信")),
    ("topic", "translate", ("translate", "translation", "翻译")),
    ("topic", "calculate", ("calculate", "calculator", "compute", "arithmetic", "math",
                            "计算", "算一下", "等于多少")),
    ("topic", "currency", ("currency", "exchange rate", "convert money", "汇率", "换算", "货币")),
    ("topic", "news", ("news", "headline", "新闻", "头条")),
    ("topic", "map", ("route", "directions", "distance", "navigate", "路线", "导航", "距离")),
    ("topic", "bst", ("binary search tree", "bst", "二叉搜索树", "二叉查找树", "二叉排序树")),
    ("enum", "celsius", ("celsius", "centigrade", "°c", "摄氏")),
    ("enum", "fahrenheit", ("fahrenheit", "°f", "华氏")),
    ("colour", "red", ("red", "红")),
    ("colour", "green", ("green", "绿")),
    ("colour", "blue", ("blue", "蓝")),
    ("colour", "yellow", ("yellow", "黄")),
    ("colour", "white", ("white", "白")),
    ("colour", "black", ("black", "黑")),
    ("colour", "orange", ("orange", "橙")),
    ("colour", "purple", ("purple", "紫")),
    ("colour", "cyan", ("cyan", "青")),
    ("colour", "magenta", ("magenta", "品红")),
    ("colour", "gray", ("gray", "grey", "灰")),
    ("place", "Beijing", ("beijing", "peking", "北京")),
    ("place", "Shanghai", ("shanghai", "上海")),
    ("place", "Guangzhou", ("guangzhou", "广州")),
    ("place", "Shenzhen", ("shenzhen", "深圳")),
    ("place", "Hangzhou", ("hangzhou", "杭州")),
    ("place", "Hong Kong", ("hong kong", "香港")),
    ("place", "Tokyo", ("tokyo", "东京")),
    ("place", "Paris", ("paris", "巴黎")),
    ("place", "London", ("london", "伦敦")),
    ("place", "New York", ("new york", "纽约")),
    ("place", "San Francisco", ("san francisco", "旧金山")),
)

# Words of a tool name that say nothing about what it does (get_weather -> weather).
_NAME_STOPWORDS = {"get", "set", "fetch", "do", "run", "call", "the", "a", "an", "current", "info",
                   "query", "tool", "api", "by", "for", "of", "to"}

_LOCATION_RE = re.compile(r"\b(?:in|for|at)\s+([A-Z][\w.'-]*(?:(?:\s+|,\s*)[A-Z][\w.'-]*)*)")
_ZH_PLACE_RE = re.compile(
    r"([\u4e00-\u9fff]{2,8}?)(?:今天|明天|后天|现在|目前|本周|这周|的)*(?:天气|气温|温度)")
_ZH_FILLER = ("请问", "请", "问一下", "帮我查", "帮我", "查一下", "查询", "告诉我", "我想知道", "想知道", "一下",
              "今天", "明天", "后天", "现在", "目前")


def _find_term(text: str, term: str) -> int:
    """Where ``term`` starts in lower-case ``text`` (-1: absent)."""
    if term.isascii() and term[:1].isalpha():
        match = re.search(rf"(?<![a-z]){re.escape(term)}", text)
        return match.start() if match else -1
    return text.find(term)


def _has_term(text: str, term: str) -> bool:
    return _find_term(text, term) >= 0


def terms_in(text: str, kind: str) -> list[str]:
    """Canonical values of ``kind`` whose terms occur in ``text`` (table order)."""
    low = (text or "").lower()
    return [value for k, value, terms in VOCABULARY if k == kind and any(_has_term(low, t) for t in terms)]


def _name_words(name: str) -> list[str]:
    words = [w for w in re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", str(name or "")) if w]
    words = [w.lower() for w in words]
    return [w for w in words if w not in _NAME_STOPWORDS] or words


def tool_score(question: str, function: dict) -> int:
    """How well ``function`` fits the question: shared topics (name and description against the
    question), plus one when a word of its name appears in the question itself."""
    name = str(function.get("name") or "")
    about = " ".join([name.replace("_", " "), str(function.get("description") or "")])
    shared = set(terms_in(question, "topic")) & set(terms_in(about, "topic"))
    low = (question or "").lower()
    literal = any(len(w) > 2 and _has_term(low, w) for w in _name_words(name))
    return len(shared) + (1 if literal else 0)


def choose_tool(question: str, tools: list[dict] | None) -> dict | None:
    """The ``function`` of the best-fitting tool, or None when no tool fits the question."""
    best, best_score = None, 0
    for tool in tools or []:
        function = (tool or {}).get("function") or {}
        score = tool_score(question, function)
        if score > best_score:
            best, best_score = function, score
    return best


def extract_locations(question: str) -> list[str]:
    """Every place the question names (``in Paris and in Tokyo`` -> [Paris, Tokyo]; enum words such
    as "in Celsius" are not places); one place (or none) when only the table or Chinese rules find it."""
    found = [m.group(1).rstrip(" ,.") for m in _LOCATION_RE.finditer(question or "")]
    found = [c for c in found if not terms_in(c, "enum")]
    if found:
        return found
    one = extract_location(question)
    return [] if one == "Unknown" else [one]


def extract_location(question: str) -> str:
    """The place the question names, in the question's own spelling ("Unknown" if none)."""
    text = question or ""
    for match in _LOCATION_RE.finditer(text):  # "in San Francisco, CA" (but not "in Celsius")
        candidate = match.group(1).rstrip(" ,.")
        if not terms_in(candidate, "enum"):
            return candidate
    low = text.lower()
    for kind, _value, terms in VOCABULARY:
        if kind != "place":
            continue
        for term in terms:
            start = _find_term(low, term)
            if start >= 0:
                return text[start : start + len(term)]
    match = _ZH_PLACE_RE.search(text)
    if match:
        place = match.group(1)
        for filler in _ZH_FILLER:
            place = place.replace(filler, "")
        if place:
            return place
    return "Unknown"


def mentioned_options(options: list[str], question: str) -> list[str]:
    """The enum ``options`` the question asks for, by name or through the table (摄氏 -> celsius)."""
    low = (question or "").lower()
    asked = set(terms_in(question, "enum"))
    return [o for o in options if str(o).lower() in low or str(o).lower() in asked]


def is_chinese(text: str) -> bool:
    return re.search(r"[\u4e00-\u9fff]", text or "") is not None


def describe_colour(colour: str, question: str) -> str:
    """An image's description: the colour word (English), or a Chinese sentence naming the colour
    in both scripts when the question is Chinese."""
    if not is_chinese(question):
        return colour.capitalize()
    names = next((terms for kind, value, terms in VOCABULARY if kind == "colour" and value == colour), ())
    chinese = next((t for t in names if not t.isascii()), colour)
    return f"这张图片是一整块纯{chinese}色（{colour}），没有其他内容。"


_BST_CODE = """```python
class Node:
    def __init__(self, key):
        self.key, self.left, self.right = key, None, None


class BST:
    def __init__(self):
        self.root = None

    def insert(self, key):
        self.root = self._insert(self.root, key)

    def _insert(self, node, key):
        if node is None:
            return Node(key)
        if key < node.key:
            node.left = self._insert(node.left, key)
        elif key > node.key:
            node.right = self._insert(node.right, key)
        return node

    def search(self, key):
        node = self.root
        while node is not None and node.key != key:
            node = node.left if key < node.key else node.right
        return node is not None

    def delete(self, key):
        self.root = self._delete(self.root, key)

    def _delete(self, node, key):
        if node is None:
            return None
        if key < node.key:
            node.left = self._delete(node.left, key)
        elif key > node.key:
            node.right = self._delete(node.right, key)
        elif node.left is None or node.right is None:
            return node.left or node.right
        else:
            successor = node.right
            while successor.left is not None:
                successor = successor.left
            node.key = successor.key
            node.right = self._delete(node.right, successor.key)
        return node
```"""

# Answers to tasks the rules know but cannot compute, by topic: (English, Chinese).
TASK_ANSWERS = {
    "bst": (f"A binary search tree with insert, search and delete:\n\n{_BST_CODE}",
            f"下面是一个二叉搜索树的 Python 实现，包含插入、查找和删除操作：\n\n{_BST_CODE}"),
}


def task_answer(question: str) -> str | None:
    """The known answer to the question's task, in its language (None: no known task)."""
    for topic in terms_in(question, "topic"):
        if topic in TASK_ANSWERS:
            english, chinese = TASK_ANSWERS[topic]
            return chinese if is_chinese(question) else english
    return None
