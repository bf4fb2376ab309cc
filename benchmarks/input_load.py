"""The ``retain_policy`` node under a high input rate: chunks / s and input ages, idle vs loaded.

The measurement is :func:`retain_ros.ros.tools.input_load.run`: a publisher *process* (its own
rclpy context, as a camera driver would be) sends 224x224 rgb8 images and
``sensor_msgs/JointState`` messages, each stamped with the time it is published. The node (tiny
pi0 on CPU, one camera, trajectory output, 10 chunks / s nominal: ``control_period`` 0.05 s,
``replan_steps`` 2, ``max_observation_age`` 1 s) runs in this process on the executor its
``main()`` uses. Two phases, one run:

- **idle**: 20 Hz images, 50 Hz joint states;
- **loaded**: ``--image-hz`` images (default 100) and ``--joint-hz`` joint states (default 200),
  optionally with a CPU hog (``--hog``: one busy-looping process beside the node).

Per phase: chunks / s, the share of the phase the node held, the inputs' ages (the node's own
``age_s.*`` of ``/diagnostics``, sampled every 0.1 s: p50 / max), the age of the image and of the
observation at the start of every inference (``step_timings``: inference start minus the image's
header stamp / ``obs_time``; p50 / max), image messages published / delivered to the node's
callback / stored as the node's latest frame.

    .venv/bin/python benchmarks/input_load.py [--seconds 15] [--image-hz 100] [--joint-hz 200]
        [--hog] [--qos reliable|sensor] [--repeat 1]
"""
from __future__ import annotations

import argparse
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(101, 200)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

from retain_ros.ros.tools.input_load import describe  # noqa: E402
from retain_ros.ros.tools.input_load import run  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=15.0)
    parser.add_argument('--image-hz', type=float, default=100.0)
    parser.add_argument('--joint-hz', type=float, default=200.0)
    parser.add_argument('--hog', action='store_true', help='one busy-looping process beside')
    parser.add_argument('--qos', choices=('reliable', 'sensor'), default='reliable',
                        help="publisher QoS: reliable depth 10 (ros2 topic pub's) or sensor data")
    parser.add_argument('--repeat', type=int, default=1)
    parser.add_argument('--profile', action='store_true',
                        help='sample the threads\' stacks during the loaded phase')
    args = parser.parse_args(argv)
    for i in range(args.repeat):
        result = run(args.seconds, args.image_hz, args.joint_hz, args.hog, args.qos,
                     profile=args.profile)
        print(f'run {i + 1}/{args.repeat}', flush=True)
        for label, m in result.items():
            print('  ' + describe(label, m), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
