"""Evaluation rollouts: episode logs, alpha schedules, Wilson intervals, reports (no ROS)."""
from retain_ros.evaluation.episodes import EpisodeError
from retain_ros.evaluation.episodes import EpisodeRecorder
from retain_ros.evaluation.episodes import make_tag
from retain_ros.evaluation.episodes import parse_tag
from retain_ros.evaluation.episodes import scene_tag
from retain_ros.evaluation.report import format_markdown
from retain_ros.evaluation.report import format_table
from retain_ros.evaluation.report import load_episodes
from retain_ros.evaluation.report import plot_summary
from retain_ros.evaluation.report import summarize
from retain_ros.evaluation.report import write_report
from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.evaluation.stats import wilson_interval

__all__ = [
    'AlphaSchedule', 'EpisodeError', 'EpisodeRecorder', 'ScheduleError', 'format_markdown',
    'format_table', 'load_episodes', 'make_tag', 'parse_tag', 'plot_summary', 'summarize',
    'scene_tag', 'wilson_interval', 'write_report',
]
