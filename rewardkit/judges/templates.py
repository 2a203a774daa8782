"""Judge prompt templates: what the judge is asked, and which verdict strings it may answer.

Three kinds (MISSION.md, "Generative reward models"):

* ``pairwise``: "which response is better" → ``A`` or ``B`` (MT-Bench ``pair-v2`` style, ``[[A]]``);
* ``pointwise``: a 1–10 rating of one response (MT-Bench ``single-v1`` style, ``[[7]]``);
* ``verifier``: "is this response good and correct?" → ``Yes`` or ``No``.

A template is a user message with fields ``{prompt}`` (the conversation so far, as text),
``{response}`` (pointwise, verifier) or ``{response_a}`` / ``{response_b}`` (pairwise); an optional
system prompt; an ``answer_prefix`` that starts the judge's reply when verdict probabilities are
read (e.g. ``"[["``, so the next token is the verdict); the verdict labels, each with the strings
that spell it; and a ``verdict_suffix`` that follows the verdict (``"]]"``), which makes verdicts
such as ``1`` and ``10`` distinguishable token sequences. Only the five field names are replaced;
other braces in a template (JSON examples, code) stay as they are.

Users replace a template with ``--judge-template`` (a file, or the text itself) and
``--judge-system-prompt``; a ``.yaml``/``.yml``/``.json`` file may set every field, any other file
or string is the user message. See docs/judges.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedTokenizerBase

from rewardkit.data.record import Message
from rewardkit.errors import UserError

KINDS = ("pairwise", "pointwise", "verifier")
FIELDS = ("prompt", "response", "response_a", "response_b")
_FIELD_RE = re.compile(r"\{(prompt|response|response_a|response_b)\}")
_REQUIRED = {"pairwise": ("response_a", "response_b"), "pointwise": ("response",), "verifier": ("response",)}
_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's instructions "
    "and answers the user's question better. Consider helpfulness, relevance, accuracy, depth and harmlessness. "
    "Avoid any position biases and ensure that the order in which the responses were presented does not "
    "influence your decision. Do not allow the length of the responses to influence your evaluation. "
    'Output your final verdict by strictly following this format: "[[A]]" if assistant A is better, '
    '"[[B]]" if assistant B is better.'
)
PAIRWISE_USER = (
    "[User Question]\n{prompt}\n\n"
    "[The Start of Assistant A's Answer]\n{response_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{response_b}\n[The End of Assistant B's Answer]"
)
POINTWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question displayed below. Consider helpfulness, relevance, accuracy, depth and harmlessness. "
    'Rate the response on a scale of 1 to 10 by strictly following this format: "[[rating]]", '
    'for example: "Rating: [[5]]".'
)
POINTWISE_USER = (
    "[User Question]\n{prompt}\n\n"
    "[The Start of Assistant's Answer]\n{response}\n[The End of Assistant's Answer]"
)
VERIFIER_SYSTEM = (
    "You are a careful grader. Decide whether the assistant's response to the user is good: helpful, "
    "correct and harmless. Answer with a single word, Yes or No."
)
VERIFIER_USER = (
    "[User Question]\n{prompt}\n\n"
    "[The Start of Assistant's Answer]\n{response}\n[The End of Assistant's Answer]\n\n"
    "Is this response good and correct? Answer Yes or No."
)


@dataclass
class JudgeTemplate:
    """Everything that defines what a judge is asked and how its verdict is read.

    Attributes:
        kind: ``pairwise``, ``pointwise`` or ``verifier``.
        user: the user message, with the kind's fields.
        system: system prompt, or None for none (the model's chat template may then add its own default,
            as SmolLM2's does).
        answer_prefix: text that starts the judge's reply before its verdict is read (probability mode).
        verdicts: label → the strings that spell it (their probabilities are summed).
        verdict_suffix: text that follows a verdict (closes the format, makes ``1`` vs ``10`` distinct).
        source: where the template came from, for messages.
    """

    kind: str
    user: str
    system: str | None = None
    answer_prefix: str = ""
    verdicts: dict[str, list[str]] = field(default_factory=dict)
    verdict_suffix: str = ""
    source: str = "default"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"{self.source}: judge kind must be one of {KINDS}, got {self.kind!r}")
        if not self.verdicts:
            self.verdicts = default_verdicts(self.kind)
        self.verdicts = {str(k): [str(s) for s in (v if isinstance(v, list) else [v])] for k, v in self.verdicts.items()}
        missing = [f for f in _REQUIRED[self.kind] if "{" + f + "}" not in self.user]
        if missing:
            raise UserError(f"{self.source}: a {self.kind} template must contain "
                             f"{', '.join('{' + f + '}' for f in missing)}; fields available: "
                             f"{', '.join('{' + f + '}' for f in ('prompt', *_REQUIRED[self.kind]))}")
        wrong = [f for f in set(_FIELD_RE.findall(self.user)) if f != "prompt" and f not in _REQUIRED[self.kind]]
        if wrong:
            raise UserError(f"{self.source}: field(s) {sorted(wrong)} cannot be used in a {self.kind} template")
        if self.kind == "pairwise" and set(self.verdicts) != {"A", "B"}:
            raise UserError(f"{self.source}: pairwise verdict labels must be 'A' and 'B', got {sorted(self.verdicts)}")
        if self.kind == "verifier" and set(self.verdicts) != {"Yes", "No"}:
            raise UserError(f"{self.source}: verifier verdict labels must be 'Yes' and 'No', got {sorted(self.verdicts)}")
        if self.kind == "pointwise":
            try:
                [float(k) for k in self.verdicts]
            except ValueError:
                raise UserError(f"{self.source}: pointwise verdict labels must be numbers, got {sorted(self.verdicts)}") from None

    def fill(self, **values: str) -> str:
        """The user message with its fields replaced in one pass (values are never re-scanned)."""
        return _FIELD_RE.sub(lambda m: values[m.group(1)], self.user)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_verdicts(kind: str) -> dict[str, list[str]]:
    if kind == "pairwise":
        return {"A": ["A"], "B": ["B"]}
    if kind == "verifier":
        return {"Yes": ["Yes"], "No": ["No"]}
    return {str(k): [str(k)] for k in range(1, 11)}


def default_template(kind: str) -> JudgeTemplate:
    if kind == "pairwise":
        return JudgeTemplate("pairwise", PAIRWISE_USER, PAIRWISE_SYSTEM, answer_prefix="[[", verdict_suffix="]]")
    if kind == "pointwise":
        return JudgeTemplate("pointwise", POINTWISE_USER, POINTWISE_SYSTEM, answer_prefix="Rating: [[",
                             verdict_suffix="]]")
    if kind == "verifier":
        return JudgeTemplate("verifier", VERIFIER_USER, VERIFIER_SYSTEM)
    raise UserError(f"judge kind must be one of {KINDS}, got {kind!r}")


_UNSET: Any = object()


def load_template(kind: str, template: str | None = None, system_prompt: str | None = _UNSET) -> JudgeTemplate:
    """The default template of ``kind``, or the user's, given as a file path or as the text itself.

    ``system_prompt``: a file path or text replaces the system prompt; ``""`` removes it; left unset,
    the template's own (or the default's) stays.
    """
    base = default_template(kind)
    if template:
        path = Path(template).expanduser()
        is_file = len(template) < 4096 and "\n" not in template and path.is_file()
        if not is_file and "{" not in template and re.search(r"\.(ya?ml|json|txt|md|jinja)$", template):
            raise UserError(f"judge template file not found: {template}")
        if is_file and path.suffix in (".yaml", ".yml", ".json"):
            text = path.read_text()
            try:
                spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (json.JSONDecodeError, yaml.YAMLError) as e:
                raise UserError(f"{template}: not valid {path.suffix[1:].upper()}: {e}") from None
            if not isinstance(spec, dict) or "user" not in spec:
                raise UserError(f"{template}: expected a mapping with at least 'user' "
                                 "(and optionally system, answer_prefix, verdicts, verdict_suffix)")
            known = {f.name for f in dataclasses.fields(JudgeTemplate)} - {"kind", "source"}
            unknown = sorted(set(spec) - known - {"kind"})
            if unknown:
                raise UserError(f"{template}: unknown template field(s) {unknown}; known: {sorted(known)}")
            if spec.get("kind", kind) != kind:
                raise UserError(f"{template}: template is for a {spec['kind']} judge, but the judge is {kind}")
            values = {**{k: getattr(base, k) for k in ("system", "answer_prefix", "verdict_suffix")},
                      **{k: v for k, v in spec.items() if k != "kind"}}
            if "verdicts" not in spec:
                values["verdicts"] = base.verdicts
            base = JudgeTemplate(kind=kind, source=template, **values)
        else:
            user = path.read_text() if is_file else template
            base = dataclasses.replace(base, user=user, source=template if is_file else "inline template")
    if system_prompt is not _UNSET and system_prompt is not None:
        path = Path(system_prompt).expanduser()
        if system_prompt and len(system_prompt) < 4096 and "\n" not in system_prompt and path.is_file():
            system_prompt = path.read_text()
        base = dataclasses.replace(base, system=system_prompt or None)
    return base


def conversation_text(prompt: list[Message]) -> str:
    """The conversation so far as the judge sees it: one user turn is its text; longer ones are labelled."""
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    return "\n\n".join(f"{_ROLE_NAMES.get(m['role'], m['role'])}: {m['content']}" for m in prompt)


def response_text(completion: list[Message]) -> str:
    """A completion as text: one assistant turn is its text; several turns are labelled."""
    if len(completion) == 1:
        return completion[0]["content"]
    return "\n\n".join(f"{_ROLE_NAMES.get(m['role'], m['role'])}: {m['content']}" for m in completion)


def render_chat(tokenizer: PreTrainedTokenizerBase, template: JudgeTemplate, user_text: str,
                with_answer_prefix: bool = True) -> str:
    """The full judge input text: chat template with a generation prompt, then the answer prefix.

    Without a chat template the text is ``System: …\\n\\nUser: …\\n\\nAssistant:`` (base models).
    A chat template that refuses a system role gets the system prompt folded into the user turn.
    """
    prefix = template.answer_prefix if with_answer_prefix else ""
    if not getattr(tokenizer, "chat_template", None):
        head = f"System: {template.system}\n\n" if template.system else ""
        return f"{head}User: {user_text}\n\nAssistant: {prefix}"
    messages = [{"role": "user", "content": user_text}]
    if template.system:
        messages.insert(0, {"role": "system", "content": template.system})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - jinja's TemplateError ("System role not supported") and friends
        if not template.system:
            raise
        folded = [{"role": "user", "content": f"{template.system}\n\n{user_text}"}]
        text = tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=True)
    return text + prefix
