"""Access control of the operator console: loopback by default, a token on any other address.

- Bound to a loopback address (the default ``127.0.0.1``) the console needs no token, but every
  request must name a loopback host (``Host`` header: a DNS-rebinding page cannot reach it) and
  a request sent by another site's page (``Origin`` of another host) is refused, so a web page
  open in the operator's browser cannot press the buttons.
- Bound to any other address, every HTTP and websocket request must carry the token printed at
  start: ``?token=...``, the header ``X-Console-Token`` (or ``Authorization: Bearer ...``) or the
  cookie the console sets after the first request with a valid ``?token=``. Otherwise: 403.
"""
from __future__ import annotations

import ipaddress
import secrets
from typing import Callable
from typing import Dict
from typing import Optional
from urllib.parse import parse_qs
from urllib.parse import urlsplit

#: name of the cookie that carries the token after the first request
COOKIE = 'retain_console_token'
#: header that carries the token
HEADER = 'x-console-token'
_LOOPBACK_NAMES = ('localhost', 'localhost.localdomain', 'ip6-localhost')


def new_token() -> str:
    """Return a fresh random token (URL-safe, 32 bytes of entropy)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Return True when ``host`` (a name or an address) is a loopback interface."""
    name = host.strip().strip('[]').lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    """Return the host part of a ``Host`` header or an origin URL (without port)."""
    netloc = urlsplit(value).netloc if '://' in value else value
    if netloc.startswith('['):
        return netloc[1:netloc.find(']')] if ']' in netloc else netloc
    return netloc.rsplit(':', 1)[0] if netloc.count(':') == 1 else netloc


def _headers(scope) -> Dict[str, str]:
    return {k.decode('latin-1').lower(): v.decode('latin-1') for k, v in scope.get('headers', [])}


def _cookie(header: str, name: str) -> Optional[str]:
    for part in header.split(';'):
        key, _, value = part.strip().partition('=')
        if key == name:
            return value
    return None


def request_token(scope) -> Optional[str]:
    """Return the token a request carries (query, header, bearer or cookie), or None."""
    query = parse_qs(scope.get('query_string', b'').decode('latin-1'))
    if query.get('token'):
        return query['token'][0]
    headers = _headers(scope)
    if headers.get(HEADER):
        return headers[HEADER]
    auth = headers.get('authorization', '')
    if auth.lower().startswith('bearer '):
        return auth[7:].strip()
    return _cookie(headers.get('cookie', ''), COOKIE)


class AccessControl:
    """ASGI middleware: the rules of this module in front of ``app``.

    :param app: the ASGI application.
    :param token: the required token, or None when bound to loopback (then the ``Host`` and
        ``Origin`` rules apply instead).
    :param log: called with a line for every refused request.
    """

    def __init__(self, app, token: Optional[str], log: Callable[[str], None] = print):
        self.app = app
        self.token = token
        self.log = log

    def refusal(self, scope) -> Optional[str]:
        """Return why the request ``scope`` is refused, or None when it may pass."""
        headers = _headers(scope)
        origin = headers.get('origin')
        host = headers.get('host', '')
        if self.token is None:
            if not is_loopback(_host_name(host)):
                return f'Host {host!r} is not a loopback name'
            if origin and origin != 'null' and not is_loopback(_host_name(origin)):
                return f'request from another site ({origin})'
            return None
        given = request_token(scope)
        if given is None:
            return 'no token (open the URL printed at start, with ?token=...)'
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return 'wrong token'
        if origin and origin != 'null' and _host_name(origin) != _host_name(host):
            return f'request from another site ({origin})'
        return None

    async def __call__(self, scope, receive, send):
        """Refuse (403) or pass the request on; set the token cookie after a ``?token=``."""
        if scope['type'] not in ('http', 'websocket'):
            return await self.app(scope, receive, send)
        reason = self.refusal(scope)
        client = scope.get('client') or ('?', 0)
        if reason is not None:
            self.log(f'refused {scope["type"]} {scope.get("path")} from {client[0]}:{client[1]}:'
                     f' {reason}')
            if scope['type'] == 'websocket':
                # closing before accepting makes the server answer the handshake with 403
                await send({'type': 'websocket.close', 'code': 1008})
                return None
            body = f'403 forbidden: {reason}\n'.encode()
            await send({'type': 'http.response.start', 'status': 403,
                        'headers': [(b'content-type', b'text/plain; charset=utf-8'),
                                    (b'content-length', str(len(body)).encode())]})
            await send({'type': 'http.response.body', 'body': body})
            return None
        query = parse_qs(scope.get('query_string', b'').decode('latin-1'))
        if self.token is None or scope['type'] != 'http' or not query.get('token'):
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message['type'] == 'http.response.start':
                cookie = f'{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict'
                message = dict(message)
                message['headers'] = list(message.get('headers', [])) + [
                    (b'set-cookie', cookie.encode())]
            await send(message)

        return await self.app(scope, receive, send_with_cookie)
