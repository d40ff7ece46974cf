"""Reading our CloudFormation templates, and the table definitions inside them.

The environment template is the one place tables are defined. `flotilla init` deploys it
through CloudFormation; DynamoDB Local (which has no CloudFormation) gets its tables from
`create_tables`, built from the very same definitions.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import yaml

from flotilla.engine.errors import ConfigurationError

ENVIRONMENT_TEMPLATE = "environment.yaml"


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Sub, !Ref, ...) read as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def template_text(name: str) -> str:
    return resources.files("flotilla.cfn_templates").joinpath(name).read_text(encoding="utf-8")


def load_template(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(template_text(name), Loader=_CloudFormationLoader)  # noqa: S506 -- a SafeLoader subclass
    return loaded


def _substitute(value: Any, parameters: dict[str, str]) -> Any:
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([A-Za-z0-9]+)\}", lambda m: parameters[m.group(1)], value["Fn::Sub"])
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameters[value["Ref"]]
    if isinstance(value, dict):
        return {k: _substitute(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, parameters) for v in value]
    return value


def table_definitions(environment: str) -> list[dict[str, Any]]:
    """The Properties of every AWS::DynamoDB::Table of the environment stack, resolved."""
    template = load_template(ENVIRONMENT_TEMPLATE)
    parameters = {"EnvironmentName": environment}
    return [
        _substitute(resource["Properties"], parameters)
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::DynamoDB::Table"
    ]


def create_tables(client: Any, environment: str) -> list[str]:
    """Create the environment's tables directly (for DynamoDB Local), and wait for them."""
    created = []
    for properties in table_definitions(environment):
        request = {
            key: properties[key]
            for key in (
                "TableName",
                "BillingMode",
                "AttributeDefinitions",
                "KeySchema",
                "GlobalSecondaryIndexes",
            )
            if key in properties
        }
        client.create_table(**request)
        name = request["TableName"]
        client.get_waiter("table_exists").wait(TableName=name)
        ttl = properties.get("TimeToLiveSpecification")
        if ttl:
            client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        created.append(name)
    if not created:
        raise ConfigurationError(f"{ENVIRONMENT_TEMPLATE} defines no tables")
    return created
