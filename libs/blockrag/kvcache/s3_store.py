"""S3ObjectStore: the ObjectStore of an S3-compatible bucket (AWS, MinIO, rclone serve s3...).

Locations are "s3://bucket/prefix/name". The bucket is created on first use, so a fresh
deployment needs only credentials and an endpoint.
"""

from __future__ import annotations

import http.client
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name

from blockrag.errors import ObjectStoreError, StorageConfigError
from blockrag.kvcache.object_store import ObjectInfo, TruncatedObjectError, check_name, is_object_name

T = TypeVar("T")
_MISSING = object()
# S3 error codes that mean "no such object": a miss, not a failure.
_NO_OBJECT = frozenset({"NoSuchKey", "NoSuchObject"})
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
_BUCKET_TAKEN = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_CODE_IN_BODY = re.compile(r"<Code>\s*([A-Za-z0-9.]+)\s*</Code>")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach the bucket. ``endpoint`` is "host:port" (no scheme: ``secure``
    picks http or https); ``prefix`` is prepended to every object name ("" for none)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = False
    prefix: str = "kv"
    region: str | None = None  # None: ask the server (GetBucketLocation)
    timeout_s: float = 30.0  # connect and read timeout of each request
    retries: int = 3  # urllib3 retries of refused connections and 5xx answers

    def __post_init__(self) -> None:
        if not self.endpoint or "://" in self.endpoint or "/" in self.endpoint:
            raise StorageConfigError(
                f"S3 endpoint must be host[:port] without scheme or path (use secure=true for "
                f"https); got {self.endpoint!r}"
            )
        try:
            check_bucket_name(self.bucket, strict=True)
        except ValueError as e:
            raise StorageConfigError(f"invalid S3 bucket name {self.bucket!r}: {e}") from e
        if not self.access_key or not self.secret_key:
            raise StorageConfigError(
                f"S3 credentials are missing for bucket {self.bucket!r} at {self.endpoint}: "
                f"set {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}"
            )
        if self.prefix != self.prefix.strip("/") or "//" in self.prefix:
            raise StorageConfigError(
                f"S3 prefix must not start or end with '/' nor contain '//'; got {self.prefix!r}"
            )
        if self.timeout_s <= 0 or self.retries < 0:
            raise StorageConfigError(
                f"S3 timeout_s must be > 0 and retries >= 0; got {self.timeout_s}, {self.retries}"
            )

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str]) -> S3Config:
        """Parse ``s3://bucket[/prefix]?endpoint=host:port[&secure=..][&region=..]
        [&timeout_s=..][&retries=..]``; credentials come from ``env`` (never from the URL,
        which ends up in logs). Without a path the default prefix is used."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname or parts.fragment:
            raise StorageConfigError(
                f"malformed S3 URL {url!r}; expected s3://bucket/prefix?endpoint=host:port"
            )
        if "@" in parts.netloc:
            raise StorageConfigError(
                f"S3 URL {url!r} carries credentials; put them in {ENV_ACCESS_KEY} and "
                f"{ENV_SECRET_KEY} instead"
            )
        options = _query_options(url, parts.query)
        if "endpoint" not in options:
            raise StorageConfigError(
                f"S3 URL {url!r} lacks ?endpoint=host:port (for AWS: "
                f"?endpoint=s3.amazonaws.com&secure=true)"
            )
        kwargs: dict[str, object] = {"bucket": parts.netloc}
        if parts.path.strip("/"):
            kwargs["prefix"] = parts.path.strip("/")
        for key, value in options.items():
            kwargs[key] = _parse_option(url, key, value)
        return cls(
            access_key=env.get(ENV_ACCESS_KEY, ""), secret_key=env.get(ENV_SECRET_KEY, ""),
            **kwargs,  # type: ignore[arg-type]
        )


# The query keys a URL may set: every field but those in the URL itself and the credentials.
_URL_OPTIONS = {f.name for f in fields(S3Config)} - {"bucket", "prefix", "access_key", "secret_key"}


def _query_options(url: str, query: str) -> dict[str, str]:
    try:
        raw = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as e:
        raise StorageConfigError(f"malformed query in S3 URL {url!r}: {e}") from e
    unknown = sorted(raw.keys() - _URL_OPTIONS)
    repeated = sorted(k for k, v in raw.items() if len(v) > 1)
    if unknown or repeated:
        raise StorageConfigError(
            f"S3 URL {url!r}: unknown or repeated query keys {unknown + repeated}; "
            f"allowed once each: {', '.join(sorted(_URL_OPTIONS))}"
        )
    return {k: v[0] for k, v in raw.items()}


def _parse_option(url: str, key: str, value: str) -> object:
    try:
        if key == "secure":
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError("expected true or false")
            return value.lower() in _TRUE
        if key == "timeout_s":
            return float(value)
        if key == "retries":
            return int(value)
    except ValueError as e:
        raise StorageConfigError(f"S3 URL {url!r}: bad value {value!r} for {key}: {e}") from e
    if key == "region":
        return value or None
    return value


def _error_code(e: MinioException) -> str | None:
    """The S3 error code of a failed call.

    minio only parses error bodies served as application/xml; rclone serve s3 (and some other
    servers) answer text/xml, which minio reports as InvalidResponseError with the body in its
    message. Both must read the same, or a missing object would look like a server failure.
    """
    if isinstance(e, S3Error):
        return e.code
    if isinstance(e, InvalidResponseError):
        match = _CODE_IN_BODY.search(str(e))
        return match.group(1) if match else None
    return None


class S3ObjectStore:
    """Objects in one bucket under ``config.prefix``; thread-safe (one pooled client)."""

    def __init__(self, config: S3Config):
        self.config = config
        timeout = urllib3.Timeout(connect=config.timeout_s, read=config.timeout_s)
        retries = urllib3.Retry(
            total=config.retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        )
        http = urllib3.PoolManager(
            timeout=timeout, retries=retries, maxsize=16, cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self._client = Minio(
            config.endpoint, access_key=config.access_key, secret_key=config.secret_key,
            secure=config.secure, region=config.region, http_client=http,
        )
        self._ensure_bucket()

    def __repr__(self) -> str:
        return f"S3ObjectStore({self._url}/{self.config.bucket}/{self.config.prefix})"

    @property
    def _url(self) -> str:
        return f"{'https' if self.config.secure else 'http'}://{self.config.endpoint}"

    def location_for(self, name: str) -> str:
        """The location ``put(name, ...)`` returns, without a request."""
        return f"s3://{self.config.bucket}/{self._key(name)}"

    def put(self, name: str, data: bytes) -> str:
        key = self._key(name)
        view = memoryview(data)
        self._call(
            "write", key,
            lambda: self._client.put_object(self.config.bucket, key, io.BytesIO(view), view.nbytes),
        )
        return f"s3://{self.config.bucket}/{key}"

    def get(self, location: str) -> bytes | None:
        key = self._key_of(location)

        def read() -> bytes:
            response = self._client.get_object(self.config.bucket, key)
            try:
                return response.read()
            except urllib3.exceptions.ProtocolError as e:
                # urllib3 holds the body to its Content-Length: fewer bytes is an IncompleteRead
                # (http.client's, its partial the bytes read; or urllib3's, their count)
                short = next((a for a in e.args if isinstance(a, http.client.IncompleteRead)), None)
                if short is None:
                    raise
                got = len(short.partial) if isinstance(short.partial, bytes) else short.partial
                raise TruncatedObjectError(
                    f"S3 read of {key!r} came short: {got} of {got + short.expected} bytes "
                    f"(endpoint {self._url}, bucket {self.config.bucket!r})") from e
            finally:
                response.close()
                response.release_conn()

        return self._call("read", key, read, missing=None)

    def delete(self, location: str) -> None:
        key = self._key_of(location)
        self._call(
            "delete", key, lambda: self._client.remove_object(self.config.bucket, key),
            missing=None,
        )

    def exists(self, location: str) -> bool:
        key = self._key_of(location)

        def stat() -> bool:
            self._client.stat_object(self.config.bucket, key)
            return True

        return self._call("stat", key, stat, missing=False)

    def list_objects(self) -> Iterator[ObjectInfo]:
        prefix = f"{self.config.prefix}/" if self.config.prefix else ""
        listing = self._call("list", prefix or self.config.bucket, lambda: list(
            self._client.list_objects(self.config.bucket, prefix=prefix, recursive=True)))
        for obj in listing:
            name = obj.object_name[len(prefix):]
            if obj.is_dir or not is_object_name(name):
                continue  # deeper keys and odd names are not objects this store wrote
            yield ObjectInfo(name, f"s3://{self.config.bucket}/{obj.object_name}", obj.size or 0,
                             # no date: never old enough to be swept
                             obj.last_modified.timestamp() if obj.last_modified else float("inf"))

    def remove_partial_writes(self, before: float) -> int:
        """Nothing to remove: a PUT is atomic, and an upload that died left no object."""
        return 0

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.config.prefix}/{name}" if self.config.prefix else name

    def _key_of(self, location: str) -> str:
        """The object key of a location in this bucket; StorageConfigError for any other."""
        parts = urlsplit(location) if isinstance(location, str) else None
        if (
            parts is None or parts.scheme != "s3" or parts.netloc != self.config.bucket
            or parts.query or parts.fragment
        ):
            raise StorageConfigError(
                f"location {location!r} is not in this store (s3://{self.config.bucket}/ at "
                f"{self._url}); the index was probably written with another object store URL"
            )
        key = parts.path.lstrip("/")
        check_name(key.rsplit("/", 1)[-1])
        return key

    def _ensure_bucket(self) -> None:
        bucket = self.config.bucket

        def exists() -> bool:
            try:
                return self._client.bucket_exists(bucket)
            except MinioException as e:
                # Without a configured region minio first asks for the bucket's location,
                # which fails with NoSuchBucket instead of answering False.
                if _error_code(e) == "NoSuchBucket":
                    return False
                raise

        def create() -> None:
            try:
                self._client.make_bucket(bucket)
            except MinioException as e:
                # Another process may have created it between our check and our create
                # (rclone and MinIO then answer BucketAlreadyExists, not ...OwnedByYou).
                if _error_code(e) not in _BUCKET_TAKEN or not exists():
                    raise

        if not self._call("check bucket", bucket, exists):
            self._call("create bucket", bucket, create)

    def _call(self, action: str, what: str, fn: Callable[[], T], missing: object = _MISSING) -> T:
        """Run one client call; a missing object returns ``missing`` (when given), any other
        failure becomes an ObjectStoreError naming the endpoint and bucket."""
        where = f"(endpoint {self._url}, bucket {self.config.bucket!r})"
        try:
            return fn()
        except MinioException as e:
            code = _error_code(e)
            if missing is not _MISSING and code in _NO_OBJECT:
                return missing  # type: ignore[return-value]
            hint = ""
            if code in _AUTH_CODES:
                hint = f"; check {ENV_ACCESS_KEY} / {ENV_SECRET_KEY} and the bucket policy"
            elif code == "NoSuchBucket":
                hint = "; the bucket was deleted after this store opened it; reopen the store"
            elif isinstance(e, ServerError):
                hint = "; the server failed, retry later"
            detail = code or str(e).splitlines()[0]
            raise ObjectStoreError(f"S3 {action} of {what!r} failed: {detail} {where}{hint}") from e
        except urllib3.exceptions.HTTPError as e:
            raise ObjectStoreError(
                f"cannot reach S3 to {action} {what!r} {where}: {_reason(e)}; check that the "
                f"server runs and the endpoint and secure settings are right"
            ) from e


def _reason(e: urllib3.exceptions.HTTPError) -> str:
    """The root cause ("Failed to establish a new connection: [Errno 111] Connection refused"),
    without urllib3's retry wrapper and connection-pool prefix."""
    return str(getattr(e, "reason", None) or e).split(": ", 1)[-1]
