"""Evaluation rollouts: the episode log, alpha schedules, Wilson intervals, reports (no ROS)."""
from retain_ros.evaluation.episode_log import EpisodeError
from retain_ros.evaluation.episode_log import EpisodeLog
from retain_ros.evaluation.loading import load_episodes
from retain_ros.evaluation.plot import plot_summary
from retain_ros.evaluation.report import write_report
from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.evaluation.stats import wilson_interval
from retain_ros.evaluation.summary import summarize
from retain_ros.evaluation.tables import format_markdown
from retain_ros.evaluation.tables import format_table
from retain_ros.evaluation.tags import make_tag
from retain_ros.evaluation.tags import parse_tag
from retain_ros.evaluation.tags import scene_tag

__all__ = [
    'AlphaSchedule', 'EpisodeError', 'EpisodeLog', 'ScheduleError', 'format_markdown',
    'format_table', 'load_episodes', 'make_tag', 'parse_tag', 'plot_summary', 'summarize',
    'scene_tag', 'wilson_interval', 'write_report',
]
