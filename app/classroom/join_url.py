"""The address phones use to join: built on the laptop's network address, and drawn as a QR code on the server."""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlencode, urlsplit

import segno
from fastapi import Request

from app.config import Settings

PROBE = ("192.0.2.1", 9)  # a documentation address: connecting a UDP socket to it sends nothing


def lan_address() -> str | None:
    """This machine's address on its network: the source address of a route outward (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(PROBE)
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback or address == "0.0.0.0" else address


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url(request: Request, settings: Settings) -> str:
    """DEEPDIVE_PUBLIC_URL if set; else the address the request came to, unless that is this machine's own
    loopback (phones cannot reach 127.0.0.1), in which case the machine's network address on the same port."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    url = urlsplit(str(request.base_url))
    host = url.hostname or "localhost"
    if is_loopback(host):
        host = lan_address() or host
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{host}{port}"


def join_url(request: Request, settings: Settings, code: str) -> str:
    return f"{base_url(request, settings)}/join?{urlencode({'code': code})}"


@lru_cache(maxsize=64)  # drawn again for every panel the teacher's steps refresh: one per session's address
def qr_svg(url: str) -> str:
    """The URL as an inline SVG QR code (attributes only: the page's CSP allows no style attributes)."""
    return segno.make(url, error="m").svg_inline(scale=1, border=2, omitsize=True, light="#fff",
                                                 svgclass="class-qr", title="QR code for the join address")
