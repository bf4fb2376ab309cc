r"""Launch the ``retain_policy`` node.

    ros2 launch retain_ros policy.launch.py pretrained:=/ckpt/pi0_base finetuned:=/ckpt/pi0_task \
        alpha:=0.75 device:=cuda [tokenizer_path:=/ckpt/tokenizer] [keep_sources:=host] \
        [embodiment:=droid] [params_file:=my_robot.yaml] [namespace:=arm] \
        [console:=true] [console_host:=127.0.0.1] [console_port:=8765]

``params_file`` defaults to the installed ``share/retain_ros/config/policy.yaml``. Each of
``pretrained``, ``finetuned``, ``alpha``, ``device``, ``tokenizer_path``, ``keep_sources`` and
``embodiment`` (a preset name or an embodiment YAML file) overrides the parameter file only
when it is given (non-empty); ``finetuned`` takes several checkpoints separated by commas.
Alpha is the weight on the FINETUNED model: theta = (1 - alpha)*theta_pre + alpha*theta_ft.

``console:=true`` also starts the operator console (``console`` executable, the web page on
``console_host``:``console_port``; a non-loopback host prints the token it requires).

When the node exits with a non-zero status (it failed at startup: missing checkpoint, bad
parameter; the reason is in its log) or is killed by a crash signal, the whole launch is shut
down with that reason instead of running on without a policy; a stop signal (Ctrl-C) is none.
"""
import os
import signal

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.actions import LogInfo
from launch.actions import OpaqueFunction
from launch.actions import RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'retain_ros'


def default_params_file():
    """``share/retain_ros/config/policy.yaml``, or the source tree's copy when not installed."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = get_package_share_directory(PACKAGE)
    except (ImportError, LookupError, ValueError):
        share = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(share, 'config', 'policy.yaml')


def parameter_overrides(pretrained, finetuned, alpha, device, tokenizer_path='',
                        keep_sources='', embodiment=''):
    """Parameters given on the command line; empty arguments override nothing.

    :raises ValueError: when ``alpha`` is not a number.
    """
    overrides = {}
    if pretrained.strip():
        overrides['pretrained_path'] = pretrained.strip()
    paths = [p.strip() for p in finetuned.split(',') if p.strip()]
    if paths:
        overrides['finetuned_paths'] = paths
    if alpha.strip():
        overrides['alpha'] = float(alpha)
    if device.strip():
        overrides['device'] = device.strip()
    if tokenizer_path.strip():
        overrides['tokenizer_path'] = tokenizer_path.strip()
    if keep_sources.strip():
        overrides['keep_sources'] = keep_sources.strip()
    if embodiment.strip():
        overrides['embodiment'] = embodiment.strip()
    return overrides


class NodeFailed(RuntimeError):
    """The policy node exited with a non-zero status."""


#: signals that stop a process on request (Ctrl-C, ``ros2 launch``'s SIGINT / SIGTERM / SIGKILL
#: escalation, a closed terminal): the node was told to end, nothing failed
STOP_SIGNALS = ('SIGINT', 'SIGTERM', 'SIGKILL', 'SIGHUP', 'SIGQUIT')


def exit_signal(returncode):
    """Name of the signal that ended a process with ``returncode``, or None.

    A process killed by signal N has the returncode -N (Python's ``subprocess``, which ``launch``
    uses); a shell reports it as 128 + N (130 for SIGINT, 143 for SIGTERM).
    """
    if returncode is None or returncode == 0:
        return None
    number = -returncode if returncode < 0 else returncode - 128
    if not 0 < number < 65:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f'signal {number}'


def exit_kind(returncode):
    """Classify an exit status of the node.

    :return: ``'ok'`` (0, or still running), ``'stopped'`` (ended by a stop signal, see
        :data:`STOP_SIGNALS`), ``'crashed'`` (ended by another signal, e.g. SIGSEGV) or
        ``'failed'`` (a positive status that is no signal: the node could not start, e.g. a
        missing checkpoint or an invalid parameter).
    """
    if returncode in (0, None):
        return 'ok'
    name = exit_signal(returncode)
    if name is None:
        return 'failed'
    return 'stopped' if name in STOP_SIGNALS else 'crashed'


def is_startup_failure(returncode):
    """Whether ``returncode`` is the node's report of a startup failure (not a signal exit)."""
    return exit_kind(returncode) == 'failed'


