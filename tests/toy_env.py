"""A toy environment for the training and episode tests: count up to a target."""


class CounterEnv:
    def reset(self, target: int = 2, **_):
        self.value, self.target = 0, target
        return None

    def increment(self, by: int) -> str:
        """Add to the counter.

        Args:
            by: How much to add.
        """
        self.value += by
        return str(self.value)

    def get_reward(self) -> float:
        return 1.0 if self.value == self.target else 0.0


def expert_trajectory(target: int) -> dict:
    msgs = [{"role": "user", "content": f"Count to {target}."}]
    for i in range(target):
        msgs.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "increment", "arguments": '{"by": 1}'}}]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": str(i + 1)})
    msgs.append({"role": "assistant", "content": "Done."})
    return {"id": f"count-{target}", "messages": msgs, "tools": [TOOL]}


TOOL = {"type": "function", "function": {"name": "increment", "description": "Add to the counter.", "parameters": {
    "type": "object", "properties": {"by": {"type": "integer", "description": "How much to add."}}, "required": ["by"]}}}


def task(target: int) -> dict:
    return {"prompt": [{"role": "user", "content": f"Count to {target}."}], "target": target}
