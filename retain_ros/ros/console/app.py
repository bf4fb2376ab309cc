"""The console's web app (FastAPI): the page, its JSON API, the camera frame and the websocket.

Routes (all behind :class:`~retain_ros.ros.console.security.AccessControl`):

- ``GET /`` the page; ``GET /static/...`` its script and style;
- ``GET /api/state`` the view (:func:`~retain_ros.ros.console.view.build_view`);
- ``POST /api/action`` ``{"action": "start" | "success" | "failure" | "abort"}``;
- ``POST /api/tag`` ``{"tag": "split=...;task=..."}`` sets the node's ``episode_tag``;
- ``GET /camera.jpg`` the newest camera frame (204 before the first);
- ``WS /ws`` the view again whenever it changes.

Every action is logged with the client's address (the node's logger and the view's action list).
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional

from fastapi import FastAPI
from fastapi import Request
from fastapi import WebSocket
from fastapi import WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.responses import JSONResponse
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from retain_ros.ros.console.security import AccessControl
from retain_ros.ros.console.view import build_view
from retain_ros.ros.console.view import is_blind
from retain_ros.ros.console.view import reply_text

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
#: seconds between two checks of the view for a websocket (it is sent only when it changed)
PUSH_PERIOD = 0.1
#: most recent actions shown on the page
ACTION_HISTORY = 12
MAX_TAG_CHARS = 512


class ConsoleService:
    """The console's state between the ROS client and the web app.

    :param client: the :class:`~retain_ros.ros.console.client.ConsoleClient` (or any object
        with its ``target``, ``camera_topic``, ``preview``, ``snapshot()``, ``call_action()``,
        ``set_tag()``).
    :param log: called with one line per action (client address, action, result).
    """

    def __init__(self, client, log: Callable[[str], None]):
        self.client = client
        self.log = log
        self._lock = threading.Lock()
        self._last: Optional[Dict[str, Any]] = None
        self._actions: collections.deque = collections.deque(maxlen=ACTION_HISTORY)

    def blind(self) -> bool:
        """Whether the evaluation is blind now (unknown counts as blind)."""
        evaluation, merge, _, _ = self.client.snapshot()
        return is_blind(evaluation, merge)

    def view(self) -> Dict[str, Any]:
        """Return the page's view now."""
        evaluation, merge, diagnostics, tag = self.client.snapshot()
        with self._lock:
            last, actions = self._last, list(self._actions)
        camera = self.client.camera_topic if self.client.preview.has_frame else None
        return build_view(self.client.target, evaluation, merge, diagnostics, tag, camera,
                          last, actions)

    def record(self, who: str, action: str, ok: bool, message: Any) -> Dict[str, Any]:
        """Log one action and keep it for the page; return the page's copy of the result."""
        blind = self.blind()
        shown = reply_text(message, blind) if isinstance(message, str) else message
        entry = {'time': time.strftime('%H:%M:%S'), 'client': who, 'action': action,
                 'ok': bool(ok)}
        result = {'action': action, 'ok': bool(ok), 'message': shown}
        with self._lock:
            self._last = result
            self._actions.appendleft(entry)
        # the log may show what the node replied unless blind (then the page's scrubbed copy)
        text = message if not blind else json.dumps(shown)
        self.log(f'action {action} from {who}: {"ok" if ok else "refused"}: {text}')
        return result

    async def action(self, who: str, action: str) -> Dict[str, Any]:
        """Run ``action`` (``start``, ``success``, ``failure``, ``abort``) for client ``who``."""
        ok, message = await asyncio.to_thread(self.client.call_action, action)
        return self.record(who, action, ok, message)

    async def tag(self, who: str, tag: str) -> Dict[str, Any]:
        """Set the node's ``episode_tag`` to ``tag`` for client ``who``."""
        ok, reason = await asyncio.to_thread(self.client.set_tag, tag)
        return self.record(who, 'tag', ok, reason or f'episode_tag = {tag!r}')


def _who(connection) -> str:
    client = connection.client
    return f'{client.host}:{client.port}' if client else '?'


async def _json_body(request: Request) -> Dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def create_app(service: ConsoleService, token: Optional[str] = None,
               log: Callable[[str], None] = print) -> AccessControl:
    """Return the console's ASGI app.

    :param service: the :class:`ConsoleService`.
    :param token: the token every request must carry (None: loopback rules, see
        :mod:`~retain_ros.ros.console.security`).
    :param log: where refused requests are logged.
    """
    app = FastAPI(title='retain_ros console', docs_url=None, redoc_url=None, openapi_url=None)
    app.mount('/static', StaticFiles(directory=STATIC_DIR), name='static')
    no_store = {'Cache-Control': 'no-store'}

    @app.get('/')
    async def index():
        return FileResponse(os.path.join(STATIC_DIR, 'index.html'), headers=no_store)

    @app.get('/api/state')
    async def state():
        return JSONResponse(service.view(), headers=no_store)

    @app.post('/api/action')
    async def action(request: Request):
        name = str((await _json_body(request)).get('action', ''))
        if name not in ('start', 'success', 'failure', 'abort'):
            return JSONResponse({'ok': False, 'message': f'unknown action {name!r}; one of '
                                 'start, success, failure, abort'}, status_code=400)
        return JSONResponse(await service.action(_who(request), name))

    @app.post('/api/tag')
    async def tag(request: Request):
        value = (await _json_body(request)).get('tag')
        if not isinstance(value, str) or len(value) > MAX_TAG_CHARS:
            return JSONResponse({'ok': False, 'message': 'tag must be a string of at most '
                                 f'{MAX_TAG_CHARS} characters'}, status_code=400)
        return JSONResponse(await service.tag(_who(request), value.strip()))

    @app.get('/camera.jpg')
    async def camera():
        data = await asyncio.to_thread(service.client.preview.jpeg)
        if data is None:
            return Response(status_code=204, headers=no_store)
        return Response(data, media_type='image/jpeg', headers=no_store)

    @app.websocket('/ws')
    async def updates(websocket: WebSocket):
        await websocket.accept()
        sent = None
        try:
            while True:
                text = json.dumps(service.view(), sort_keys=True)
                if text != sent:
                    await websocket.send_text(text)
                    sent = text
                await asyncio.sleep(PUSH_PERIOD)
        except WebSocketDisconnect:
            return
        except Exception:  # noqa: B902 - the page went away (the error type depends on the
            return         # websocket implementation uvicorn uses)

    return AccessControl(app, token, log)
