"""A small in-process server speaking the Alibaba Cloud OSS protocol, for tests that drive the real oss2 client.

It serves one bucket over path-style URLs (``http://127.0.0.1:PORT/<bucket>/<key>``, which oss2 uses for IP endpoints),
verifies V1 (``oss2.Auth``) and V4 (``oss2.AuthV4``) request signatures, and implements the object calls a storage
layer needs: put, get (with Range), head, get_object_meta, delete and ListObjects v1/v2.  Failures and slow answers
can be injected with ``fail_next``, ``stall_next`` and ``drop_next``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

# CRC-64/XZ (ECMA-182 polynomial, reflected, init and xorout all ones), which OSS reports as x-oss-hash-crc64ecma.
_CRC64_POLY = 0xC96C5795D7870F42
_CRC64_MASK = 0xFFFFFFFFFFFFFFFF


def _crc64_entry(crc: int) -> int:
    for _ in range(8):
        crc = (crc >> 1) ^ _CRC64_POLY if crc & 1 else crc >> 1
    return crc


_CRC64_TABLE = [_crc64_entry(byte) for byte in range(256)]


def crc64_ecma(data: bytes) -> int:
    crc = _CRC64_MASK
    for byte in data:
        crc = _CRC64_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _CRC64_MASK


# Query parameters that take part in a V1 signature: oss2's list has many more, these are the ones served here.
_RESPONSE_PARAMS = {f"response-content-{h}" for h in ("type", "language", "encoding", "disposition")}
_RESPONSE_PARAMS |= {"response-cache-control", "response-expires"}
_V1_SUBRESOURCES = {"objectMeta", "continuation-token", *_RESPONSE_PARAMS}
_V4_SIGNED = ["content-type", "content-md5"]  # besides x-oss-* and the AdditionalHeaders
_LIST_PARAMS = {"prefix", "marker", "max-keys", "delimiter", "encoding-type", "list-type", "continuation-token"}
_LIST_PARAMS |= {"start-after", "fetch-owner"}
_FAIL_CODES = {500: "InternalError", 503: "ServiceUnavailable", 403: "AccessDenied", 429: "TooManyRequests"}
_BAD_SIGNATURE = (403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
_BAD_AK = (403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.")
Reply = tuple[int, dict[str, str], bytes]


class OssRequest(NamedTuple):
    method: str
    key: str  # decoded object key, "" for bucket-level requests
    query: dict[str, str]


@dataclass
class _Object:
    data: bytes
    content_type: str = "application/octet-stream"
    meta: dict[str, str] = field(default_factory=dict)  # x-oss-meta-* headers
    mtime: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        md5 = hashlib.md5(self.data).digest()
        self.etag, self.content_md5 = f'"{md5.hex().upper()}"', base64.b64encode(md5).decode()
        self.crc = str(crc64_ecma(self.data))

    def headers(self) -> dict[str, str]:
        return {
            "ETag": self.etag,
            "Last-Modified": formatdate(self.mtime, usegmt=True),
            "x-oss-hash-crc64ecma": self.crc,
            "x-oss-object-type": "Normal",
            "x-oss-storage-class": "Standard",
            **self.meta,
        }


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = str(text)
    return node


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


class OssServer:
    def __init__(
        self,
        access_key_id: str = "test-ak",
        access_key_secret: str = "test-sk",
        bucket: str = "learn-wave",
        region: str = "cn-beijing",
    ) -> None:
        self.access_key_id, self.access_key_secret = access_key_id, access_key_secret
        self.bucket, self.region = bucket, region
        self._lock = threading.Lock()
        self._objects: dict[str, _Object] = {}
        self._requests: list[OssRequest] = []
        self._fail_left, self._fail_status = 0, 500
        self._stall_left, self._stall_seconds = 0, 0.0
        self._drop_left = 0
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    # -- test API ------------------------------------------------------------------------------------------------

    def __enter__(self) -> OssServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.oss = self  # type: ignore[attr-defined]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # wakes stalled handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "use OssServer as a context manager"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def objects(self) -> dict[str, bytes]:
        with self._lock:
            return {key: obj.data for key, obj in self._objects.items()}

    @property
    def requests(self) -> list[OssRequest]:
        with self._lock:
            return list(self._requests)

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with an OSS error of this HTTP status (0 cancels)."""
        with self._lock:
            self._fail_left, self._fail_status = n, status

    def stall_next(self, n: int, seconds: float = 5.0) -> None:
        """Hold the next ``n`` requests this long, then serve them normally (0 cancels)."""
        with self._lock:
            self._stall_left, self._stall_seconds = n, seconds

    def drop_next(self, n: int) -> None:
        """Close the connection of the next ``n`` requests without an answer (0 cancels)."""
        with self._lock:
            self._drop_left = n

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._lock:
            self._objects[key] = _Object(bytes(data), content_type)

    def get(self, key: str) -> bytes:
        with self._lock:
            return self._objects[key].data

    # -- request handling ----------------------------------------------------------------------------------------

    def _handle(
        self, method: str, bucket: str, key: str, params: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Reply:
        with self._lock:
            self._requests.append(OssRequest(method, key, params))
            stall = self._stall_seconds if self._stall_left > 0 else 0.0
            fail = self._fail_status if self._fail_left > 0 else 0
            self._stall_left, self._fail_left = max(self._stall_left - 1, 0), max(self._fail_left - 1, 0)
            drop, self._drop_left = self._drop_left > 0, max(self._drop_left - 1, 0)
        if drop:
            return 0, {}, b""  # no answer: the handler closes the connection
        if stall:
            self._closing.wait(stall)
        if fail:
            return self._error(fail, _FAIL_CODES.get(fail, "InternalError"), "Injected failure.")
        if bucket != self.bucket:
            return self._error(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket)
        operation = self._route(method, key, params)
        if operation is None:  # answered before the signature check, whose sub-resource list covers only what is served
            return self._error(501, "NotImplemented", f"{method} {sorted(params)} is not supported by the test server.")
        return self._verify(method, bucket, key, params, headers) or operation(key, params, headers, body)

    def _route(self, method: str, key: str, params: dict[str, str]) -> Callable[..., Reply] | None:
        names = set(params)
        if not key:
            return self._list if method == "GET" and names <= _LIST_PARAMS else None
        if names == {"objectMeta"}:
            return self._get_meta if method == "HEAD" else None
        if names and not (method == "GET" and names <= _RESPONSE_PARAMS):
            return None
        return {"PUT": self._put, "GET": self._get, "HEAD": self._get, "DELETE": self._delete}.get(method)

    def _error(self, status: int, code: str, message: str, **extra: str) -> Reply:
        request_id = uuid.uuid4().hex[:24].upper()
        root = ET.Element("Error")
        for tag, text in (("Code", code), ("Message", message), ("RequestId", request_id), ("HostId", "127.0.0.1")):
            _sub(root, tag, text)
        for tag, text in extra.items():
            _sub(root, tag, text)
        body = _xml(root)
        # HEAD answers have no body, so OSS repeats the error document base64-encoded in x-oss-err.
        headers = {"Content-Type": "application/xml", "x-oss-request-id": request_id}
        return status, headers | {"x-oss-err": base64.b64encode(body).decode()}, body

    def _verify(self, method: str, bucket: str, key: str, params: dict, headers: dict) -> Reply | None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme == "OSS":
            ak, _, given = credentials.rpartition(":")
            if ak != self.access_key_id:
                return self._error(*_BAD_AK)
            expected = self._sign_v1(method, f"/{bucket}/{key}", params, headers)
        elif scheme == "OSS4-HMAC-SHA256":
            fields = dict(part.strip().partition("=")[::2] for part in credentials.split(","))
            ak, _, scope = fields.get("Credential", "").partition("/")
            if ak != self.access_key_id:
                return self._error(*_BAD_AK)
            if scope.split("/") != [headers.get("x-oss-date", "")[:8], self.region, "oss", "aliyun_v4_request"]:
                return self._error(400, "InvalidArgument", f"Invalid credential scope {scope!r}.")
            additional = sorted(h.lower() for h in fields.get("AdditionalHeaders", "").split(";") if h)
            given = fields.get("Signature", "")
            expected = self._sign_v4(method, f"/{bucket}/{key}", params, headers, scope, additional)
        else:
            return self._error(403, "AccessDenied", "Anonymous access is forbidden for this operation.")
        return None if hmac.compare_digest(expected, given) else self._error(*_BAD_SIGNATURE)

    def _sign_v1(self, method: str, resource: str, params: dict[str, str], headers: dict[str, str]) -> str:
        subresources = sorted((k, v) for k, v in params.items() if k in _V1_SUBRESOURCES)
        if subresources:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subresources)
        oss_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-oss-"))
        date = headers.get("x-oss-date") or headers.get("date", "")
        lines = [method, headers.get("content-md5", ""), headers.get("content-type", ""), date, oss_headers + resource]
        digest = hmac.new(self.access_key_secret.encode(), "\n".join(lines).encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def _sign_v4(self, method: str, resource: str, params: dict, headers: dict, scope: str, additional: list) -> str:
        signed = [(k, v) for k, v in sorted(headers.items()) if k.startswith("x-oss-") or k in _V4_SIGNED + additional]
        query = sorted((quote(k, safe=""), quote(v, safe="")) for k, v in params.items())
        canonical_request = "\n".join(
            [
                method,
                quote(resource, safe="/"),
                "&".join(f"{k}={v}" if v else k for k, v in query),
                "".join(f"{k}:{v}\n" for k, v in signed),
                ";".join(additional),
                headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
            ]
        )
        hashed = hashlib.sha256(canonical_request.encode()).hexdigest()
        string_to_sign = f"OSS4-HMAC-SHA256\n{headers.get('x-oss-date')}\n{scope}\n{hashed}"
        signing_key = ("aliyun_v4" + self.access_key_secret).encode()
        for part in scope.split("/"):  # date, region, product, "aliyun_v4_request"
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        return hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    def _put(self, key: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        obj = _Object(body, headers.get("content-type") or "application/octet-stream")
        obj.meta = {k: v for k, v in headers.items() if k.startswith("x-oss-meta-")}
        if "content-md5" in headers and headers["content-md5"] != obj.content_md5:
            return self._error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        with self._lock:
            self._objects[key] = obj
        return 200, {"ETag": obj.etag, "x-oss-hash-crc64ecma": obj.crc, "Content-MD5": obj.content_md5}, b""

    def _lookup(self, key: str) -> _Object | Reply:
        with self._lock:
            obj = self._objects.get(key)
        return obj or self._error(404, "NoSuchKey", "The specified key does not exist.", Key=key)

    def _get(self, key: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> Reply:
        obj = self._lookup(key)
        if not isinstance(obj, _Object):
            return obj
        size = len(obj.data)
        reply = {"Content-Type": obj.content_type, "Accept-Ranges": "bytes", **obj.headers()}
        reply |= {k[len("response-") :].title(): v for k, v in params.items()}
        window = _parse_range(headers.get("range", ""), size)
        if window is None:
            if headers.get("range") and headers.get("x-oss-range-behavior") == "standard":
                return self._error(416, "InvalidRange", "The requested range cannot be satisfied.")
            return 200, reply, obj.data
        start, end = window
        return 206, reply | {"Content-Range": f"bytes {start}-{end}/{size}"}, obj.data[start : end + 1]

    def _get_meta(self, key: str, *_: object) -> Reply:
        status, headers, data = self._get(key, {}, {}, b"")
        names = ("ETag", "Last-Modified", "x-oss-hash-crc64ecma", "x-oss-request-id", "x-oss-err")
        # Only ever answers a HEAD, so the data is not sent: it just sets Content-Length.
        return status, {k: v for k, v in headers.items() if k in names}, data

    def _delete(self, key: str, *_: object) -> Reply:
        with self._lock:
            self._objects.pop(key, None)
        return 204, {}, b""

    def _list(self, _key: str, params: dict[str, str], *_: object) -> Reply:
        v2 = params.get("list-type") == "2"
        prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
        try:
            max_keys = int(params.get("max-keys") or 100)
            token = params.get("continuation-token", "")
            after = base64.urlsafe_b64decode(token).decode() if token else ""
        except (ValueError, binascii.Error):
            return self._error(400, "InvalidArgument", "Bad max-keys or continuation-token.")
        if not 0 < max_keys <= 1000:
            return self._error(400, "InvalidArgument", "max-keys must be between 1 and 1000.")
        after = (after or params.get("start-after", "")) if v2 else params.get("marker", "")
        with self._lock:
            listed = sorted(self._objects.items())
        contents: list[tuple[str, _Object]] = []
        prefixes: list[str] = []
        last, truncated = "", False
        for key, obj in listed:
            if not key.startswith(prefix) or key <= after:
                continue
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            item = key[: cut + len(delimiter)] if cut >= 0 else key
            if item == last or item <= after:  # a common prefix already listed, here or on an earlier page
                continue
            if len(contents) + len(prefixes) == max_keys:
                truncated = True
                break
            if cut >= 0:
                prefixes.append(item)
            else:
                contents.append((key, obj))
            last = item

        url_encoded = params.get("encoding-type") == "url"  # oss2 always asks for it: keys may hold any character
        encode = (lambda s: quote(s, safe="")) if url_encoded else (lambda s: s)
        next_token = base64.urlsafe_b64encode(last.encode()).decode() if v2 else encode(last)
        root = ET.Element("ListBucketResult")
        for tag, text in (
            ("Name", self.bucket),
            ("Prefix", encode(prefix)),
            ("Marker", None if v2 else encode(after)),
            ("ContinuationToken", params.get("continuation-token") if v2 else None),
            ("StartAfter", encode(params["start-after"]) if v2 and params.get("start-after") else None),
            ("MaxKeys", max_keys),
            ("Delimiter", encode(delimiter)),
            ("EncodingType", "url" if url_encoded else None),
            ("IsTruncated", str(truncated).lower()),
            ("NextContinuationToken" if v2 else "NextMarker", next_token if truncated else None),
            ("KeyCount", len(contents) + len(prefixes) if v2 else None),
        ):
            if text is not None:
                _sub(root, tag, text)
        for key, obj in contents:
            node = _sub(root, "Contents")
            _sub(node, "Key", encode(key))
            _sub(node, "LastModified", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(obj.mtime)))
            for tag, text in (("ETag", obj.etag), ("Type", "Normal"), ("Size", len(obj.data))):
                _sub(node, tag, text)
            _sub(node, "StorageClass", "Standard")
            if not v2 or params.get("fetch-owner") == "true":
                owner = _sub(node, "Owner")
                _sub(owner, "ID", self.access_key_id)
                _sub(owner, "DisplayName", self.access_key_id)
        for item in prefixes:
            _sub(_sub(root, "CommonPrefixes"), "Prefix", encode(item))
        return 200, {"Content-Type": "application/xml"}, _xml(root)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as an inclusive (start, end), None if absent or unsatisfiable."""
    first, dash, last = value.removeprefix("bytes=").partition("-")
    if not value.startswith("bytes=") or not dash or "," in value:
        return None
    try:
        if not first:
            start, end = size - int(last), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return (max(start, 0), end) if start <= end and start < size else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms delayed-ACK stalls

    def version_string(self) -> str:
        return "AliyunOSS"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # a client that timed out (see stall_next) and hung up
            super().handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, reply, payload = self.server.oss._handle(  # type: ignore[attr-defined]
            self.command, unquote(bucket), unquote(key), params, headers, self._read_body()
        )
        if status == 0:
            self.close_connection = True
            return
        self.send_response(status)
        reply.setdefault("x-oss-request-id", uuid.uuid4().hex[:24].upper())
        for name, value in reply.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _dispatch
