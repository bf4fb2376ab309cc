r"""How each family turns the operator's instruction into the text its tokenizer reads.

The rules are LeRobot 0.4.4's (its processor steps), edge cases included:

- **π0** (``Pi0NewLineProcessor``) and **SmolVLA** (``SmolVLANewLineProcessor``): the instruction
  as given, with ``"\n"`` appended **only when it does not already end with one**
  (:func:`newline_terminated`). Nothing else changes: leading / trailing spaces, underscores,
  inner newlines and non-ASCII text reach the tokenizer as typed; an empty instruction becomes
  ``"\n"``.
- **π0.5** (``Pi05PrepareStateTokenizerProcessorStep``): the instruction stripped, ``_`` and
  ``"\n"`` replaced by spaces, inside ``"Task: {task}, State: {bins};\nAction: "``
  (:func:`retain_ros.policies.pi05.processor_pi05.pi05_prompt`).
"""
from __future__ import annotations


def newline_terminated(instruction: str) -> str:
    r"""Return ``instruction`` ending in exactly the newline π0 and SmolVLA expect.

    :param instruction: the task text as the operator gave it.
    :return: ``instruction`` unchanged when it already ends with ``"\n"``, else with one added.
    """
    return instruction if instruction.endswith('\n') else f'{instruction}\n'
