"""The address phones use to join: built on the laptop's network address, and drawn as a QR code on the server."""

from __future__ import annotations

import ipaddress
import shlex
import socket
from functools import lru_cache
from urllib.parse import urlencode, urlsplit

import segno
from fastapi import Request

from app.config import DEFAULT_MODEL, Settings

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


def loopback_only(settings: Settings) -> bool:
    """Whether phones cannot reach this server at all: it listens on this machine's loopback only (the default
    of `python -m app`), and no DEEPDIVE_PUBLIC_URL says that something else (a proxy) brings them here."""
    return not settings.public_url and is_loopback(settings.host)


def start_command(settings: Settings) -> str:
    """The command that starts this server so that a classroom's phones can reach it (with the same model)."""
    model = "" if settings.model == str(DEFAULT_MODEL) else f" --model {shlex.quote(settings.model)}"
    return f"python -m app --host 0.0.0.0 --port {settings.port}{model}"


def base_url(request: Request, settings: Settings) -> str:
    """DEEPDIVE_PUBLIC_URL if set; else the address the request came to, unless that is this machine's own
    loopback (phones cannot reach 127.0.0.1), in which case the machine's network address on the same port,
    provided the server listens there (not when it listens on loopback only)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    url = urlsplit(str(request.base_url))
    host = url.hostname or "localhost"
    if is_loopback(host) and not loopback_only(settings):
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
