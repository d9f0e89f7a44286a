"""Load a stage model from YAML, check it, and build the `spec.StageModel` it describes.

A model comes from a built-in template (`ecommerce`, `b2b`, `activity`, shipped in
`lifecycle/templates/`) or from a YAML file the user keeps in git; both go through the
same checks (PRODUCT.md §4). The YAML is composed rather than loaded so that every
value keeps its line: each problem raises `ModelError` with the file, the line, the
stage where there is one, the bad value and the valid ones.

Inline feature calls in stage rules (`count(event = 'signed_up') >= 1`) are hoisted
into features named `_inline_1`, `_inline_2`, … so that the stage engine only ever sees
rules over feature names.
"""

from __future__ import annotations

import difflib
import logging
import re
from importlib import resources
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from clm.errors import ModelError, RuleSyntaxError, known
from clm.lifecycle.rules import analysis
from clm.lifecycle.rules.ast import (
    Between,
    Binary,
    Call,
    Duration,
    In,
    IsNull,
    Literal,
    Name,
    Unary,
)
from clm.lifecycle.rules.ast import Node as RuleNode
from clm.lifecycle.rules.parser import KEYWORDS, parse, to_text
from clm.lifecycle.spec import (
    FEATURE_KINDS,
    GRAINS,
    KINDS_WITH_COLUMN,
    PROGRESSIONS,
    FeatureSpec,
    MetricCall,
    Stage,
    StageModel,
)
from clm.warehouse.schema import EVENTS

log = logging.getLogger("clm.lifecycle")

TOP_KEYS = (
    "name",
    "version",
    "description",
    "grain",
    "progression",
    "features",
    "stages",
    "metrics",
)
STAGE_KEYS = ("name", "when", "churned", "label", "description")
# Event columns a filter may read; JSON payloads are reached with a dot.
EVENT_COLUMNS = tuple(EVENTS.names)
JSON_COLUMNS = ("properties", "context")
INLINE_PREFIX = "_inline_"
# Kinds that look at the first or every matching event ever, so a window makes no sense.
NO_WINDOW_KINDS = frozenset({"first", "days_since_first"})
# Value features (lifecycle.value_features) read fitted CLV parameters, no event filter.
VALUE_KINDS = frozenset({"p_alive"})

_STAGE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_FEATURE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_TAG = "tag:yaml.org,2002:"


def list_templates() -> list[str]:
    """The names of the built-in stage model templates."""
    folder = resources.files("clm.lifecycle").joinpath("templates")
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def load_model(source: str | Path) -> StageModel:
    """Load a built-in template by name (`ecommerce`) or a YAML file by path."""
    if isinstance(source, str) and source in list_templates():
        folder = resources.files("clm.lifecycle").joinpath("templates")
        text = folder.joinpath(f"{source}.yaml").read_text(encoding="utf-8")
        return load_model_text(text, source=source)

    path = Path(source)
    if not path.is_file():
        raise ModelError(
            f"no stage model `{source}`: it is neither a built-in template "
            f"({known(list_templates())}) nor a YAML file; give a template name or "
            "the path of an existing file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the stage model: {exc}", file=str(path)) from exc
    return load_model_text(text, source=str(path))


