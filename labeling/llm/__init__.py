"""The ``llm`` and ``ensemble`` labelers: an OpenAI-compatible endpoint behind the Labeler protocol.

Public API: ``LLMLabeler``, ``EnsembleLabeler``, ``label_many``, ``LLMClient`` and its errors
(``LLMError``, ``LLMUnavailable``, ``LLMInvalidReply``; each carries ``raw_reply``).
"""

from labeling.llm.client import LLMClient, LLMError, LLMInvalidReply, LLMUnavailable
from labeling.llm.concurrency import label_many
from labeling.llm.labeler import LLMLabeler

__all__ = [
    "EnsembleLabeler",
    "LLMClient",
    "LLMError",
    "LLMInvalidReply",
    "LLMLabeler",
    "LLMUnavailable",
    "label_many",
]


def __getattr__(name):
    if name == "EnsembleLabeler":
        from labeling.llm.ensemble import EnsembleLabeler

        return EnsembleLabeler
    raise AttributeError(name)
