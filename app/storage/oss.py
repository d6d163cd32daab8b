"""Alibaba Cloud OSS through oss2: signature V4 with region, timeouts, bounded retries with backoff."""

import logging
import time

import oss2

from app.config import Settings
from app.core.storage import ObjectInfo, ObjectNotFound, StorageFailure, StorageUnavailable

log = logging.getLogger(__name__)


class OssStorage:
    name = "oss"

    def __init__(self, settings: Settings):
        if not settings.oss_endpoint:
            raise StorageFailure(None, "COSYVOICE_OSS_ENDPOINT is not set (e.g. https://oss-cn-beijing.aliyuncs.com)")
        if settings.oss_access_key_id is None or settings.oss_access_key_secret is None:
            raise StorageFailure(None, "OSS credentials missing: set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET")
        auth = oss2.AuthV4(
            settings.oss_access_key_id.get_secret_value(), settings.oss_access_key_secret.get_secret_value()
        )
        self._bucket = oss2.Bucket(
            auth,
            settings.oss_endpoint,
            settings.oss_bucket,
            region=settings.oss_region,
            connect_timeout=settings.storage_timeout_seconds,
        )
        self._prefix = settings.oss_prefix.strip("/") + "/" if settings.oss_prefix.strip("/") else ""
        self._retries = settings.storage_retries
        self._where = f"OSS bucket {settings.oss_bucket!r} at {settings.oss_endpoint}"

    def _call(self, what: str, key: str, operation):
        """Run one oss2 call; 5xx answers and timeouts are retried with backoff, then reported as 503."""
        for attempt in range(self._retries + 1):
            try:
                return operation(self._prefix + key)
            except oss2.exceptions.NoSuchBucket:
                raise StorageFailure("storage", f"{self._where} does not exist") from None
            except oss2.exceptions.NotFound:
                raise ObjectNotFound(key) from None
            except oss2.exceptions.ServerError as exc:
                if exc.status < 500:
                    raise StorageFailure(
                        "storage", f"{self._where} refused to {what} {key!r} ({exc.status} {exc.code})"
                    ) from None
                problem = f"{exc.status} {exc.code}"
            except oss2.exceptions.RequestError as exc:
                problem = f"no answer: {type(exc.exception).__name__ if hasattr(exc, 'exception') else exc}"
            except oss2.exceptions.InconsistentError:  # CRC mismatch: the bytes were damaged on the way
                problem = "CRC mismatch"
            except oss2.exceptions.OssError as exc:
                raise StorageFailure(
                    "storage", f"{self._where} could not {what} {key!r} ({type(exc).__name__})"
                ) from None
            log.warning(
                "storage: %s %r failed (%s), attempt %d of %d", what, key, problem, attempt + 1, self._retries + 1
            )
            if attempt < self._retries:
                time.sleep(0.2 * 2**attempt)
        raise StorageUnavailable(
            "storage", f"{self._where} is unavailable ({what} {key!r}: {problem}); try again later"
        )

    def get(self, key: str) -> bytes:
        return self._call("read", key, lambda k: self._bucket.get_object(k).read())

    def put(self, key: str, data: bytes) -> None:
        # one PutObject: OSS stores it whole or not at all, and oss2 checks the CRC-64 of what arrived
        self._call("write", key, lambda k: self._bucket.put_object(k, data))

    def exists(self, key: str) -> bool:
        return self._call("check", key, self._bucket.object_exists)

    def delete(self, key: str) -> None:
        self._call("delete", key, self._bucket.delete_object)

    def list(self, prefix: str) -> list[str]:
        def listing(full_prefix: str) -> list[str]:
            return [item.key for item in oss2.ObjectIteratorV2(self._bucket, prefix=full_prefix)]

        return sorted(key[len(self._prefix) :] for key in self._call("list", prefix, listing))

    def stat(self, key: str) -> ObjectInfo:
        meta = self._call("inspect", key, self._bucket.get_object_meta)
        return ObjectInfo(key, int(meta.content_length), meta.etag, float(meta.last_modified or 0))
