"""Typed, validated config values: every override is converted to its field's type and range-checked.

:func:`convert` turns a value from JSON, the command line's text or Python into a field's annotated type, checks
it against the key's range (:data:`RANGES`, else a default rule for sizes, counts and intervals) or its choices
(:data:`CHOICES`), and raises :class:`ConfigError` naming the key, what it expects and an example. It knows
nothing of the config's layout: :func:`dlib.core.config.convert_value` looks the type up by key.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from dlib.core.constants import NORMALIZATIONS
from dlib.core.datasets import DATASETS


class ConfigError(ValueError, TypeError):
    """An invalid config value; the message is one line naming the key, what it expects and an example."""


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``low``/``high`` bounds (``None``: unbounded), open or closed; applied to each tuple item."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


POSITIVE = Range(0, low_open=True)
AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
UNIT = Range(0, 1)

# Ranges by dotted key; int fields not listed follow default_range (sizes, counts, iterations: >= 1).
RANGES: dict[str, Range] = {
    "seed": NON_NEGATIVE,
    "data.eval_pad": NON_NEGATIVE,  # 0: no padding
    "data.scale_range": POSITIVE,
    "data.mean": UNIT,
    "data.std": POSITIVE,
    "data.proxy_image_size": Range(16),  # the proxy generator's minimum
    "data.proxy_seed": NON_NEGATIVE,
    "model.width": POSITIVE,
    "model.msc_scales": POSITIVE,
    # Upper bounds refuse the absurd: 10**7 iterations is 500 times the paper's 20,000; an lr above 10 overflows.
    "train.iterations": Range(1, 10**7),
    "train.base_lr": Range(0, 10, low_open=True),
    "train.momentum": Range(0, 1, high_open=True),
    "train.weight_decay": NON_NEGATIVE,
    "train.poly_power": NON_NEGATIVE,
    "train.warmup": NON_NEGATIVE,
    "train.base_lr_vgg": Range(0, 10, low_open=True),
    "train.gamma": Range(0, 1, low_open=True),
    "train.head_lr_mult": NON_NEGATIVE,
    "train.head_bias_lr_mult": NON_NEGATIVE,
    "train.backbone_bias_lr_mult": NON_NEGATIVE,
    "crf.w1": NON_NEGATIVE,
    "crf.w2": NON_NEGATIVE,
    "crf.theta_alpha": POSITIVE,
    "crf.theta_beta": POSITIVE,
    "crf.theta_gamma": POSITIVE,
    "ablation.seeds": NON_NEGATIVE,
    "ablation.crf_holdout": NON_NEGATIVE,
    "ablation.width": POSITIVE,
}

# Text fields with a fixed set of values.
CHOICES: dict[str, Collection[str]] = {
    "data.dataset": DATASETS.keys(),  # the registry itself (dlib.core.datasets): a data set added there is accepted
    "data.input_convention": ("imagenet", "caffe"),
    "train.msc_loss": ("sum", "mean"),
    "train.lr_policy": ("poly", "step"),
    "ablation.crf_tune_on": ("val100", "heldout_train"),
    "crf.normalization": NORMALIZATIONS,
    "eval.precision": ("auto", "float32", "bf16"),
}


def default_range(dotted: str, tp: Any) -> Range | None:
    """Ints named *workers* are >= 0 (0: all cores / the main process); other counts, sizes,
    iterations and intervals (*iterations*, *size*, *every*, *images*, *holdout*, *classes*, proxy counts) are >= 1."""
    name = dotted.rsplit(".", 1)[-1]
    if _base_type(tp) is not int:
        return None
    if "workers" in name:
        return NON_NEGATIVE
    if any(w in name for w in ("iterations", "size", "every", "images", "classes", "count")) or \
            name.startswith("proxy_") and name != "proxy_seed":
        return AT_LEAST_1
    return None


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        # A Union built from a runtime tuple: the `X | Y` spelling needs the members written out.
        rest = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
        return rest, len(args) < len(typing.get_args(tp))
    return tp, False


def _base_type(tp: Any) -> Any:
    tp, _ = _optional(tp)
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        return args[0] if args else None
    return tp


_TYPE_WORDS = {bool: "a boolean (true/false, yes/no, on/off, 1/0)", int: "an integer", float: "a number",
               str: "text"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "texts"}


def _describe(tp: Any, rule: str = "") -> str:
    """What a key expects, in words: "an integer >= 1", "a list of 2 numbers > 0", "text, or null"."""
    tp, nullable = _optional(tp)
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        count = "" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} "
        text = f"a list of {count}{_PLURALS.get(args[0], 'values')}"
    else:
        text = _TYPE_WORDS.get(tp, getattr(tp, "__name__", str(tp)))
    return text + (rule and (", " if tp is str else " ") + rule) + (", or null" if nullable else "")


def _example(dotted: str, example: Any, tp: Any) -> str:
    if example is None:  # an optional field left unset: show a value of its type
        example = {int: 1, float: 1.0, str: "..."}.get(_base_type(tp), "...")
    if isinstance(example, bool):
        text = "true" if example else "false"
    elif isinstance(example, tuple):
        text = json.dumps(list(example), separators=(",", ":"))
    elif example is None:
        text = "null"
    else:
        text = str(example)
    return f"{dotted}={text}"


def _fail(dotted: str, tp: Any, value: Any, example: Any, rule: str = "") -> ConfigError:
    return ConfigError(f"config key {dotted!r} expects {_describe(tp, rule)} (e.g. {_example(dotted, example, tp)}), "
                       f"got {value!r}")


def _scalar(dotted: str, value: Any, tp: Any, whole_tp: Any, example: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is not None and math.isfinite(number):
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # a type this table does not know: accepted as given
        return value
    raise _fail(dotted, whole_tp, value, example)


def convert(dotted: str, value: Any, tp: Any, *, example: Any = None) -> Any:
    """``value`` (from JSON, the command line's text or Python) as type ``tp`` of config key ``dotted``, range-checked.

    Booleans accept true/false, yes/no, on/off, 1/0 (any case); numbers accept their text; tuples accept lists
    (and a single item for variable-length tuples); ``null``/``none`` only where the field allows None.
    Raises :class:`ConfigError` naming the key, the expected type or range, and an example.
    """
    inner, nullable = _optional(tp)
    if value is None or (nullable and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if nullable:
            return None
        raise _fail(dotted, tp, value, example)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        variadic = len(args) == 2 and args[1] is Ellipsis
        if isinstance(value, str) and "," in value:
            value = [v for v in value.split(",") if v.strip()]
        if variadic and not isinstance(value, (list, tuple)):
            value = [value]
        if not isinstance(value, (list, tuple)) or (not variadic and len(value) != len(args)) or not value:
            raise _fail(dotted, tp, value, example)
        item_types = [args[0]] * len(value) if variadic else list(args)
        converted = tuple(_scalar(dotted, v, t, tp, example) for v, t in zip(value, item_types))
    else:
        converted = _scalar(dotted, value, inner, tp, example)
    _check_range(dotted, converted, tp, value, example)
    return converted


def _check_range(dotted: str, converted: Any, tp: Any, value: Any, example: Any) -> None:
    choices = CHOICES.get(dotted)
    if choices is not None and converted not in choices:
        raise _fail(dotted, tp, value, example, f"one of {', '.join(choices)}")
    rng = RANGES.get(dotted) or default_range(dotted, tp)
    if rng is None:
        return
    items = converted if isinstance(converted, tuple) else (converted,)
    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v not in rng for v in items):
        raise _fail(dotted, tp, value, example, str(rng))
