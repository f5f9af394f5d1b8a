"""Command-line options generated from the run options declared in :mod:`resnetlab.engine.config`.

A command that takes run options declares only its own parameters and names the generated ones::

    @with_options(_own, options_for("train"))
    def command(ctx: typer.Context, **params): ...
    overrides = flag_overrides(params)        # {"optim.lr": 0.05, ...}

``options_for(command)`` gives one typer option per declared run option (its flag, help,
panel, and the effective default read off the ``default`` recipe), so ``train``, ``finetune``,
``compare`` (and any new command, e.g. a sweep) take every train flag without listing them.
"""

from __future__ import annotations

import inspect
import keyword
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from resnetlab.engine.config import OPTIONS, Option, RunConfig, default_recipe, effective_default
from resnetlab.utils.errors import ConfigError

__all__ = ["options_for", "with_options", "flag_overrides", "SET_HELP"]

SET_HELP = ("Config key section.KEY=VALUE (e.g. --set optim.eps=1e-6) or model argument KEY=VALUE "
            "(e.g. --set num_blocks=2); repeatable.")


def _cli_type(hint: Any) -> type:
    """The type typer parses: lists of numbers are text (``30,45``), unions take their widest."""
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return str
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:  # int | float -> float; float | str -> str; int | tuple -> int
        if str in args:
            return str
        return float if float in args else _cli_type(args[0])
    return hint


def _escape(text: str) -> str:
    return text.replace("[", "\\[")  # rich markup: "[default: 1]" is text, not a style


def _parameter(option: Option, recipe: RunConfig) -> inspect.Parameter:
    kind = _cli_type(option.hint)
    decls = [option.flag] if kind is not bool or not option.negatable else \
        [f"{option.flag}/--no-{option.flag[2:]}"]
    text = f"{option.help} [default: {effective_default(option, recipe)}]"
    info = typer.Option(*decls, help=_escape(text), rich_help_panel=option.panel, show_default=False)
    return inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, info])


def options_for(command: str = "train", exclude: Iterable[str] = (),
                section: str | None = None, recipe: str = "default") -> list[inspect.Parameter]:
    """The typer parameters of every run option with a flag that ``command`` takes.

    ``exclude``: config keys (``"model.name"``) the command replaces with its own.  Options
    declared ``only="finetune"`` appear only there.  Every default is None ("not given"), so
    the recipe decides; ``--help`` shows the value of ``recipe`` (the command's default
    recipe).  ``section``: only that config section's options (``"finetune"``).
    """
    base, skip = default_recipe(recipe), set(exclude)
    return [_parameter(o, base) for o in OPTIONS.values()
            if o.flag and o.key not in skip and o.only in (None, command)
            and (section is None or o.key.startswith(section + "."))]


def with_options(*groups: Callable[..., Any] | list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Give a ``command(ctx, **params)`` the parameters of ``groups``, in order: a function's
    own parameters (a stub with typer annotations) or a list from :func:`options_for`.  A
    later parameter of an already-taken name is dropped (the command's own wins)."""
    params: dict[str, inspect.Parameter] = {}
    for group in groups:
        found = group if isinstance(group, list) else \
            inspect.signature(group, eval_str=True).parameters.values()
        for p in found:
            params.setdefault(p.name, p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                              if p.name != "ctx" else p)

    def wrap(fn: Callable) -> Callable:
        fn.__signature__ = inspect.Signature(list(params.values()))  # type: ignore[attr-defined]
        return fn
    return wrap


def flag_overrides(params: dict[str, Any], set_items: list[str] | None = None) -> dict[str, Any]:
    """Dotted config keys for every run-option flag the user gave (None means "not given") and
    every ``--set``: ``section.key=value`` sets a config key, ``key=value`` a model argument."""
    out: dict[str, Any] = {}
    for option in OPTIONS.values():
        value = params.get(option.param)
        if value is None or not option.flag:
            continue
        if _takes_list(option.hint):
            value = _list_value(value, option)
        elif option.key in _NONE_TURNS_OFF and str(value).lower() in _OFF:
            value = None  # e.g. --time-budget none: the recipe's budget off, --epochs decides
        out[option.key] = value
    out.update(_set_overrides(set_items))
    # The warm-up is given one way or the other; a flag replaces the recipe's way.
    for given, other in (("warmup_epochs", "warmup_frac"), ("warmup_frac", "warmup_epochs")):
        if f"schedule.{given}" in out:
            out.setdefault(f"schedule.{other}", 0.0)
    _refuse_image_augment_for_tables(out)
    return out


_OFF = ("none", "off")
_NONE_TURNS_OFF = ("train.time_budget", "train.late_freeze")


def _takes_list(hint: Any) -> bool:
    return any(typing.get_origin(h) in (list, tuple) for h in (hint, *typing.get_args(hint)))


def _list_value(value: str, option: Option) -> Any:
    """``30,45`` -> [30, 45]; ``none`` -> [] (``--progressive-sizes none``); a word the
    option also takes (``default``) as it is."""
    from resnetlab.cli.common import parse_number_list

    word = str(value).strip().lower()
    if word in _OFF:
        return []
    if word == "default" and str in typing.get_args(option.hint):
        return word
    return parse_number_list(value, option.flag)


def _set_overrides(set_items: list[str] | None) -> dict[str, Any]:
    """``--set section.key=value`` and ``--set key=value`` (a model argument).  A bare key that
    is a run option (``--set name=x``) says which flag or key to use instead."""
    from resnetlab.cli.common import parse_set

    out: dict[str, Any] = {}
    for key, value in parse_set(set_items).items():
        if "." not in key and (key in OPTIONS or key in _SECTIONS):
            hint = f"use {OPTIONS[key].flag} {value}" if key in OPTIONS else f"set one of its keys, e.g. {key}.KEY={value}"
            raise ConfigError(f"--set {key}={value}: {key} is not a model argument; {hint}")
        if not key.isidentifier() and "." not in key or keyword.iskeyword(key):
            raise ConfigError(f"--set {key}={value}: a model argument is a Python name, e.g. --set width_mult=0.5")
        out[key if "." in key else f"model.kwargs.{key}"] = value
    return out


_SECTIONS = ("model", "data", "optim", "schedule", "train", "finetune")


def _refuse_image_augment_for_tables(out: dict[str, Any]) -> None:
    """A recipe's image augmentation is dropped for tables by the data layer; an ``--augment``
    the user typed for a table is a mistake worth saying (the data layer cannot tell the two)."""
    augment, data = out.get("data.augment"), str(out.get("data.name", ""))
    if data.startswith("csv:") and augment not in (None, "none", "auto", "default"):
        raise ConfigError(f"--augment {augment}: --data {data} is a table; image augmentation "
                          "does not apply to rows (drop --augment)")
