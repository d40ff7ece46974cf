"""The one edge between Flotilla and botocore: every AWS adapter classifies errors here.

One list of "slow down / try again" codes and one test of it (`is_transient`), used by
every adapter (DynamoDB, SQS, KMS, ELB, S3, CloudFormation); one translation of the rest,
used whole by most and in part by the adapters with answers of their own (DynamoDB's
failed conditions and oversized items, KMS's refusals). botocore's exceptions become
engine errors that say what went wrong and what to do, and carry whether the same call
may succeed later (`retryable`), so no caller parses messages.

- throttling, 5xx answers and failures to connect or read → `TransientError` (retryable);
  botocore has already retried these (standard mode, `CLIENT_CONFIG`), the engine's
  step-level policy decides whether to try again (the message promises nothing);
- access denied and unusable credentials or region → `ConfigurationError`;
- error codes that mean "the thing you named does not exist" → `ConfigurationError` with the
  message the adapter gives (which names the thing and says how to fix it);
- anything else → `FlotillaError`, not retryable: the same request would fail the same way.

Adapters catch the codes that are answers rather than failures (an instance that is not
registered, say) inside the `translated_errors` block, before it sees them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from flotilla.engine.errors import ConfigurationError, FlotillaError, TransientError

# Where a region may be named, in the order Flotilla reads them (cli.wiring): our own
# variable, then the one the AWS CLI, SDKs and EC2 user data set, then the one botocore
# itself reads. Every message about a missing region names these, so none names only one.
REGION_VARIABLES = ("FLOTILLA_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
NO_CREDENTIALS_HINT = (
    "set AWS_PROFILE, or one of " + ", ".join(REGION_VARIABLES) + ", "
    "or give this host an instance role"
)

# The codes AWS services use for "slow down" and "try again": the ones botocore's standard
# retry mode treats as throttling or transient, plus the services' own (DynamoDB's
# throughput and transaction conflicts, SQS's and KMS's). One list for every adapter: a
# code no service of ours sends costs nothing here, a code missing from one copy of the
# list made that adapter give up on a throttle.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        # DynamoDB
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        # KMS, and SQS on a queue encrypted with KMS
        "KMSInternalException",
        "DependencyTimeoutException",
        "KmsThrottled",
    }
)

ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}
)

CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: ClientError) -> bool:
    """Whether the same call may succeed later: a throttling or try-again code, or a 5xx."""
    return error_code(exc) in THROTTLING_CODES or http_status(exc) >= 500


@contextmanager
def translated_errors(
    service: str, what: str, *, missing: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Turn botocore failures of `what` (a call to `service`) into engine errors.

    `missing` maps error codes that mean a named resource does not exist to the
    sentence to show: what is missing and what to do about it.
    """
    try:
        yield
    except ClientError as exc:
        raise translate(exc, service, what, missing=missing) from exc
    except BotoCoreError as exc:
        raise translate_botocore_error(exc, service, what) from exc


def translate_botocore_error(exc: BotoCoreError, service: str, what: str) -> FlotillaError:
    """A failure before AWS answered: no credentials or region, no connection, or a call
    botocore itself refused."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError):
        return ConfigurationError(
            f"{what}: no usable AWS credentials or region ({type(exc).__name__}); "
            + NO_CREDENTIALS_HINT
        )
    if isinstance(exc, ConnectionError | HTTPClientError):
        # No promise of a retry here: whether one follows is the caller's (the daemons'
        # loops, the CLI's own few attempts), and each says so itself.
        return TransientError(f"{what}: cannot reach {service} ({type(exc).__name__})")
    # Parameter validation and the like: the same call would fail the same way.
    return FlotillaError(f"{what}: botocore refused the call ({exc})")


def translate(
    exc: ClientError, service: str, what: str, *, missing: Mapping[str, str] | None = None
) -> FlotillaError:
    code = error_code(exc)
    if is_transient(exc):
        return TransientError(f"{what}: {service} is throttling or unavailable ({code})")
    if missing and code in missing:
        return ConfigurationError(f"{what}: {missing[code]}")
    if code in ACCESS_DENIED_CODES:
        return ConfigurationError(
            f"{what}: AWS refused {exc.operation_name} ({code}); give this host's role "
            f"permission for it"
        )
    if code in CREDENTIAL_CODES:
        return ConfigurationError(
            f"{what}: AWS did not accept the credentials ({code}); check AWS_PROFILE, the "
            "instance role and the machine's clock"
        )
    return FlotillaError(f"{what}: {service} answered {code}: {error_message(exc)}")
