"""`ToolEnv`: the model calls plain Python functions until it answers without a tool call.

Tool calls are parsed by the renderer from the sampled text (`AssistantMessage.tool_calls`); each one
runs, and its result goes back as a tool message. A call that cannot run (unknown tool, malformed JSON,
bad arguments, an exception in the tool) goes back as an error message the model can react to, and is
counted in the rollout's `tool_errors` metric: a model's mistake is part of the episode, not a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from foveal.renderers.messages import AssistantMessage, Message, ToolMessage

from foveal.verifiers.environment import EnvironmentConfigError, MultiTurnEnv, State
from foveal.verifiers.tools import Tool, ToolCallFailed


class ToolEnv(MultiTurnEnv):
    """A multi-turn environment whose responses are the results of the tools the model called."""

    def __init__(self, *, tools: Sequence[Callable[..., Any]], max_turns: int = 8, **kwargs: Any) -> None:
        wrapped = [Tool(func) for func in tools]
        names = [tool.name for tool in wrapped]
        if not wrapped or len(set(names)) != len(names):
            raise EnvironmentConfigError("tools", names, "at least one function, with distinct names")
        self.callables = {tool.name: tool for tool in wrapped}
        super().__init__(tools=[tool.spec for tool in wrapped], max_turns=max_turns, **kwargs)

    def setup_state(self, state: State) -> None:
        state.metrics.update(tool_calls=0.0, tool_errors=0.0)

    async def is_done(self, messages: Sequence[Message], state: State) -> bool:
        reply = messages[-1]
        return not (isinstance(reply, AssistantMessage) and (reply.tool_calls or reply.tool_call_errors))

    async def env_response(self, messages: Sequence[Message], state: State) -> list[Message]:
        reply = messages[-1]
        assert isinstance(reply, AssistantMessage)  # the loop calls this right after a sampled reply
        out: list[Message] = []
        for call in reply.tool_calls:
            result = await self._call_tool(call.name, call.arguments, state)
            out.append(ToolMessage(content=result, name=call.name))
        for bad in reply.tool_call_errors:
            self._count(state, "tool_errors")
            out.append(ToolMessage(content=f"error: the tool call could not be read ({bad.error})"))
        return out

    async def _call_tool(self, name: str, arguments: dict[str, Any] | str, state: State) -> str:
        self._count(state, "tool_calls")
        tool = self.callables.get(name)
        try:
            if tool is None:
                raise ToolCallFailed(f"no tool named {name!r}; the tools are {sorted(self.callables)}")
            return await tool(arguments)
        except Exception as error:  # noqa: BLE001 - a tool's failure is the model's to see, not the run's end
            self._count(state, "tool_errors")
            return f"error: {type(error).__name__}: {error}"

    @staticmethod
    def _count(state: State, metric: str) -> None:
        state.metrics[metric] = state.metrics.get(metric, 0.0) + 1.0
