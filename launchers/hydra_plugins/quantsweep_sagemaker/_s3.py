"""Every S3 call the launcher and ``quantsweep-sagemaker fetch`` make, each with ExpectedBucketOwner.

Why a module of its own: a bucket name is global, and the SDK's default bucket
(``sagemaker-<region>-<account>``) is a name anyone can predict. ExpectedBucketOwner makes
S3 refuse a call (403) when the bucket belongs to another account, so a job bundle is
never uploaded into, and a job's output never read from, someone else's bucket. Keeping
all calls here makes "every call carries it" one thing to read and one thing to test
(``tests/test_sagemaker_fetch.py`` records the parameters of every call).

The owner is the account of the credentials in use (STS GetCallerIdentity), unless
``hydra.launcher.bucket_owner`` names another (a bucket shared across accounts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BucketError(RuntimeError):
    """A bucket the launcher must not use; the message is for the user."""


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def caller_account(session: Any) -> str:
    """The AWS account of the credentials in use."""
    return str(session.client("sts").get_caller_identity()["Account"])


@dataclass
class Store:
    """S3 through one boto3 client, every call bound to the bucket owner's account."""

    client: Any
    owner: str

    @property
    def _owned(self) -> dict[str, str]:
        return {"ExpectedBucketOwner": self.owner}

    def check_bucket(self, uri: str) -> None:
        """Refuse, before anything is uploaded, a bucket that is missing or another account's (HeadBucket)."""
        from botocore.exceptions import ClientError

        bucket, _ = split(uri)
        try:
            self.client.head_bucket(Bucket=bucket, **self._owned)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            why = {
                "403": "it belongs to another account than",
                "404": "it does not exist, expected owner",
            }.get(code, f"S3 answered {code} for")
            raise BucketError(
                f"The S3 bucket {bucket} cannot be used: {why} {self.owner} (hydra.launcher.bucket_owner, "
                "null: your account). Nothing was uploaded."
            ) from None

    def upload_file(self, path: Path, uri: str) -> None:
        bucket, key = split(uri)
        self.client.upload_file(str(path), bucket, key, ExtraArgs=self._owned)

    def upload_folder(self, source: Path, uri: str, hidden: bool = True) -> None:
        """A file, or every file under a folder (``hidden``: with files under names starting with ``.``), below ``uri``."""
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for path in files:
            relative = path.name if source.is_file() else path.relative_to(source).as_posix()
            if not hidden and any(
                part.startswith(".") for part in Path(relative).parts[(0 if source.is_dir() else 1) :]
            ):
                continue
            self.upload_file(path, f"{uri.rstrip('/')}/{relative}")

    def put_json(self, value: Any, uri: str) -> None:
        bucket, key = split(uri)
        body = (json.dumps(value, indent=2) + "\n").encode()
        self.client.put_object(Bucket=bucket, Key=key, Body=body, **self._owned)

    def get_json(self, uri: str) -> Any:
        bucket, key = split(uri)
        answer = self.client.get_object(Bucket=bucket, Key=key, **self._owned)
        return json.loads(answer["Body"].read().decode("utf-8"))

    def exists(self, uri: str) -> bool:
        """Whether any object lies at or below ``uri``."""
        bucket, key = split(uri)
        listing = self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1, **self._owned)
        return bool(listing.get("KeyCount", 0))

    def download_file(self, uri: str, path: Path) -> None:
        bucket, key = split(uri)
        self.client.download_file(bucket, key, str(path), ExtraArgs=self._owned)