def on_node_exit(event, context):
    """End the launch, with the reason, when the node failed at startup or crashed.

    A stop signal (Ctrl-C, the launch's own shutdown) is no failure: the launch goes on ending
    as it was. The launch service turns an exception raised by an action into its own exit status
    1 ("Caught exception in launch: <reason>"), so ``ros2 launch`` ends non-zero; a Shutdown event
    alone would end it with status 0.
    """
    kind = exit_kind(event.returncode)
    if kind in ('ok', 'stopped'):
        return None
    if kind == 'crashed':
        reason = (f'{event.action.name} was killed by {exit_signal(event.returncode)} '
                  f'(status {event.returncode}; a crash, see its log above)')
    else:
        reason = (f'{event.action.name} exited with status {event.returncode} (see its log '
                  'above for why: a startup failure, e.g. a missing checkpoint or an invalid '
                  'parameter)')

    def fail(context):
        raise NodeFailed(reason)

    return [LogInfo(msg=f'retain_ros: {reason}; ending the launch'),
            OpaqueFunction(function=fail)]


def _policy_node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    parameters = []
    params_file = arg('params_file')
    if params_file:
        parameters.append(params_file)
    overrides = parameter_overrides(arg('pretrained'), arg('finetuned'), arg('alpha'),
                                    arg('device'), arg('tokenizer_path'), arg('keep_sources'),
                                    arg('embodiment'))
    if overrides:
        parameters.append(overrides)
    node = Node(
        package='retain_ros',
        executable='policy_node',
        name='retain_policy',
        namespace=arg('namespace'),
        parameters=parameters,
        output='screen',
        emulate_tty=True,
    )
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                        on_exit=on_node_exit))]
    if arg('console').strip().lower() in ('true', '1', 'yes', 'on'):
        actions.append(console_node(arg('namespace'), arg('console_host'), arg('console_port')))
    return actions


def console_arguments(namespace, host, port):
    """Command-line arguments of the console for the policy node in ``namespace``."""
    target = '/' + '/'.join(p for p in (namespace.strip('/'), 'retain_policy') if p)
    return ['--node', target, '--host', host.strip() or '127.0.0.1',
            '--port', port.strip() or '8765']


def console_node(namespace, host, port):
    """Return the operator console's process (it talks to the node over ROS only)."""
    return Node(
        package='retain_ros',
        executable='console',
        name='retain_console',
        namespace=namespace,
        arguments=console_arguments(namespace, host, port),
        output='screen',
        emulate_tty=True,
    )


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'pretrained', default_value='',
            description='pretrained (generalist) checkpoint; empty = params_file / demo'),
        DeclareLaunchArgument(
            'finetuned', default_value='',
            description='finetuned checkpoint(s), comma separated; empty = params_file / demo'),
        DeclareLaunchArgument(
            'alpha', default_value='',
            description='weight on the FINETUNED model in [0, 1]; empty = params_file'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='auto | cpu | cuda | cuda:N; empty = params_file'),
        DeclareLaunchArgument(
            'tokenizer_path', default_value='',
            description='local tokenizer dir or tokenizer.json; empty = params_file / next to '
                        'the checkpoint'),
        DeclareLaunchArgument(
            'keep_sources', default_value='',
            description='auto | device | host | disk: where the two checkpoints stay for live '
                        'alpha changes (auto: the fastest that fits); empty = params_file'),
        DeclareLaunchArgument(
            'embodiment', default_value='',
            description='what the state and actions mean on this robot: joints | droid | aloha '
                        '| so101 | servo_ee | a YAML file; empty = params_file'),
        DeclareLaunchArgument(
            'params_file', default_value=default_params_file(),
            description='ROS parameter file of the node'),
        DeclareLaunchArgument(
            'namespace', default_value='', description='namespace of the node'),
        DeclareLaunchArgument(
            'console', default_value='false',
            description='true: also start the operator console in the browser (retain-ros '
                        'console)'),
        DeclareLaunchArgument(
            'console_host', default_value='127.0.0.1',
            description='address the console binds; any non-loopback one requires the token '
                        'it prints'),
        DeclareLaunchArgument(
            'console_port', default_value='8765', description='TCP port of the console'),
        OpaqueFunction(function=_policy_node),
    ])
