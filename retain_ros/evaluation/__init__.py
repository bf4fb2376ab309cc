"""Evaluation rollouts: episode log, alpha schedules, sequential tests, reports (no ROS)."""
from retain_ros.evaluation.adaptive_schedule import AdaptiveSchedule
from retain_ros.evaluation.episode_log import EpisodeError
from retain_ros.evaluation.episode_log import EpisodeLog
from retain_ros.evaluation.fixed_design import fixed_n
from retain_ros.evaluation.loading import read_logs
from retain_ros.evaluation.loading import load_episodes
from retain_ros.evaluation.plot import plot_summary
from retain_ros.evaluation.report import write_report
from retain_ros.evaluation.schedule import AlphaSchedule
from retain_ros.evaluation.schedule import ScheduleError
from retain_ros.evaluation.sequential import BudgetError
from retain_ros.evaluation.sequential import DesignError
from retain_ros.evaluation.sequential import plan
from retain_ros.evaluation.sequential import SequentialDesign
from retain_ros.evaluation.sequential import simulate
from retain_ros.evaluation.stats import wilson_interval
from retain_ros.evaluation.summary import summarize
from retain_ros.evaluation.tables import format_markdown
from retain_ros.evaluation.tables import format_table
from retain_ros.evaluation.tags import make_tag
from retain_ros.evaluation.tags import parse_tag
from retain_ros.evaluation.tags import scene_tag

__all__ = [
    'AdaptiveSchedule', 'AlphaSchedule', 'BudgetError', 'DesignError', 'EpisodeError',
    'EpisodeLog', 'ScheduleError', 'SequentialDesign', 'fixed_n', 'format_markdown',
    'format_table', 'load_episodes', 'make_tag', 'parse_tag', 'plan', 'plot_summary',
    'read_logs', 'simulate', 'summarize', 'scene_tag', 'wilson_interval', 'write_report',
]
