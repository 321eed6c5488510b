"""Where the fleet's decision is kept: a shared folder or S3, with compare-and-swap.

A medium stores small JSON objects by key and writes each one only if it is
still the version the writer read: on S3 a conditional PUT (``If-Match`` on
the ETag, ``If-None-Match: *`` to create), in a folder an atomic rename made
under an exclusive lock on the folder. Versions are opaque strings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from service.decisions import DecisionStoreError


class StoreUnreachable(DecisionStoreError):
    """The shared store cannot be read or written right now."""


class VersionConflict(RuntimeError):
    """The object changed (or appeared) since the version the writer expected."""


class Medium(Protocol):
    """Small objects by key, written with compare-and-swap."""

    where: str

    def get(self, key: str) -> tuple[bytes, str] | None:
        """Return (body, version), or None when the object does not exist."""

    def version(self, key: str) -> str | None:
        """Return the object's version without its body (cheap), or None."""

    def put(self, key: str, body: bytes, expect: str | None) -> str:
        """Write if the object is at ``expect`` (None: absent); return the new version."""

    def put_any(self, key: str, body: bytes) -> None:
        """Write unconditionally (objects that only their writer ever writes)."""

    def list(self, prefix: str) -> list[tuple[str, bytes]]:
        """Return (key, body) of every object under ``prefix``."""


class FolderMedium:
    """Objects as files in a folder shared by every instance on one machine.

    ``anchor`` (the datastore folder the objects live beside) must exist: when
    it is gone the store is unreachable, and nothing recreates it behind the
    operator's back. ``root`` is made under it when first written.
    """

    def __init__(self, root: str | os.PathLike[str], anchor: str | os.PathLike[str]) -> None:
        self.root, self.anchor = Path(root), Path(anchor)
        self.where = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _reachable(self) -> None:
        if not self.anchor.is_dir():
            raise StoreUnreachable(
                f"the decision store {self.root} is unreachable: {self.anchor} is missing or "
                "unreadable (check LINEUP_DATASTORE_ROOT, or LINEUP_DECISION_ROOT if set)")

    @staticmethod
    def _version_of(stat: os.stat_result) -> str:
        # Every write is a rename of a new file: a new inode, a new version.
        return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"

    def version(self, key: str) -> str | None:
        self._reachable()
        try:
            return self._version_of(self._path(key).stat())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnreachable(f"cannot read {self._path(key)}: {exc}") from exc

    def get(self, key: str) -> tuple[bytes, str] | None:
        self._reachable()
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read(), self._version_of(os.fstat(handle.fileno()))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnreachable(f"cannot read {self._path(key)}: {exc}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # held for one rename, never across a selection
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _replace(self, path: Path, body: bytes) -> str:
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
                version = self._version_of(os.fstat(handle.fileno()))
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return version

    def _prepare(self, path: Path) -> None:
        """Make the folders between the anchor and ``path``, never the anchor itself.

        One level at a time, each on its parent: ``mkdir(parents=True)`` would
        make the anchor again, empty, if it were moved away after the check.
        """
        self._reachable()
        missing, folder = [], path.parent
        while not folder.is_dir():
            if folder == self.anchor:
                self._reachable()  # raises: it went away since the check
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()

    def put(self, key: str, body: bytes, expect: str | None) -> str:
        path = self._path(key)
        try:
            self._prepare(path)
            with self._locked():
                try:
                    current = self._version_of(path.stat())
                except FileNotFoundError:
                    current = None
                if current != expect:
                    raise VersionConflict(f"{path} is at {current}, not {expect}")
                return self._replace(path, body)
        except OSError as exc:
            raise StoreUnreachable(f"cannot write {path}: {exc}") from exc

    def put_any(self, key: str, body: bytes) -> None:
        path = self._path(key)
        try:
            self._prepare(path)
            self._replace(path, body)
        except OSError as exc:
            raise StoreUnreachable(f"cannot write {path}: {exc}") from exc

    def list(self, prefix: str) -> list[tuple[str, bytes]]:
        self._reachable()
        found: list[tuple[str, bytes]] = []
        for path in sorted(self._path(prefix).glob("**/*.json")):
            with contextlib.suppress(OSError):
                found.append((str(path.relative_to(self.root)), path.read_bytes()))
        return found


class S3Medium:
    """Objects in S3 beside the runs, written with S3's conditional PUT."""

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.where = f"s3://{bucket}/{self.prefix}"
        self.endpoint_url = endpoint_url
        self._clients: dict[int, Any] = {}
        self._making = threading.Lock()

    def _client(self) -> Any:
        """Return this process's client: a client's connections must not cross a fork."""
        client = self._clients.get(os.getpid())
        if client is not None:
            return client
        # Making clients is not thread-safe in boto3 (a client is, once made).
        with self._making:
            client = self._clients.get(os.getpid())
            if client is None:
                import boto3
                from botocore.config import Config

                # Short timeouts and few retries: a watcher looks every second,
                # and an unreachable store must be reported, not waited on.
                client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, config=Config(
                        connect_timeout=2, read_timeout=5,
                        retries={"max_attempts": 2, "mode": "standard"}))
                self._clients = {os.getpid(): client}
        return client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(), operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(kwargs.get("Key")) from exc
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409,
                                                                                          412):
                raise VersionConflict(f"{kwargs.get('Key')}: {code}") from exc
            raise StoreUnreachable(f"S3 {operation} {kwargs.get('Key', '')}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnreachable(f"S3 {operation} {kwargs.get('Key', '')}: {exc}") from exc

    def version(self, key: str) -> str | None:
        try:
            return self._call("head_object", Key=self._key(key))["ETag"]
        except FileNotFoundError:
            return None

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            answer = self._call("get_object", Key=self._key(key))
        except FileNotFoundError:
            return None
        return answer["Body"].read(), answer["ETag"]

    def put(self, key: str, body: bytes, expect: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        try:
            return self._call("put_object", Key=self._key(key), Body=body, **condition)["ETag"]
        except FileNotFoundError as exc:  # If-Match on an object deleted meanwhile
            raise VersionConflict(f"{key} is gone") from exc

    def put_any(self, key: str, body: bytes) -> None:
        self._call("put_object", Key=self._key(key), Body=body)

    def list(self, prefix: str) -> list[tuple[str, bytes]]:
        found = []
        listing = self._call("list_objects_v2", Prefix=self._key(prefix))
        for item in listing.get("Contents", []):
            relative = item["Key"][len(self.prefix) + 1:] if self.prefix else item["Key"]
            with contextlib.suppress(FileNotFoundError):
                found.append((relative, self._call("get_object", Key=item["Key"])["Body"].read()))
        return found
