"""``retain-ros console`` (and ``ros2 run retain_ros console``): the operator console's process.

One rclpy node (:class:`~retain_ros.ros.console.client.ConsoleClient`) spins on its own
executor thread; uvicorn serves the web app (:func:`~retain_ros.ros.console.app.create_app`) on
the main thread until Ctrl-C.
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
from typing import List
from typing import Optional

USAGE_EPILOG = """\
Keys on the page: s = start, y or Right = success, n or Left = failure, a = abort (not counted).
Bound to 127.0.0.1 (the default) only this machine can open it. Any other --host requires the
token printed at start (open the printed URL once; the page keeps it in a cookie). Every action
is logged with the client's address. Blind evaluations (the node's blind parameter) never show
the merge setting: labels only, no counts.
"""


def parse_args(argv: List[str]) -> argparse.Namespace:
    """Parse the console's own arguments (those before ``--ros-args``)."""
    parser = argparse.ArgumentParser(
        prog='retain-ros console', epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Operator console in the browser for evaluation episodes of the '
                    'retain_policy node (start, judge, abort, live counts, sequential status, '
                    'node state, camera).')
    parser.add_argument('--node', default='/retain_policy',
                        help='fully qualified name of the policy node (default %(default)s)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to bind (default %(default)s; any non-loopback address '
                             'requires the printed token)')
    parser.add_argument('--port', type=int, default=8765, help='TCP port (default %(default)s)')
    parser.add_argument('--camera', default='',
                        help="camera topic of the preview; default: the node's first "
                             "camera_topics entry; 'none' = no preview")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f'--port {args.port} is not a TCP port (1..65535)')
    return args


def split_ros_args(argv: List[str]):
    """Split ``argv`` into the console's arguments and the ``--ros-args ...`` tail."""
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        return argv[:i], argv[i:]
    return argv, []


def public_url(host: str, port: int, token: Optional[str]) -> str:
    """Return the URL to open (with the token when one is needed)."""
    shown = socket.gethostname() if host in ('0.0.0.0', '::', '') else host
    shown = f'[{shown}]' if ':' in shown else shown
    return f'http://{shown}:{port}/' + (f'?token={token}' if token else '')


def main(argv: Optional[List[str]] = None) -> int:
    """Run the console until Ctrl-C.

    :param argv: arguments without the program name, or None for ``sys.argv[1:]``.
    :return: exit status.
    """
    own, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = parse_args(own)
    import rclpy
    import uvicorn

    from retain_ros.ros.console.app import ConsoleService
    from retain_ros.ros.console.app import create_app
    from retain_ros.ros.console.client import ConsoleClient
    from retain_ros.ros.console.security import is_loopback
    from retain_ros.ros.console.security import new_token
    from retain_ros.ros.node_main import make_executor
    from retain_ros.ros.node_main import spin_in_background

    token = None if is_loopback(args.host) else new_token()
    rclpy.init(args=['retain_console', *ros_args])
    executor = make_executor()
    client = ConsoleClient(args.node, camera=args.camera)
    executor.add_node(client)
    spinner = spin_in_background(executor, 'console-ros')
    logger = client.get_logger()

    def look_up():
        client.refresh_tag()
        if not args.camera:
            client.lookup_camera()

    threading.Thread(target=look_up, name='console-lookup', daemon=True).start()
    service = ConsoleService(client, logger.info)
    app = create_app(service, token, logger.warning)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level='warning', access_log=False,
                                           timeout_graceful_shutdown=2))
    print(f'retain-ros console for {client.target}: {public_url(args.host, args.port, token)}',
          flush=True)
    if token:
        print('  (bound to a non-loopback address: every request needs this token)', flush=True)
    status = 0
    try:
        server.run()
    except SystemExit as exc:   # uvicorn could not listen (its error is logged above)
        print(f'retain-ros console: cannot serve on {args.host}:{args.port} (see above); '
              'choose another --port or --host', file=sys.stderr)
        status = int(exc.code or 1)
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        client.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == '__main__':
    sys.exit(main())