# libyaml's parser when PyYAML was built with it (the wheels are): the same nodes
# and marks, several times faster than the pure-Python one, which counts where a
# draft is parsed on every keystroke's preview.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_model_text(text: str, source: str = "<text>") -> StageModel:
    """Check a stage model written as YAML text and build it; `source` names it in
    messages (a file path or a template name)."""
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "cannot be read"
        raise ModelError(
            f"YAML syntax error: {problem}; fix the YAML (check indentation, "
            "colons and quotes)",
            file=source,
            line=line,
        ) from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"YAML syntax error: {exc}", file=source) from exc
    return _Loader(source, text).model(root)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Loader:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.features: dict[str, FeatureSpec] = {}
        self.inline: dict[Call, str] = {}

    def error(
        self, message: str, node: Node | None = None, stage: str | None = None
    ) -> ModelError:
        line = _line(node) if node is not None else None
        return ModelError(message, file=self.source, line=line, stage=stage)

    # YAML shapes ---------------------------------------------------------------------

    def mapping(
        self, node: Node, what: str, keys: tuple[str, ...] | None = None
    ) -> list[tuple[str, ScalarNode, Node]]:
        """The (key text, key node, value node) triples of a mapping, checked."""
        if not isinstance(node, MappingNode):
            raise self.error(f"{what} must be a mapping of `key: value` lines", node)
        seen: dict[str, int] = {}
        items: list[tuple[str, ScalarNode, Node]] = []
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                raise self.error(f"{what}: keys must be plain names", key)
            name = str(key.value)
            if name in seen:
                raise self.error(
                    f"{what}: key `{name}` appears twice (first on line "
                    f"{seen[name]}); keep one",
                    key,
                )
            seen[name] = _line(key)
            if keys is not None and name not in keys:
                raise self.error(
                    f"{what}: unknown key `{name}`; valid keys: {', '.join(keys)}",
                    key,
                )
            items.append((name, key, value))
        return items

    def scalar(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode):
            raise self.error(
                f"{what} must be a single value, not a list or mapping", node
            )
        if node.tag == _TAG + "null":
            raise self.error(f"{what} is empty; give it a value", node)
        return str(node.value)

    def boolean(self, node: Node, what: str, stage: str | None = None) -> bool:
        raw = self.scalar(node, what)
        if node.tag != _TAG + "bool":
            raise self.error(
                f"{what} must be true or false, found `{raw}`", node, stage
            )
        return bool(SafeConstructor.bool_values[raw.lower()])

    def choice(self, node: Node, what: str, valid: tuple[str, ...]) -> str:
        value = self.scalar(node, what)
        if value not in valid:
            raise self.error(
                f"{what} `{value}` is not valid; valid values: {', '.join(valid)}",
                node,
            )
        return value

    def rule(self, node: Node, what: str, stage: str | None = None) -> RuleNode:
        """Parse a rule, re-raising a syntax error with the file and line."""
        text = self.scalar(node, what)
        try:
            return parse(text)
        except RuleSyntaxError as exc:
            # Keep the error's class and column; add where the rule is written.
            where = f"{self.source}:{_line(node)}"
            if stage:
                where += f", stage `{stage}`"
            exc.file, exc.line, exc.stage = self.source, _line(node), stage
            exc.args = (f"{where}: {what}: {exc.args[0]}",)
            raise

    # The model ------------------------------------------------------------------------

    def model(self, root: Node | None) -> StageModel:
        if root is None:
            raise self.error(
                "the file is empty; a stage model needs `name` and `stages`"
            )
        items = {
            name: (key, value)
            for name, key, value in self.mapping(root, "the stage model", TOP_KEYS)
        }
        for required in ("name", "stages"):
            if required not in items:
                raise self.error(
                    f"the stage model has no `{required}`; add it (see the built-in "
                    f"templates: {', '.join(list_templates())})",
                    root,
                )

        name = self.scalar(items["name"][1], "`name`")
        if not _MODEL_NAME.match(name):
            raise self.error(
                f"model name `{name}` must be letters, digits, `_`, `-` or `.`",
                items["name"][1],
            )
        version = self.version(items["version"][1]) if "version" in items else 1
        grain = "week"
        if "grain" in items:
            grain = self.choice(items["grain"][1], "grain", GRAINS)
        progression = "dynamic"
        if "progression" in items:
            progression = self.choice(
                items["progression"][1], "progression", PROGRESSIONS
            )
        description = ""
        if "description" in items:
            description = self.scalar(items["description"][1], "`description`")

        if "features" in items:
            self.declare_features(items["features"][1])
        stages = self.stages(items["stages"][1])
        metrics = (
            self.metrics(items["metrics"][1], stages) if "metrics" in items else {}
        )
        log.debug(
            "loaded stage model %s v%d: %d stages, %d features",
            name,
            version,
            len(stages),
            len(self.features),
        )
        return StageModel(
            name=name,
            version=version,
            grain=grain,
            progression=progression,
            features=dict(self.features),
            stages=tuple(stages),
            metrics=metrics,
            description=description,
            source=self.source,
            text=self.text,
        )

    def version(self, node: Node) -> int:
        raw = self.scalar(node, "`version`")
        tagged_int = node.tag == _TAG + "int"
        if not tagged_int or not raw.isdigit() or int(raw) < 1:
            raise self.error(
                f"version `{raw}` must be a whole number of 1 or more; raise it each "
                "time the rules change",
                node,
            )
        return int(raw)

    # Features -------------------------------------------------------------------------

    def declare_features(self, node: Node) -> None:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return  # `features:` with nothing under it
        for name, key, value in self.mapping(node, "`features`"):
            if (
                not _FEATURE_NAME.match(name)
                or name.lower() in KEYWORDS
                or name.startswith(INLINE_PREFIX)
            ):
                raise self.error(
                    f"feature name `{name}` must start with a letter and hold only "
                    "letters, digits and `_`, and not be a keyword of the rule "
                    f"language ({', '.join(sorted(KEYWORDS))})",
                    key,
                )
            tree = self.rule(value, f"feature `{name}`")
            self.features[name] = self.feature(name, tree, value, None)

    def feature(
        self, name: str, tree: RuleNode, node: Node, stage: str | None
    ) -> FeatureSpec:
        """Check one feature call and turn it into a FeatureSpec."""
        label = f"feature `{name}`" if stage is None else f"`{to_text(tree)}`"
        if not isinstance(tree, Call):
            raise self.error(
                f"{label} must be one call such as `count(event = 'order_completed')`; "
                f"kinds: {', '.join(FEATURE_KINDS)}",
                node,
                stage,
            )
        if tree.func not in FEATURE_KINDS:
            raise self.error(
                f"{label}: unknown kind `{tree.func}`"
                f"{_suggest(tree.func, FEATURE_KINDS)}"
                f"; known: {', '.join(FEATURE_KINDS)}",
                node,
                stage,
            )

        if tree.func in VALUE_KINDS and (tree.args or tree.options):
            raise self.error(
                f"{label}: `{tree.func}()` takes no arguments: it reads the orders "
                "and the latest `clm clv fit`; write `p_alive()`",
                node,
                stage,
            )
        args = list(tree.args)
        column: str | None = None
        if tree.func in KINDS_WITH_COLUMN:
            if not args or not isinstance(args[0], Name):
                raise self.error(
                    f"{label}: `{tree.func}` reads a column, so its first argument "
                    f"must be an event column, e.g. `{tree.func}(revenue)`",
                    node,
                    stage,
                )
            column = args.pop(0).name  # type: ignore[attr-defined]
            self.check_column(column, label, node, stage)

        for arg in args:
            self.check_filter(arg, tree.func, label, node, stage)
        predicate: RuleNode | None = None
        for arg in args:
            predicate = arg if predicate is None else Binary("and", predicate, arg)

        within_days: float | None = None
        within_periods: int | None = None
        window = tree.option("within")
        if window is not None:
            if tree.func in NO_WINDOW_KINDS:
                raise self.error(
                    f"{label}: `{tree.func}` looks at the first matching event ever, "
                    "so it takes no `within`; remove it",
                    node,
                    stage,
                )
            if not isinstance(window, Duration) or (
                (window.days or 0) <= 0 and (window.periods or 0) <= 0
            ):
                raise self.error(
                    f"{label}: `within` must be a positive duration such as `30d`, "
                    "`12w`, `6h` or `2 periods`",
                    node,
                    stage,
                )
            within_days, within_periods = window.days, window.periods

        return FeatureSpec(
            name=name,
            kind=tree.func,
            column=column,
            filter=predicate,
            within_days=within_days,
            within_periods=within_periods,
            text=self.scalar(node, label) if stage is None else to_text(tree),
            line=_line(node),
        )

    def check_column(
        self, column: str, label: str, node: Node, stage: str | None
    ) -> None:
        head, dot, rest = column.partition(".")
        if dot and head in JSON_COLUMNS and rest:
            return
        if not dot and column in EVENT_COLUMNS:
            return
        raise self.error(
            f"{label}: unknown event column `{column}`"
            f"{_suggest(column, EVENT_COLUMNS)}; known: {', '.join(EVENT_COLUMNS)}, "
            "or `properties.<key>` / `context.<key>` for JSON fields",
            node,
            stage,
        )

    def check_filter(
        self, arg: RuleNode, kind: str, label: str, node: Node, stage: str | None
    ) -> None:
        if analysis.calls(arg):
            raise self.error(
                f"{label}: a filter cannot contain another call "
                f"(`{to_text(analysis.calls(arg)[0])}`)",
                node,
                stage,
            )
        if _contains(arg, Duration):
            raise self.error(
                f"{label}: a duration may only be given as `within = …`", node, stage
            )
        if not _is_predicate(arg):
            hint = ""
            if isinstance(arg, Name) and kind == "count":
                hint = f"; to count distinct values write count_distinct({arg.name})"
            raise self.error(
                f"{label}: filter `{to_text(arg)}` is not a condition; write a "
                f"comparison such as `event = 'order_completed'`{hint}",
                node,
                stage,
            )
        for column in sorted(analysis.names(arg)):
            self.check_column(column, label, node, stage)

    # Stages ---------------------------------------------------------------------------

    def stages(self, node: Node) -> list[Stage]:
        if not isinstance(node, SequenceNode) or not node.value:
            raise self.error(
                "`stages` must be a non-empty list of `{name: …, when: …}` entries, "
                "first match wins",
                node,
            )
        stages: list[Stage] = []
        lines: dict[str, int] = {}
        for entry in node.value:
            items = {
                key: (key_node, value)
                for key, key_node, value in self.mapping(entry, "a stage", STAGE_KEYS)
            }
            if "name" not in items:
                raise self.error("a stage has no `name`; add one", entry)
            name = self.scalar(items["name"][1], "stage `name`")
            if not _STAGE_NAME.match(name):
                raise self.error(
                    f"stage name `{name}` must be a lowercase identifier (a-z, 0-9, "
                    "`_`, starting with a letter), e.g. `at_risk`",
                    items["name"][1],
                )
            if name in lines:
                raise self.error(
                    f"stage `{name}` is listed twice (first on line {lines[name]}); "
                    "stage names must be unique",
                    items["name"][1],
                    name,
                )
            lines[name] = _line(items["name"][1])
            if "when" not in items:
                raise self.error(
                    'the stage has no `when` rule; add one (`when: "true"` matches '
                    "everyone)",
                    entry,
                    name,
                )
            stages.append(self.stage(name, items))
        return stages

    def stage(self, name: str, items: dict[str, tuple[ScalarNode, Node]]) -> Stage:
        when_node = items["when"][1]
        tree = self.rule(when_node, "`when`", name)
        tree = self.hoist(tree, when_node, name)

        declared = sorted(f for f in self.features if not f.startswith(INLINE_PREFIX))
        for ref in analysis.name_nodes(tree):
            if ref.name not in self.features:
                raise self.error(
                    f"unknown feature `{ref.name}`"
                    f"{_suggest(ref.name, declared)}; known: {known(declared)}",
                    when_node,
                    name,
                )
        if not _is_predicate(tree):
            raise self.error(
                f"the rule `{self.scalar(when_node, '`when`')}` is not a condition; "
                "compare a feature, e.g. `orders_total >= 1`, or write `true`",
                when_node,
                name,
            )
        if _contains(tree, Duration):
            raise self.error(
                "a duration such as `30d` may only be a `within` option of a feature "
                "call; compare with a plain number of days instead",
                when_node,
                name,
            )

        churned = False
        if "churned" in items:
            churned = self.boolean(items["churned"][1], "`churned`", name)
        labels: dict[str, str] = {}
        if "label" in items:
            labels = self.labels(items["label"][1], name)
        if "description" in items:
            self.scalar(items["description"][1], "`description`")
        return Stage(
            name=name,
            when=tree,
            text=self.scalar(when_node, "`when`"),
            line=_line(when_node),
            churned=churned,
            labels=labels,
        )

    def hoist(self, tree: RuleNode, node: Node, stage: str) -> RuleNode:
        """Replace inline feature calls by names of generated features."""
        mapping: dict[Call, RuleNode] = {}
        for call in analysis.calls(tree):
            if call not in self.inline:
                name = f"{INLINE_PREFIX}{len(self.inline) + 1}"
                self.features[name] = self.feature(name, call, node, stage)
                self.inline[call] = name
            mapping[call] = Name(self.inline[call], pos=call.pos)
        return analysis.replace_calls(tree, mapping) if mapping else tree

    def labels(self, node: Node, stage: str) -> dict[str, str]:
        if isinstance(node, ScalarNode):
            return {"en": self.scalar(node, "`label`")}
        labels: dict[str, str] = {}
        for lang, key, value in self.mapping(node, f"stage `{stage}` `label`"):
            if not re.fullmatch(r"[a-z]{2}(?:[-_][A-Za-z]{2})?", lang):
                raise self.error(
                    f"label language `{lang}` must be a language code such as `en` or "
                    "`de`",
                    key,
                    stage,
                )
            labels[lang] = self.scalar(value, f"label `{lang}`")
        return labels

    # Metrics --------------------------------------------------------------------------

    def metrics(
        self, node: Node, stages: list[Stage]
    ) -> dict[str, tuple[MetricCall, ...]]:
        names = [stage.name for stage in stages]
        result: dict[str, tuple[MetricCall, ...]] = {}
        if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return result
        for stage, key, value in self.mapping(node, "`metrics`"):
            if stage not in names:
                raise self.error(
                    f"metrics for unknown stage `{stage}`{_suggest(stage, names)}; "
                    f"stages: {', '.join(names)}",
                    key,
                )
            if not isinstance(value, SequenceNode):
                raise self.error(
                    f"the metrics of stage `{stage}` must be a list, e.g. "
                    "[population, entered]",
                    value,
                    stage,
                )
            result[stage] = tuple(
                self.metric(item, stage, names) for item in value.value
            )
        return result

    def metric(self, node: Node, stage: str, stages: list[str]) -> MetricCall:
        tree = self.rule(node, "metric", stage)
        if isinstance(tree, Name) and "." not in tree.name:
            return MetricCall(tree.name, (), line=_line(node))
        if not isinstance(tree, Call) or tree.options or "." in tree.func:
            raise self.error(
                f"metric `{self.scalar(node, 'metric')}` must be a name such as "
                "`population` or a call such as `conversion_rate_to(retention)`",
                node,
                stage,
            )
        args: list[str] = []
        for arg in tree.args:
            if isinstance(arg, Name):
                args.append(arg.name)
            elif isinstance(arg, Literal) and not isinstance(arg.value, bool | None):
                args.append(str(arg.value))
            else:
                raise self.error(
                    f"metric `{self.scalar(node, 'metric')}`: arguments must be names "
                    "or numbers",
                    node,
                    stage,
                )
        # The one built-in metric that names a stage: check it here, where the
        # model's stages are known, so a typo fails at load and not at report time.
        if tree.func == "conversion_rate_to" and (
            len(args) != 1 or args[0] not in stages
        ):
            raise self.error(
                f"`conversion_rate_to` takes one stage of this model, found "
                f"`{', '.join(args)}`; stages: {', '.join(stages)}",
                node,
                stage,
            )
        return MetricCall(tree.func, tuple(args), line=_line(node))


def _suggest(word: str, candidates: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _contains(node: RuleNode, kind: type) -> bool:
    if isinstance(node, kind):
        return True
    if isinstance(node, Call):
        return False
    return any(_contains(child, kind) for child in analysis.children(node))


def _is_predicate(node: RuleNode) -> bool:
    """Whether a tree is shaped like a condition (its types are checked at compile)."""
    if isinstance(node, Binary):
        if node.op in ("and", "or"):
            return _is_predicate(node.left) and _is_predicate(node.right)
        return node.op in ("=", "!=", "<", "<=", ">", ">=")
    if isinstance(node, Unary):
        return node.op == "not" and _is_predicate(node.operand)
    if isinstance(node, Between | In | IsNull):
        return True
    return isinstance(node, Literal) and isinstance(node.value, bool | None)
