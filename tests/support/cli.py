"""The `flotilla` command as an operator runs it, against a moto server, for CLI tests."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.support.agents import FLOTILLA
from tests.support.aws import REGION


@dataclass
class Cli:
    endpoint: str
    environment: str

    def run(
        self,
        *args: str,
        stdin: str | bytes | None = None,
        env: dict[str, str] | None = None,
        environment: str | None = None,
        endpoint: str | None = None,
        with_region: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run `flotilla ARGS` with only the AWS settings given here (none inherited)."""
        variables = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLOTILLA_") and k not in ("AWS_REGION", "AWS_DEFAULT_REGION")
        }
        aws = ["--endpoint-url", endpoint or self.endpoint]
        aws += ["--env", environment or self.environment]
        if with_region:
            aws += ["--region", REGION]
        # Options go before a `--`: after it, everything is an argument.
        split = args.index("--") if "--" in args else len(args)
        completed = subprocess.run(
            [FLOTILLA, *args[:split], *aws, *args[split:]],
            input=stdin.encode() if isinstance(stdin, str) else stdin,
            capture_output=True,
            env={**variables, **(env or {})},
            timeout=timeout,
            check=False,
        )
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode(),
            completed.stderr.decode(),
        )

    def ok(self, *args: str, **options: Any) -> str:
        """Run it; it must succeed. Returns standard output."""
        result = self.run(*args, **options)
        assert result.returncode == 0, result.stderr
        return result.stdout
