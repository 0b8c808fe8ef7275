"""`Judge`: a reward function that asks a model whether a reply says the same as the reference answer.

For answers an exact match cannot grade (free-form text, units, paraphrases). The judge samples through
any `Policy` (the policy being trained, or another served model) and scores 1.0 when its verdict starts
with "yes", else 0.0. Add it to a rubric like any reward function: `rubric.add(Judge(policy))`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from foveal.renderers.inference.wire import SamplingParams
from foveal.renderers.messages import Message, UserMessage

from foveal.verifiers.parsers import normalize_answer
from foveal.verifiers.policy import Policy

DEFAULT_TEMPLATE = (
    "Decide whether a response answers a question correctly, given the reference answer.\n\n"
    "Question: {question}\n\nReference answer: {answer}\n\nResponse: {response}\n\n"
    "Does the response give the reference answer? Reply with yes or no."
)
_GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


class Judge:
    """Reward 1.0 when the judge model says yes; `template` fills `{question}`, `{answer}`, `{response}`."""

    __name__ = "judge"

    def __init__(self, policy: Policy, *, template: str = DEFAULT_TEMPLATE, sampling: SamplingParams = _GREEDY) -> None:
        template.format(question="", answer="", response="")  # a bad placeholder fails here, not mid-run
        self.policy = policy
        self.template = template
        self.sampling = sampling

    async def __call__(self, prompt: Sequence[Message], completion: str, answer: str) -> float:
        question = next((m.text() for m in reversed(prompt) if m.role == "user"), "")
        asked = UserMessage(content=self.template.format(question=question, answer=answer, response=completion))
        episode = self.policy.open([asked], (), session_id=f"judge/{zlib.crc32(asked.text().encode()):08x}")
        _, verdict = await episode.sample(self.sampling)
        return 1.0 if normalize_answer(verdict.text()).startswith("yes") else 0.0
