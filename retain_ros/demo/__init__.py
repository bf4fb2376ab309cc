"""The demo's pure-Python side (no ROS): its checkpoints, training and offline evaluation.

Data and model: :mod:`~retain_ros.demo.data` (scripted demonstrations),
:mod:`~retain_ros.demo.dataset` (which demonstrations, as tensors), :mod:`~retain_ros.demo.model`
(tiny pi0 spec, word tokenizer), :mod:`~retain_ros.demo.settings` (``TrainSettings`` and the
cache digests). Training: :mod:`~retain_ros.demo.objectives`, :mod:`~retain_ros.demo.trainer`,
:mod:`~retain_ros.demo.pretraining`, :mod:`~retain_ros.demo.finetuning`,
:mod:`~retain_ros.demo.pipeline` (make or reuse both checkpoints), with
:mod:`~retain_ros.demo.paths` and :mod:`~retain_ros.demo.checkpoints`. Evaluation without ROS:
:mod:`~retain_ros.demo.rollout` (episodes), :mod:`~retain_ros.demo.validation`,
:mod:`~retain_ros.demo.offline_sweep`, :mod:`~retain_ros.demo.continual`,
:mod:`~retain_ros.demo.probe`, :mod:`~retain_ros.demo.timing`. The command line:
:mod:`~retain_ros.demo.cli` (``retain-ros demo-train``).
"""
