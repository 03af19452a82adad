"""Backup of archived timelapses to any S3-compatible store (AWS S3, MinIO, Ceph, Backblaze B2...).

Each file of a timelapse becomes one object, ``<prefix>/<timelapse folder>/<file>``, followed by a
``manifest.json`` that lists every file's size, SHA-256 and ETag. A timelapse is marked backed up
in the catalog only after every object's checksum, as the store reports it, matches the one
computed here from the bytes that were sent, and those bytes match the SHA-256 recorded when the
timelapse was archived: a file that changed on disk since is never marked backed up.

Large files go up as multipart uploads, resumable across crashes and restarts: the UploadId and
every completed part (number, ETag, SHA-256) are kept in a small JSON state file per object, and a
resumed upload asks the store for the parts it already holds (``ListParts``) and sends only the
missing or mismatching ones. Each part carries an S3 additional checksum (SHA-256) that the store
checks on receipt; after completion the object's composite checksum (SHA-256 of the part
digests) and its ETag (MD5 of the part MD5s, for stores that compute it so) are compared with
local values. Every request is retried with exponential backoff and jitter (tenacity).

Credentials: ``access_key_id``/``secret_access_key`` from the configuration, else boto3's
standard chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance
roles...). ``endpoint_url`` points at a non-AWS store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from skylapse.catalog import TimelapseRow
from skylapse.config import BackupConfig as BackupConfig  # its settings, re-exported
from skylapse.config import reveal
from skylapse.log import get_logger
from skylapse.processing.archive import Archive

log = get_logger(__name__)

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-\d+)?$")
_RETRYABLE_CODES = {
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "BadDigest",
    "XAmzContentSHA256Mismatch",
}


class BackupError(RuntimeError):
    """The backup could not be completed or did not verify; nothing was marked backed up."""


class LocalFileChanged(BackupError):
    """The file's bytes no longer match the SHA-256 recorded when it was archived."""


def make_s3_client(config: BackupConfig) -> Any:
    """A boto3 S3 client for ``config``; retries are ours (tenacity), so botocore's are off.

    Typed ``Any``: boto3 has no type hints (its clients are generated at run time).
    """
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=reveal(config.access_key_id),
        aws_secret_access_key=reveal(config.secret_access_key),
        region_name=config.region,
    )
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        config=Config(
            retries={"total_max_attempts": 1},
            connect_timeout=config.timeout_s,
            read_timeout=config.timeout_s,
            # we send SHA-256 checksums ourselves; the CRC default breaks some S3-compatibles
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if config.endpoint_url else None,
        ),
    )


