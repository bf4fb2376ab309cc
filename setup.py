"""ament_python package setup for retain_ros."""
from glob import glob
import os

from setuptools import find_packages
from setuptools import setup

package_name = 'retain_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'benchmarks']),
    # the shipped demo generalist (tiny pi0 checkpoint, LeRobot layout)
    package_data={'retain_ros.demo': ['pretrained/*.json', 'pretrained/*.safetensors',
                                      'pretrained/*.png', 'pretrained/tokenizer/*'],
                  # the operator console's page (retain-ros console)
                  'retain_ros.ros.console': ['static/*.html', 'static/*.js', 'static/*.css']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        (os.path.join('share', package_name, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', package_name, 'config'), glob('config/*.yaml')),
        (os.path.join('share', package_name, 'config', 'embodiments'),
         glob('config/embodiments/*.yaml')),
    ],
    python_requires='>=3.10',
    install_requires=[
        'setuptools',
        'numpy',
        'torch>=2.2',
        'safetensors>=0.4',
        'transformers>=5.0,<6',
        'tokenizers',
        'opencv-python-headless',
        'pyyaml',
        'tqdm',
        'blake3>=1.0',
        'matplotlib',
        # episode recording (rosbag2 layout, MCAP) and the LeRobot v3 export
        'mcap>=1.2',
        'mcap-ros2-support>=0.5',
        'pyarrow>=14',
        'pandas',
        # the operator console in the browser (retain-ros console)
        'fastapi',
        'uvicorn',
        'websockets',
    ],
    extras_require={
        # rclpy and the message packages from PyPI (Kilted wheels), for machines without a
        # ROS 2 install. On a robot with ROS 2 they come from the distribution instead.
        'ros-wheels': [
            'ros-rclpy', 'ros-rmw-fastrtps-cpp', 'ros-sensor-msgs', 'ros-std-msgs',
            'ros-std-srvs', 'ros-trajectory-msgs', 'ros-diagnostic-msgs', 'ros-rcl-interfaces',
            'ros-lifecycle-msgs', 'ros-geometry-msgs',
        ],
        'test': ['pytest<8.4', 'hypothesis', 'flake8', 'pydocstyle', 'rosbags>=0.10', 'datasets',
                 # the console's browser test (Debian chromium + chromium-driver, .ci/setup)
                 'selenium'],
        # the same for ROS 2 Jazzy (LTS; rclpy 7.x), in a virtual environment of its own
        # (.ci/setup jazzy -> .venv-jazzy): the two distributions' wheels cannot share one
        'ros-jazzy-wheels': [
            'ros-jazzy-rclpy[fastrtps]', 'ros-jazzy-sensor-msgs', 'ros-jazzy-std-msgs',
            'ros-jazzy-std-srvs', 'ros-jazzy-trajectory-msgs', 'ros-jazzy-diagnostic-msgs',
            'ros-jazzy-rcl-interfaces', 'ros-jazzy-lifecycle-msgs',
            'ros-jazzy-geometry-msgs',
        ],
    },
    zip_safe=False,
    maintainer='retain_ros maintainers',
    maintainer_email='retain-ros@example.org',
    description='RETAIN-style weight merging of VLA policies, on the robot, in ROS 2.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'retain-ros = retain_ros.cli:main',
            'policy_node = retain_ros.ros.policy_node.main:main',
            'sim_robot = retain_ros.ros.sim_robot.main:main',
            'console = retain_ros.ros.console.main:main',
        ],
    },
)
