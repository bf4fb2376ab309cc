"""π0 adapter: transformers ``PI0ForConditionalGeneration`` behind the :class:`Policy` API."""
from retain_ros.policies.norm_stats_files import load_norm_stats
from retain_ros.policies.normalize import NormStats
from retain_ros.policies.pi0.checkpoint_config_pi0 import load_pi0_config
from retain_ros.policies.pi0.checkpoint_pi0 import save_pi0_checkpoint
from retain_ros.policies.pi0.configuration_pi0 import pi0_config_from_dict
from retain_ros.policies.pi0.configuration_pi0 import Pi0Spec
from retain_ros.policies.pi0.configuration_pi0 import tiny_pi0_config
from retain_ros.policies.pi0.modeling_pi0 import build_policy
from retain_ros.policies.pi0.modeling_pi0 import Pi0Policy
from retain_ros.policies.pi0.processor_pi0 import Pi0Processor
from retain_ros.policies.pi0.tokenizer_pi0 import load_tokenizer
from retain_ros.policies.pi0.tokenizer_pi0 import save_byte_tokenizer

__all__ = [
    'build_policy', 'load_norm_stats', 'load_pi0_config', 'load_tokenizer', 'NormStats',
    'pi0_config_from_dict', 'Pi0Policy', 'Pi0Processor', 'Pi0Spec', 'save_byte_tokenizer',
    'save_pi0_checkpoint', 'tiny_pi0_config',
]
