"""SmolVLA adapter: transformers SmolVLM + the interleaved action expert behind :class:`Policy`."""
from retain_ros.policies.smolvla.backbone_smolvla import build_smolvla_module
from retain_ros.policies.smolvla.backbone_smolvla import SmolVLAModule
from retain_ros.policies.smolvla.configuration_smolvla import load_smolvla_config
from retain_ros.policies.smolvla.configuration_smolvla import smolvla_spec_from_dict
from retain_ros.policies.smolvla.configuration_smolvla import SmolVLASpec
from retain_ros.policies.smolvla.modeling_smolvla import build_policy
from retain_ros.policies.smolvla.modeling_smolvla import read_smolvla_state_dict
from retain_ros.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from retain_ros.policies.smolvla.processor_smolvla import resize_with_pad_left_top
from retain_ros.policies.smolvla.processor_smolvla import SmolVLAProcessor

__all__ = [
    'build_policy', 'build_smolvla_module', 'load_smolvla_config', 'read_smolvla_state_dict',
    'resize_with_pad_left_top', 'smolvla_spec_from_dict', 'SmolVLAModule', 'SmolVLAPolicy',
    'SmolVLAProcessor', 'SmolVLASpec',
]
