"""Config files (JSON / YAML) merged into argparse namespaces the way UNITER's ``parse_with_config`` does.

UNITER-family scripts take ``--config file.json``: every key of the file sets the option of the same
name, except options given explicitly on the command line, which win. Unlike the original (which
compared raw ``--name`` strings), explicit options are found through argparse itself, so abbreviated
flags (``--lambda_softmax`` for ``--lambda_softmax_CMRC``), ``--flag=value`` and short options count;
and a key that is no option is an error naming the closest valid one instead of silently becoming an
attribute (``extra_keys`` lists keys a script accepts only from its config file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from itr_common.errors import UserError, check_keys, require_file
from itr_common.validation import check_config_types

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


class _YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading ``1e-4`` as a number, as YAML 1.2 and JSON do (YAML 1.1 needs ``1.0e-4``
    and PyYAML would give the string "1e-4", which the type checks then refuse)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a ``.json``, ``.yaml`` or ``.yml`` file (an empty YAML file gives ``{}``).

    Bad syntax raises :class:`UserError` naming the file and the line.
    """
    source = require_file(path, "config file")
    suffix = source.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        found = suffix or source.name
        raise UserError(f"{source}: expected a config file ending in .json, .yaml or .yml, found '{found}'")
    text = source.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{source}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    else:
        try:
            config = yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or type(err).__name__
            raise UserError(f"{source}: invalid YAML{where}: {problem}") from None
        if config is None:
            config = {}
    if not isinstance(config, dict):
        raise UserError(f"{source}: expected a mapping of option names to values, found a {type(config).__name__}")
    return config


def parser_dests(parser: argparse.ArgumentParser) -> list[str]:
    """The attribute names (dests) ``parser`` sets, without ``help``-like actions."""
    return [a.dest for a in parser._actions if a.dest != argparse.SUPPRESS and a.default != argparse.SUPPRESS]


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> set[str]:
    """The dests of the options given on the command line ``argv`` (default ``sys.argv[1:]``).

    ``argv`` is parsed with every option's default temporarily suppressed, so only options that appear
    in it set attributes; abbreviations, ``--flag=value`` and short options are resolved by argparse
    itself. A positional counts as explicit when its parsed value differs from its default.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    options = [action for action in parser._actions if action.option_strings]
    saved = [(action, action.default, action.required) for action in options]
    saved_parser_defaults = dict(parser._defaults)
    try:
        for action in options:
            action.default = argparse.SUPPRESS
            action.required = False
        parser._defaults.clear()
        namespace, _ = parser.parse_known_args(argv, argparse.Namespace())
    finally:
        for action, default, required in saved:
            action.default = default
            action.required = required
        parser._defaults.update(saved_parser_defaults)
    given = {action.dest for action in options if hasattr(namespace, action.dest)}
    for action in parser._actions:
        if not action.option_strings and getattr(namespace, action.dest, action.default) != action.default:
            given.add(action.dest)
    return given


def apply_config(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    config: dict[str, Any],
    source: str | os.PathLike,
    argv: Sequence[str] | None = None,
    extra_keys: Iterable[str] = (),
) -> argparse.Namespace:
    """A copy of ``args`` where each ``config`` key sets its option unless ``argv`` gave it explicitly.

    ``argv`` defaults to ``sys.argv[1:]`` (what ``parse_args`` read). Keys must be option dests or in
    ``extra_keys``; an unknown key raises :class:`UserError` naming ``source`` and the closest valid key.
    A value of another type than its option takes (``"fp16": "no"``, ``"valid_steps": 2.5``, a number
    written as a string, NaN) or outside an option's ``choices`` is an error too
    (:func:`itr_common.validation.check_config_types`). Values are used as the file gives them.
    """
    check_keys(config, [*parser_dests(parser), *extra_keys], source)
    check_config_types(config, parser, source)
    actions = {a.dest: a for a in parser._actions}
    for key, value in config.items():
        action = actions.get(key)
        if action is None or action.choices is None:
            continue
        many = isinstance(value, list) and action.nargs not in (None, "?")
        for item in value if many else [value]:
            if item not in action.choices:
                allowed = ", ".join(map(repr, action.choices))
                raise UserError(f"{source}: config key '{key}': expected one of {allowed}, found {item!r}")
    explicit = explicit_flags(parser, argv)
    merged = argparse.Namespace(**vars(args))
    for key, value in config.items():
        if key not in explicit:
            setattr(merged, key, value)
    return merged


def parse_with_config(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    config_option: str = "config",
    extra_keys: Iterable[str] = (),
) -> argparse.Namespace:
    """UNITER's ``parse_with_config``: parse ``argv``, apply the file named by ``--config``, drop ``config``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    path = getattr(args, config_option, None)
    if path is not None:
        args = apply_config(args, parser, load_config(path), source=Path(path), argv=argv, extra_keys=extra_keys)
    if hasattr(args, config_option):
        delattr(args, config_option)
    return args


def require_config_values(args: argparse.Namespace, keys: Iterable[str]) -> None:
    """Each of ``keys`` is set (from ``--config`` or the command line); one line naming the first that is not."""
    for key in keys:
        if not getattr(args, key):
            raise UserError(f"{key}: expected it in --config or on the command line, found none")


def pair_train_dbs(args: argparse.Namespace) -> None:
    """UNITER-style ``train_txt_dbs`` / ``train_img_dbs``: a single path becomes a list; one img_db per txt_db."""
    if isinstance(args.train_txt_dbs, str):
        args.train_txt_dbs = [args.train_txt_dbs]
    if isinstance(args.train_img_dbs, str):
        args.train_img_dbs = [args.train_img_dbs]
    if len(args.train_txt_dbs) != len(args.train_img_dbs):
        raise UserError(f"train_txt_dbs/train_img_dbs: expected one img_db per txt_db, found "
                        f"{len(args.train_txt_dbs)} and {len(args.train_img_dbs)}")
