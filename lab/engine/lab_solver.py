"""More of the lab engine's scripted "model" (NOT SGLang): test-only, stdlib only.

What the M3-depth probes (sgl_deploy/probe_m3.py) need from the lab engine:

* ``solve``: really computes the answer of a grade-school word problem or arithmetic
  expression from its text (never a lookup of known answers), so the accuracy probe means
  something against the lab;
* ``tool_call_arguments``: one call per named location when the question names several
  (parallel calls), and arrays / nested objects filled from the question by their schema;
* ``format_tool_calls``: several ``<invoke>`` blocks in one tool-call block, in the family's
  wire format (M3 nests arrays as ``<item>`` and objects as child tags, all namespaced);
* ``tool_results``: every tool message answering the last assistant turn (parallel results).
"""

from __future__ import annotations

import ast
import json
import operator
import re

M3_NS = "]<]minimax[>["
ANSWER_MARKER = "Answer: <integer>"

# --------------------------------------------------------------------------- arithmetic

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv}


def eval_expression(text: str) -> int | None:
    """Value of an integer expression (+ - * / and parentheses), or None."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("unsupported expression")

    try:
        value = ev(tree)
    except (ValueError, ZeroDivisionError):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


_EXPR_RE = re.compile(r"what is\s+([-\d\s+*/()x×]+?)\s*\?", re.IGNORECASE)
_EACH_RE = re.compile(r"(\d+)\s+\w+\s+with\s+(\d+)\s+\w+\s+in each", re.IGNORECASE)
_SHARE_RE = re.compile(r"shares\s+(\d+)\s+\w+\s+equally among\s+(\d+)", re.IGNORECASE)
_CHANGE_RE = re.compile(
    r"buys\s+(\d+)\s+\w+\s+at\s+(\d+)\s+dollars each and pays with an?\s+(\d+)-dollar bill",
    re.IGNORECASE)
# state changes of a running total, in text order
_HAS_RE = re.compile(r"\b(?:has|had|starts with)\s+(\d+)", re.IGNORECASE)
_MORE_RE = re.compile(r"\b(?:buys|gets|finds|receives|adds)\s+(\d+)\s+more\b", re.IGNORECASE)
_LESS_RE = re.compile(r"\b(?:gives away|loses|eats|sells|uses)\s+(\d+)\b", re.IGNORECASE)


def solve(question: str) -> int | None:
    """The integer answer of a word problem or expression, computed from its text; None when
    the text is not a problem this solver reads."""
    text = question.split("\n")[0]
    match = _CHANGE_RE.search(text)
    if match:
        count, price, bill = map(int, match.groups())
        return bill - count * price
    match = _EACH_RE.search(text)
    if match:
        return int(match.group(1)) * int(match.group(2))
    match = _SHARE_RE.search(text)
    if match:
        total, people = int(match.group(1)), int(match.group(2))
        return total // people if people and total % people == 0 else None
    start = _HAS_RE.search(text)
    if start:
        total = int(start.group(1))
        events = [(m.start(), int(m.group(1))) for m in _MORE_RE.finditer(text)]
        events += [(m.start(), -int(m.group(1))) for m in _LESS_RE.finditer(text)]
        for _, delta in sorted(events):
            total += delta
        return total
    match = _EXPR_RE.search(text)
    if match:
        return eval_expression(match.group(1).replace("×", "*").replace("x", "*"))
    return None


def is_problem(question: str) -> bool:
    """A question that asks for an ``Answer: <integer>`` line (the accuracy set's form)."""
    return ANSWER_MARKER.lower() in question.lower()


def problem_reply(question: str) -> str | None:
    value = solve(question)
    if value is None:
        return None
    return f"Working it out from the numbers given.\nAnswer: {value}"


# --------------------------------------------------------------------------- tool arguments

_TITLE_RE = re.compile(r"\b(?:titled|called|named)\s+(.+?)(?=\s+with\b|\s+on\b|\s+at\b|[.?!]|$)")
_NAMES_RE = re.compile(r"\bwith\s+([A-Z]\w*(?:\s*,\s*[A-Z]\w*)*(?:\s*,?\s+and\s+[A-Z]\w*)?)")
_AT_HOUR_RE = re.compile(r"\bat\s+(\d{1,2})\b")
_NUMBER_RE = re.compile(r"-?\d+")


def locations(question: str) -> list[str]:
    """Every place the question names (lab_intent owns the place vocabulary and rules)."""
    import lab_intent  # sibling module (lab/engine is on sys.path wherever this one is imported)

    return lab_intent.extract_locations(question)


def _location_param(function: dict) -> str | None:
    props = (function.get("parameters") or {}).get("properties") or {}
    for name in ("location", "city", "place"):
        if name in props:
            return name
    return None


def _has_containers(function: dict) -> bool:
    props = (function.get("parameters") or {}).get("properties") or {}
    return any((p or {}).get("type") in ("array", "object") for p in props.values())


def fill_value(name: str, schema: dict, question: str):
    """A value for property ``name`` of ``schema`` taken from the question text."""
    schema = schema or {}
    kind = schema.get("type", "string")
    low = question.lower()
    if "enum" in schema:
        mentioned = [o for o in schema["enum"] if str(o).lower() in low]
        return mentioned[0] if mentioned else schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: fill_value(k, v, question) for k, v in props.items()}
    if kind == "array":
        match = _NAMES_RE.search(question)
        if not match:
            return []
        names = re.split(r"\s*,\s*|\s+and\s+", match.group(1))
        return [n.strip() for n in names if n.strip() and n.strip().lower() != "and"]
    if kind in ("integer", "number"):
        hour = _AT_HOUR_RE.search(question) if "hour" in name else None
        if hour:
            return int(hour.group(1))
        number = _NUMBER_RE.search(question)
        return int(number.group()) if number else 1
    if kind == "boolean":
        return True
    if name in ("title", "name", "subject"):
        match = _TITLE_RE.search(question)
        if match:
            return match.group(1).strip()
    return question.strip()[:80]


