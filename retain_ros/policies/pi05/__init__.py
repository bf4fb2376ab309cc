"""π0.5 adapter: transformers PaliGemma / Gemma / SigLIP + adaRMS expert behind :class:`Policy`."""
from retain_ros.policies.pi05.configuration_pi05 import load_pi05_config
from retain_ros.policies.pi05.configuration_pi05 import Pi05Spec
from retain_ros.policies.pi05.modeling_pi05 import build_policy
from retain_ros.policies.pi05.modeling_pi05 import Pi05Model
from retain_ros.policies.pi05.modeling_pi05 import Pi05Policy
from retain_ros.policies.pi05.processor_pi05 import discretize_state
from retain_ros.policies.pi05.processor_pi05 import Pi05Processor

__all__ = ['build_policy', 'discretize_state', 'load_pi05_config', 'Pi05Model', 'Pi05Policy',
           'Pi05Processor', 'Pi05Spec']
