"""retain_ros: RETAIN-style weight merging of VLA robot policies, on the robot, in ROS 2.

Alpha convention, everywhere in this package::

    theta = (1 - alpha) * theta_pre + alpha * theta_ft      (alpha = weight on the FINETUNED model)

alpha = 0 gives the pretrained model, alpha = 1 the finetuned one.
"""

__version__ = '0.1.0'

ALPHA_CONVENTION = ('theta = (1 - alpha) * theta_pre + alpha * theta_ft '
                    '(alpha = weight on the finetuned model)')
