"""A launch template's UserData, rendered from the template file itself (never a copy).

The tests run exactly what CloudFormation would hand an instance: the `Fn::Base64` of a
`Fn::Sub`, with the stack's parameters, pseudo parameters and imports filled in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flotilla.adapters.templates import load_template

_VARIABLE = re.compile(r"\$\{(!?)([A-Za-z0-9:.]+)\}")


def render_user_data(
    template: str,
    launch_template: str,
    values: Mapping[str, str],
    imports: Mapping[str, str] = {},
) -> str:
    """The UserData script of `launch_template` in `template`, with `values` for every
    `${Name}` (parameters, `AWS::Region`, `AWS::StackName`, `Resource` for a Ref) and
    `imports` for every `Fn::ImportValue` (by export name). A name without a value fails."""
    resource = load_template(template)["Resources"][launch_template]
    user_data = resource["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    substitution = user_data["Fn::Sub"]
    if isinstance(substitution, str):
        return _substitute(substitution, values)
    text, variables = substitution
    own = {name: _resolve(value, values, imports) for name, value in variables.items()}
    return _substitute(text, {**values, **own})


def _resolve(value: Any, values: Mapping[str, str], imports: Mapping[str, str]) -> str:
    if isinstance(value, str):
        return value
    if set(value) == {"Fn::ImportValue"}:
        export = value["Fn::ImportValue"]
        name = export if isinstance(export, str) else _substitute(export["Fn::Sub"], values)
        return imports[name]
    if set(value) == {"Ref"}:
        return values[value["Ref"]]
    raise ValueError(f"cannot render {value!r}")


def _substitute(text: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        literal, name = match.groups()
        return "${" + name + "}" if literal else values[name]

    return _VARIABLE.sub(replace, text)
