"""Ask every replica of the basketcast API to reload its model: POST /admin/reload on each address.

Run after retraining by the Kubernetes CronJob (mounted from the ``basketcast-reload`` ConfigMap)
and by the compose ``train`` job (bind-mounted). The URL's host name is resolved to all of its
addresses — a headless Kubernetes Service answers with one address per ready pod, a compose
service name with one per container — and each address gets the request, with the host name
kept in the ``Host`` header and ``Authorization: Bearer $BASKETCAST_ADMIN_TOKEN``. Each pod's
server then reloads all of its workers (``basketcast serve`` forwards SIGHUP to them).

    python reload_models.py --url http://basketcast-api-pods:8000/admin/reload

Exit status: 0 when every address answered 200 ("reloaded", "loaded" or "unchanged"); 1 when one
did not (a 409 means that pod refused the new run and keeps serving the old one); 2 when the
name resolves to no address. Standard library only: it runs in the training image.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import socket
import sys
import urllib.parse

TOKEN_ENV = "BASKETCAST_ADMIN_TOKEN"


def addresses(host: str, port: int) -> list[str]:
    """Every distinct IP address ``host`` resolves to (TCP), in resolver order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    seen: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


def reload_one(address: str, port: int, host_header: str, path: str, token: str, timeout: float) -> tuple[int, str]:
    """POST ``path`` to one address; (HTTP status, short body) or (0, the connection error)."""
    headers = {"Host": host_header, "Content-Length": "0", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("POST", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(2000).decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    """Reload every address of ``--url``; print one line per address; the exit status above."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/admin/reload (HOST may be a headless Service)")
    parser.add_argument("--timeout", type=float, default=30.0, help="Seconds per request (a reload maps a new run).")
    args = parser.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "http" or not url.hostname:
        parser.error(f"--url must be http://HOST[:PORT]/PATH, got {args.url!r}")
    port = url.port or 80
    path = url.path or "/admin/reload"
    host_header = url.netloc
    found = addresses(url.hostname, port)
    if not found:
        print(f"reload: {url.hostname} resolves to no address", file=sys.stderr)
        return 2
    token = os.environ.get(TOKEN_ENV, "").strip()
    failed = 0
    for address in found:
        status, body = reload_one(address, port, host_header, path, token, args.timeout)
        shown = f"[{address}]" if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address) else address
        try:
            detail = json.loads(body).get("status", body) if status == 200 else body
        except (ValueError, AttributeError):
            detail = body
        print(f"reload: {shown}:{port} -> {status or 'no answer'} {str(detail)[:300]}")
        failed += status != 200
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