def tool_call_arguments(function: dict, question: str, simple_arguments) -> list[dict]:
    """The argument dicts of the calls the lab model makes for ``function``.

    ``simple_arguments(function, question)`` is lab_script's flat filler (used as is for flat
    schemas); a question naming several locations gets one call per location; schemas with
    arrays or objects are filled by ``fill_value``."""
    if _has_containers(function):
        props = (function.get("parameters") or {}).get("properties") or {}
        return [{k: fill_value(k, v, question) for k, v in props.items()}]
    args = simple_arguments(function, question)
    param = _location_param(function)
    places = locations(question) if param else []
    if param and len(places) > 1:
        return [{**args, param: place} for place in places]
    return [args]


# --------------------------------------------------------------------------- wire format


def m3_value(value) -> str:
    """A parameter value in M3's wire format: arrays as ``<item>``, objects as child tags."""
    if isinstance(value, list):
        return "".join(f"{M3_NS}<item>{m3_value(v)}{M3_NS}</item>" for v in value)
    if isinstance(value, dict):
        return "".join(f"{M3_NS}<{k}>{m3_value(v)}{M3_NS}</{k}>" for k, v in value.items())
    return value if isinstance(value, str) else json.dumps(value)


def format_tool_calls(family_is_m3: bool, name: str, calls: list[dict]) -> str:
    """One tool-call block holding one ``<invoke>`` per argument dict."""
    if family_is_m3:
        lines = [f"{M3_NS}<tool_call>"]
        for args in calls:
            lines.append(f'{M3_NS}<invoke name="{name}">')
            lines += [f"{M3_NS}<{k}>{m3_value(v)}{M3_NS}</{k}>" for k, v in args.items()]
            lines.append(f"{M3_NS}</invoke>")
        lines.append(f"{M3_NS}</tool_call>")
        return "\n".join(lines)
    lines = ["<minimax:tool_call>"]
    for args in calls:
        lines.append(f'<invoke name="{name}">')
        lines += [f'<parameter name="{k}">{v if isinstance(v, str) else json.dumps(v)}</parameter>'
                  for k, v in args.items()]
        lines.append("</invoke>")
    lines.append("</minimax:tool_call>")
    return "\n".join(lines)


def tool_results(messages: list[dict]) -> list[dict]:
    """The tool messages at the end of ``messages`` (all results of the last tool turn)."""
    out = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        out.insert(0, message)
    return out
