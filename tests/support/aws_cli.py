"""The `flotilla` command against a moto server, with a look at what it made there."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import ClientError

from tests.support.aws import REGION
from tests.support.cli import Cli as BaseCli


class Cli(BaseCli):
    def client(self, service: str) -> Any:
        make_client: Any = boto3.client  # typed per service name; ours is dynamic
        return make_client(service, region_name=REGION, endpoint_url=self.endpoint)

    def stack(self, name: str) -> dict[str, Any] | None:
        try:
            stacks = self.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except ClientError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        stack: dict[str, Any] = stacks[0]
        return stack

    def parameters(self, name: str) -> dict[str, str]:
        stack = self.stack(name)
        assert stack is not None, f"no stack {name}"
        return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack["Parameters"]}

    def outputs(self, name: str) -> dict[str, str]:
        stack = self.stack(name)
        assert stack is not None, f"no stack {name}"
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    def events(self, name: str) -> list[str]:
        answer = self.client("cloudformation").describe_stack_events(StackName=name)
        return [e["EventId"] for e in answer["StackEvents"]]

    def resources(self, name: str) -> dict[str, str]:
        """Logical id → physical id of every resource of the stack."""
        answer = self.client("cloudformation").describe_stack_resources(StackName=name)
        return {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in answer["StackResources"]
            if "LogicalResourceId" in r  # moto lists conditions left out as empty rows
        }

    @property
    def environment_stack(self) -> str:
        return f"flotilla-{self.environment}"

    def bucket(self) -> str:
        """The environment's artifact bucket, as its stack says."""
        return self.outputs(self.environment_stack)["ArtifactBucketName"]

    def objects(self, bucket: str | None = None) -> dict[str, dict[str, Any]]:
        """Key → object summary (ETag, size, last modified) of everything in the bucket."""
        listed = self.client("s3").list_objects_v2(Bucket=bucket or self.bucket())
        return {o["Key"]: o for o in listed.get("Contents", [])}

    def object_bytes(self, key: str) -> bytes:
        body = self.client("s3").get_object(Bucket=self.bucket(), Key=key)["Body"]
        data: bytes = body.read()
        return data

    def bucket_names(self) -> set[str]:
        return {b["Name"] for b in self.client("s3").list_buckets().get("Buckets", [])}