def _retryable(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _RETRYABLE_CODES
    return False


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _multipart_checksums(
    part_sha256: Sequence[bytes], part_md5: Sequence[bytes]
) -> tuple[str, str]:
    """A multipart object's composite SHA-256 (base64 of the SHA-256 of the parts' digests) and
    its ETag (hex MD5 of the parts' MD5 digests, ``-`` and the number of parts)."""
    composite = _b64(hashlib.sha256(b"".join(part_sha256)).digest())
    return composite, f"{hashlib.md5(b''.join(part_md5)).hexdigest()}-{len(part_md5)}"


@dataclass
class UploadResult:
    """One object in the store, verified."""

    key: str
    size: int
    sha256: str  # hex SHA-256 of the whole file
    etag: str
    checksum_sha256: str | None  # the store's additional checksum (composite for multipart)
    parts_uploaded: list[int] = field(default_factory=list)
    parts_reused: list[int] = field(default_factory=list)


class S3Backup:
    """Uploads files and whole archived timelapses, resumably, and verifies them."""

    def __init__(
        self,
        config: BackupConfig,
        state_dir: str | Path,
        *,
        client: Any = None,
        on_part: Callable[[str, int], None] | None = None,
    ):
        if not config.enabled:
            raise BackupError("backup needs a bucket (backup.bucket or SKYLAPSE_BACKUP_BUCKET)")
        self.config = config
        self.bucket: str = config.bucket  # type: ignore[assignment]
        self.client = client if client is not None else make_s3_client(config)
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.part_size = config.part_size_mib * MIB
        self.on_part = on_part  # called after each part is stored (progress; tests interrupt)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts),
            wait=wait_exponential(multiplier=self.config.retry_wait_s, max=60)
            + wait_random(0, self.config.retry_wait_s),  # jitter
            retry=retry_if_exception(_retryable),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "s3 request failed, retrying",
                operation=operation,
                attempt=rs.attempt_number,
                error=str(rs.outcome.exception() if rs.outcome else None),
            ),
        )
        return retrying(getattr(self.client, operation), **kwargs)

    def key_for(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.config.prefix, *parts) if p.strip("/"))

    # -- one file ----------------------------------------------------------------------------

    def _state_path(self, key: str) -> Path:
        name = hashlib.sha256(f"{self.bucket}/{key}".encode()).hexdigest()[:32]
        return self.state_dir / f"{name}.json"

    def _load_state(self, key: str) -> dict[str, Any] | None:
        path = self._state_path(key)
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return state if state.get("key") == key and state.get("bucket") == self.bucket else None

    def _save_state(self, key: str, state: dict[str, Any]) -> None:
        path = self._state_path(key)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _abort(self, state: Mapping[str, Any]) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=state["key"], UploadId=state["upload_id"]
            )
        except Exception as exc:  # already gone: nothing to clean up
            log.info("abort of stale upload failed", key=state["key"], error=str(exc))

    def upload_file(
        self, path: str | Path, key: str, *, expected_sha256: str | None = None
    ) -> UploadResult:
        """Upload ``path`` to ``key`` and verify it; resumes an interrupted multipart upload.

        With ``expected_sha256`` the file's bytes must hash to it, else :class:`LocalFileChanged`
        is raised and no object is completed. An object already in the store with matching
        checksums is not sent again.
        """
        path = Path(path)
        size = path.stat().st_size
        existing = self._verified_existing(path, key, size)
        if existing is not None:
            if expected_sha256 is not None and existing.sha256 != expected_sha256:
                raise LocalFileChanged(f"{path}: SHA-256 differs from the archive's record")
            return existing
        if size <= self.part_size:
            return self._put_single(path, key, size, expected_sha256)
        return self._put_multipart(path, key, size, expected_sha256)

    def _local_digests(self, path: Path) -> tuple[str, str, str, int]:
        """(SHA-256 hex, composite SHA-256 b64, multipart ETag, parts) as our uploads make them."""
        whole = hashlib.sha256()
        part_sha, part_md5, n = [], [], 0
        with open(path, "rb") as f:
            while chunk := f.read(self.part_size):
                whole.update(chunk)
                part_sha.append(hashlib.sha256(chunk).digest())
                part_md5.append(hashlib.md5(chunk).digest())
                n += 1
        if n <= 1:
            data_sha = part_sha[0] if part_sha else hashlib.sha256().digest()
            md5 = part_md5[0].hex() if part_md5 else hashlib.md5().hexdigest()
            return whole.hexdigest(), _b64(data_sha), md5, n
        composite, etag = _multipart_checksums(part_sha, part_md5)
        return whole.hexdigest(), composite, etag, n

    def _verified_existing(self, path: Path, key: str, size: int) -> UploadResult | None:
        from botocore.exceptions import ClientError

        try:
            head = self._call("head_object", Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        if head.get("ContentLength") != size:
            return None
        sha, composite, etag, _ = self._local_digests(path)
        if not self._matches(head, composite, etag):
            return None
        return UploadResult(key, size, sha, _etag(head.get("ETag")), head.get("ChecksumSHA256"))

    @staticmethod
    def _matches(head: Mapping[str, Any], composite_b64: str, etag: str) -> bool:
        """True when the store's checksums match: every one it reports, and at least one."""
        checked = 0
        remote_sum = head.get("ChecksumSHA256")
        if remote_sum:
            if remote_sum.split("-")[0] != composite_b64:
                return False
            checked += 1
        remote_etag = _etag(head.get("ETag"))
        if _MD5_ETAG.match(remote_etag):  # SSE-KMS and some stores use other ETags
            if remote_etag != etag:
                return False
            checked += 1
        return checked > 0

    def _verify(self, key: str, size: int, composite_b64: str, etag: str) -> dict[str, Any]:
        head: dict[str, Any] = self._call(
            "head_object", Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
        )
        if head.get("ContentLength") != size or not self._matches(head, composite_b64, etag):
            raise BackupError(
                f"s3://{self.bucket}/{key}: the store's checksum does not match "
                f"(size {head.get('ContentLength')} vs {size}, ETag {head.get('ETag')} vs {etag}, "
                f"SHA-256 {head.get('ChecksumSHA256')} vs {composite_b64})"
            )
        return head

    def _put_single(
        self, path: Path, key: str, size: int, expected_sha256: str | None
    ) -> UploadResult:
        data = path.read_bytes()
        sha = hashlib.sha256(data)
        if expected_sha256 is not None and sha.hexdigest() != expected_sha256:
            raise LocalFileChanged(f"{path}: SHA-256 differs from the archive's record")
        checksum = _b64(sha.digest())
        self._call(
            "put_object",
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
            Metadata={"sha256": sha.hexdigest()},
        )
        head = self._verify(key, size, checksum, hashlib.md5(data).hexdigest())
        return UploadResult(
            key,
            size,
            sha.hexdigest(),
            _etag(head.get("ETag")),
            head.get("ChecksumSHA256"),
            parts_uploaded=[1],
        )

    def _put_multipart(
        self, path: Path, key: str, size: int, expected_sha256: str | None
    ) -> UploadResult:
        """Send ``path`` in parts (resuming an upload begun from this state folder), complete
        the object only from the archived bytes, and verify what the store made of it."""
        state, remote = self._open_multipart(key, size, expected_sha256)
        result = UploadResult(key, size, "", "", None)
        completed, composite, etag = self._send_parts(path, key, state, remote, result)
        if expected_sha256 is not None and result.sha256 != expected_sha256:
            # never complete an object from bytes that are not the archived ones
            self._abort(state)
            self._state_path(key).unlink(missing_ok=True)
            raise LocalFileChanged(f"{path}: SHA-256 differs from the archive's record")
        self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            UploadId=state["upload_id"],
            MultipartUpload={"Parts": completed},
        )
        head = self._verify(key, size, composite, etag)
        self._state_path(key).unlink(missing_ok=True)
        result.etag = _etag(head.get("ETag"))
        result.checksum_sha256 = head.get("ChecksumSHA256")
        log.info(
            "multipart upload verified",
            key=key,
            parts=len(completed),
            uploaded=len(result.parts_uploaded),
            reused=len(result.parts_reused),
        )
        return result

    def _open_multipart(
        self, key: str, size: int, expected_sha256: str | None
    ) -> tuple[dict[str, Any], dict[int, str]]:
        """The saved upload of ``key`` and the parts the store holds (number -> ETag), or a new
        upload with none: a saved one for another size or part size is aborted, one the store
        no longer knows (expired or aborted there) is started again."""
        from botocore.exceptions import ClientError

        state = self._load_state(key)
        if state and (state["size"] != size or state["part_size"] != self.part_size):
            self._abort(state)
            state = None
        if state:
            try:
                remote = self._list_parts(key, state["upload_id"])
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
            else:
                log.info("multipart upload resumed", key=key, parts_on_store=len(remote))
                return state, remote
        created = self._call(
            "create_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata={"sha256": expected_sha256} if expected_sha256 else {},
        )
        state = {
            "bucket": self.bucket,
            "key": key,
            "upload_id": created["UploadId"],
            "size": size,
            "part_size": self.part_size,
            "parts": {},
        }
        self._save_state(key, state)
        log.info("multipart upload started", key=key, size=size)
        return state, {}

    def _send_parts(
        self,
        path: Path,
        key: str,
        state: dict[str, Any],
        remote: Mapping[int, str],
        result: UploadResult,
    ) -> tuple[list[dict[str, Any]], str, str]:
        """Every part of ``path`` into the upload of ``state``, but those the store holds with
        the same MD5 (``remote``); each part goes into the state file once it is stored.

        Fills ``result``'s SHA-256 and part lists; returns the parts for
        ``complete_multipart_upload``, and the object's composite checksum and ETag.
        """
        whole = hashlib.sha256()
        completed, part_sha, part_md5 = [], [], []
        with open(path, "rb") as f:
            number = 0
            while chunk := f.read(self.part_size):
                number += 1
                whole.update(chunk)
                sha, md5 = hashlib.sha256(chunk).digest(), hashlib.md5(chunk).hexdigest()
                part_sha.append(sha)
                part_md5.append(bytes.fromhex(md5))
                if remote.get(number) == md5:  # the store holds exactly these bytes
                    result.parts_reused.append(number)
                    etag = remote[number]
                else:
                    etag = self._upload_part(key, state["upload_id"], number, chunk, sha, md5)
                    result.parts_uploaded.append(number)
                state["parts"][str(number)] = {"etag": etag, "sha256": sha.hex(), "md5": md5}
                self._save_state(key, state)
                completed.append(
                    {"PartNumber": number, "ETag": f'"{etag}"', "ChecksumSHA256": _b64(sha)}
                )
                if self.on_part is not None:
                    self.on_part(key, number)
        result.sha256 = whole.hexdigest()
        return completed, *_multipart_checksums(part_sha, part_md5)

    def _upload_part(
        self, key: str, upload_id: str, number: int, chunk: bytes, sha: bytes, md5: str
    ) -> str:
        """Send one part with its SHA-256 (the store checks it); returns its ETag, which must be
        the part's hex ``md5`` when it has the form of an MD5."""
        response = self._call(
            "upload_part",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=chunk,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(sha),
        )
        etag = _etag(response["ETag"])
        if _MD5_ETAG.match(etag) and etag != md5:
            raise BackupError(f"{key} part {number}: ETag {etag} is not MD5 {md5}")
        return etag

    def _list_parts(self, key: str, upload_id: str) -> dict[int, str]:
        parts: dict[int, str] = {}
        marker = 0
        while True:
            page = self._call(
                "list_parts",
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumberMarker=marker,
            )
            for p in page.get("Parts", []):
                parts[p["PartNumber"]] = _etag(p["ETag"])
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    # -- archived timelapses -----------------------------------------------------------------

    def backup_timelapse(
        self, archive: Archive, timelapse_id: int, now: datetime | None = None
    ) -> TimelapseRow:
        """Upload every file of an archived timelapse and its manifest, verify, then mark it
        backed up in the catalog. Returns the updated catalog row."""
        t = archive.catalog.timelapse(timelapse_id)
        if t is None:
            raise KeyError(timelapse_id)
        if t.deleted_at is not None:
            raise BackupError(f"timelapse {timelapse_id} was deleted on {t.deleted_at}")
        folder = archive.path_of(t)
        etags: dict[str, str] = {}
        entries = []
        for f in t.files:
            up = self.upload_file(
                folder / f.path, self.key_for(t.path, f.path), expected_sha256=f.sha256
            )
            etags[f.path] = up.etag
            entries.append({**f.to_json(), "etag": up.etag, "checksum_sha256": up.checksum_sha256})
        manifest = json.dumps(
            {
                "timelapse_id": t.id,
                "job_id": t.job_id,
                "sequence_id": t.sequence_id,
                "created_at": t.created_at.isoformat(),
                "size_bytes": t.size_bytes,
                "files": entries,
            },
            indent=1,
            sort_keys=True,
        ).encode()
        manifest_sha = hashlib.sha256(manifest).digest()
        manifest_key = self.key_for(t.path, "manifest.json")
        self._call(
            "put_object",
            Bucket=self.bucket,
            Key=manifest_key,
            Body=manifest,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(manifest_sha),
            ContentType="application/json",
        )
        self._verify(
            manifest_key, len(manifest), _b64(manifest_sha), hashlib.md5(manifest).hexdigest()
        )
        location = f"s3://{self.bucket}/{self.key_for(t.path)}/"
        archive.catalog.mark_timelapse_backed_up(
            t.id, now or datetime.now(UTC), location, manifest_sha.hex(), etags
        )
        log.info("timelapse backed up", timelapse=t.id, location=location, files=len(entries))
        backed = archive.catalog.timelapse(t.id)
        if backed is None:  # it was read above; only a concurrent delete of the row could do this
            raise KeyError(timelapse_id)
        return backed

    def backup_pending(self, archive: Archive) -> tuple[list[int], dict[int, str]]:
        """Back up every live timelapse not yet backed up, oldest first.

        Returns (ids backed up, {id: error} for those that failed); one failure does not stop
        the others.
        """
        done, failed = [], {}
        for t in archive.catalog.timelapses(backed_up=False):
            try:
                self.backup_timelapse(archive, t.id)
                done.append(t.id)
            except Exception as exc:
                failed[t.id] = f"{type(exc).__name__}: {exc}"
                log.error("timelapse backup failed", timelapse=t.id, error=str(exc))
        return done, failed
