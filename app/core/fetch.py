"""Prompt audio from a URL a client names, without letting the client aim this server at what it should not reach
(server-side request forgery): ``data:`` URLs are read in place; http(s) URLs only from hosts an operator allowed,
only at public addresses (unless allowed too), over a connection pinned to the address that was checked, with a
size and a time limit, following redirects only on the same host."""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote_to_bytes, urljoin, urlsplit

import httpx

from app.core.errors import Forbidden, Invalid, TooLarge
from app.core.voice_store import Upload

PARAM = "prompt_audio"
MAX_REDIRECTS = 3
MAX_URL_CHARS = 4096
# cloud metadata services at addresses the private/link-local rules do not cover: never fetched
METADATA = {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}


@dataclass(frozen=True)
class FetchPolicy:
    hosts: frozenset[str]  # host names (lowercase) whose URLs may be fetched
    private: bool  # whether those hosts may resolve to private or loopback addresses (never link-local)
    max_bytes: int
    timeout: float


async def fetch_audio(url: str, policy: FetchPolicy) -> Upload:
    url = url.strip()
    if url[:5].lower() == "data:":  # before urlsplit, whose cache would keep the last 128 URLs (megabytes each)
        return _data_url(url, policy.max_bytes)
    if len(url) > MAX_URL_CHARS:
        raise Invalid(PARAM, f"a URL of {len(url)} characters (at most {MAX_URL_CHARS}; a data: URL has no limit)")
    scheme = _split(url).scheme.lower()
    if scheme not in ("http", "https"):
        problem = f"{scheme or 'a relative'} URL is not fetched; send an http(s) URL or a data: URL"
        raise Invalid(PARAM, problem)
    try:
        async with (
            asyncio.timeout(policy.timeout),  # the whole fetch, redirects included: a trickling host ends here
            httpx.AsyncClient(follow_redirects=False, timeout=policy.timeout, trust_env=False) as client,
        ):
            return await _get(client, url, policy)
    except TimeoutError:
        raise Invalid(PARAM, f"the URL's file did not arrive within {policy.timeout:g} s") from None


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise Invalid(PARAM, f"not a valid URL ({exc})") from None
    return parts


async def _get(client: httpx.AsyncClient, url: str, policy: FetchPolicy, redirects: int = 0) -> Upload:
    parts = _split(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise Invalid(PARAM, "the URL names no host")
    if host not in policy.hosts:
        allowed = ", ".join(sorted(policy.hosts)) or "none"
        raise Forbidden(PARAM, f"{host} is not a host this server fetches from (COSYVOICE_FETCH_HOSTS: {allowed})")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await _public_address(host, port, policy.private)
    pinned = parts._replace(netloc=f"[{address}]:{port}" if ":" in address else f"{address}:{port}").geturl()
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        # identity: a compressed body would be inflated before its size is checked
        headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept-Encoding": "identity"}
        request = client.build_request("GET", pinned, headers=headers)
        request.extensions.update(extensions)
        response = await client.send(request, stream=True)
        try:
            if response.is_redirect:
                target = urljoin(url, response.headers.get("location", ""))
                elsewhere = (_split(target).hostname or "").lower()
                if elsewhere != host:
                    raise Forbidden(PARAM, f"{host} redirects to another host ({elsewhere}); not followed")
                if redirects >= MAX_REDIRECTS:
                    raise Invalid(PARAM, f"more than {MAX_REDIRECTS} redirects")
                return await _get(client, target, policy, redirects + 1)
            if response.status_code != 200:
                raise Invalid(PARAM, f"{host} answered {response.status_code} for the URL")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):  # httpx would inflate it before its size is known
                raise Invalid(PARAM, f"{host} sent the file {encoding}-encoded; only unencoded files are fetched")
            data = bytearray()
            async for chunk in response.aiter_raw():
                data += chunk
                if len(data) > policy.max_bytes:
                    raise TooLarge(PARAM, f"the URL's file is over {policy.max_bytes} bytes")
            return Upload(bytes(data), parts.path.rsplit("/", 1)[-1])
        finally:
            await response.aclose()
    except httpx.TimeoutException:
        raise Invalid(PARAM, f"{host} did not send the file within {policy.timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise Invalid(PARAM, f"{host} could not be fetched ({type(exc).__name__}: {exc})") from None


async def _public_address(host: str, port: int, private_allowed: bool) -> str:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Invalid(PARAM, f"{host} does not resolve ({exc.strerror})") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    for found in addresses:  # every address the name has, so no answer can slip a private one in
        address = _embedded_ipv4(found)
        if address.is_loopback:
            pass  # loopback is "reserved" for IPv6 (::1): it is judged with the private addresses below
        elif address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved:
            raise Forbidden(PARAM, f"{host} resolves to {found}, a link-local or reserved address")  # e.g. metadata
        if address in METADATA or found in METADATA:
            raise Forbidden(PARAM, f"{host} resolves to {found}, a cloud metadata address")
        if not address.is_global and not private_allowed:
            kind = "loopback" if address.is_loopback else "private"
            raise Forbidden(PARAM, f"{host} resolves to {found}, a {kind} address (COSYVOICE_FETCH_PRIVATE)")
    return str(addresses[0])


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """The IPv4 address an IPv6 one carries (mapped ::ffff:a.b.c.d, 6to4, NAT64): it is where packets go."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped or address.sixtofour:
            return address.ipv4_mapped or address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _data_url(url: str, max_bytes: int) -> Upload:
    header, comma, payload = url.partition(",")
    if not comma:
        raise Invalid(PARAM, "a data: URL without a comma")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise TooLarge(PARAM, f"the data: URL holds over {max_bytes} bytes")
    if header.lower().endswith(";base64"):
        return Upload.from_base64(url)
    return Upload(unquote_to_bytes(payload), "prompt")
