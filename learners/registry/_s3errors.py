"""Failed S3 requests as :class:`~streaming.errors.RegistryError`: what failed and why, never
with credentials. Imported only with the S3 backend (it needs botocore)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from streaming.errors import RegistryError

__all__ = ["MISSING", "TAKEN", "code", "s3_errors"]

#: Error codes of a conditional write that lost (the object exists, or changed since it was read).
TAKEN = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
#: Error codes of an object that does not exist.
MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


def code(exc: ClientError) -> str:
    """The S3 error code of a failed request."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _redact(text: str) -> str:
    """Drop ``user:password@`` from URLs in a message."""
    return re.sub(r"://[^/@\s]+@", "://***@", text)


@contextmanager
def s3_errors(uri: str, bucket: str, doing: str, version: int | None = None) -> Iterator[None]:
    """Turn a failed S3 request into a RegistryError that says what failed (never with credentials)."""
    try:
        yield
    except ClientError as exc:
        found = code(exc)
        if found == "NoSuchBucket":
            why = f"bucket {bucket!r} does not exist"
        elif found in _DENIED:
            why = "access denied (check the credentials and the bucket policy)"
        elif found in _BAD_CREDENTIALS:
            why = f"the credentials were refused ({found})"
        else:
            why = f"{found}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
        raise RegistryError(f"{uri}: {doing}: {why}", version) from None
    except (NoCredentialsError, PartialCredentialsError):
        why = "no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        raise RegistryError(f"{uri}: {doing}: {why}", version) from None
    except (BotoCoreError, Boto3Error) as exc:
        raise RegistryError(f"{uri}: {doing}: {_redact(str(exc))}", version) from None
