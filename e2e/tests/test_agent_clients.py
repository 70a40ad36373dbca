"""The coding agents people put in front of Bedrock, run for real through the gateway: Codex
(`codex exec`, the Responses API) and Claude Code (`claude -p`, Anthropic's Messages API), at the
versions pinned in e2e/agents/package.json (`make agents`). Each completes a tool loop the emulator's
model answers (a tool call, the agent runs it, its result, a final answer), and each test checks what
Bedrock received, not only the exit code. The emulator's model calls the tool the prompt names
(Bedrock's name for it), so a prompt steers the loop through a namespaced or a deferred tool."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, http_get, launch_gateway, raw_post, stop_process, wait_until
from test_metrics import prometheus, tokens

AGENTS = ROOT / "e2e/agents/node_modules/.bin"
CODEX = AGENTS / "codex"
CLAUDE = AGENTS / "claude"
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


@pytest.fixture(scope="module")
def gateway(workdir, emulator_url):
    # make run's own configuration: Claude Sonnet 4.5 through Converse with prompt caching on,
    # Claude Haiku 4.5 through InvokeModel.
    process, gateway = launch_gateway(workdir, emulator_url, "envoy-agents", KEYS)
    yield gateway
    stop_process(process)


def run_agent(command: list, cwd, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    assert command[0].exists(), f"{command[0]} is missing: run `make agents` (or `make test`)"
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(("OPENAI_", "ANTHROPIC_", "AWS_", "CODEX_", "CLAUDE_"))}
    return subprocess.run([str(part) for part in command], cwd=cwd, env={**base, **env}, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def last_bedrock_request(gateway) -> dict:
    return json.loads(http_get(f"{gateway.emulator_url}/_emulator/last-request"))


def codex(gateway, tmp_path, prompt: str, model: str = LLAMA) -> subprocess.CompletedProcess:
    """`codex exec` with a provider block pointing at the gateway, as the README shows it."""
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "bedrock-gateway"\n\n'
        '[model_providers.bedrock-gateway]\nname = "Bedrock through the AI gateway"\n'
        f'base_url = "{gateway.url}/v1"\nwire_api = "responses"\n')
    work = tmp_path / "codex-work"
    work.mkdir()
    return run_agent([CODEX, "exec", "--skip-git-repo-check", prompt], work, {"CODEX_HOME": str(home)})


def test_codex_completes_a_tool_loop_through_a_namespaced_tool(gateway, tmp_path):
    """Codex sends a `namespace` tool (multi_agent_v1) and the hosted `web_search` on every turn; it
    failed on its first turn when the gateway refused both. Its namespaced call must come back with
    `namespace` and `name` apart, or Codex answers "unsupported call"."""
    result = codex(gateway, tmp_path, "Please run multi_agent_v1__close_agent")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "The tool returned:" in result.stdout, result.stdout[-2000:]
    sent = last_bedrock_request(gateway)
    assert sent["path"] == "/model/us.meta.llama3-2-1b-instruct-v1%3A0/converse-stream"
    names = [tool["toolSpec"]["name"] for tool in sent["body"]["toolConfig"]["tools"]]
    assert "exec_command" in names and "multi_agent_v1__spawn_agent" in names, names
    assert not any("web_search" in name for name in names), "hosted tools are left out"
    call, result_turn = sent["body"]["messages"][-2:]
    tool_use = next(block["toolUse"] for block in call["content"] if "toolUse" in block)
    assert tool_use["name"] == "multi_agent_v1__close_agent", "the history's namespaced call, named as its tool is"
    output = result_turn["content"][0]["toolResult"]["content"][0]["text"]
    assert "unsupported call" not in output and "invalid agent id" in output, \
        f"Codex routed the call to its close_agent handler: {output}"


def test_codex_runs_a_shell_command_the_model_asked_for(gateway, tmp_path):
    result = codex(gateway, tmp_path, "Please run exec_command")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    turn = last_bedrock_request(gateway)["body"]["messages"][-1]
    output = turn["content"][0]["toolResult"]["content"][0]["text"]
    assert "Process exited with code" in output, output


def test_claude_code_completes_a_tool_loop_with_tool_search(gateway, tmp_path):
    """Claude Code (on Claude Haiku 4.5, which make run serves through InvokeModel) with an MCP
    server of 40 tools defers them behind tool search: its tools carry `defer_loading` (wrapped as
    `custom.defer_loading` in some versions, which Bedrock refuses), with the tool-search beta flag."""
    mcp = tmp_path / "mcp.json"
    mcp.write_text(json.dumps({"mcpServers": {"catalogue": {
        "command": sys.executable, "args": [str(ROOT / "e2e/agents/mcp_server.py")]}}}))
    work = tmp_path / "claude-work"
    work.mkdir()
    env = {"HOME": str(tmp_path), "ANTHROPIC_BASE_URL": f"{gateway.url}/anthropic", "ANTHROPIC_API_KEY": "unused",
           "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "ENABLE_TOOL_SEARCH": "true"}
    result = run_agent([CLAUDE, "-p", "Please use the tool Bash", "--model", HAIKU, "--mcp-config", mcp,
                        "--allowedTools", "Bash"], work, env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "The tool returned:" in result.stdout, result.stdout[-2000:]
    sent = last_bedrock_request(gateway)
    assert sent["path"] == "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream"
    body = sent["body"]
    assert "tool-search-tool-2025-10-19" in body["anthropic_beta"], body.get("anthropic_beta")
    assert all("custom" not in tool for tool in body["tools"]), "Bedrock refuses a tool's custom member"
    assert any(tool.get("defer_loading") is True for tool in body["tools"]), "deferred tools stay deferred"
    result_turn = body["messages"][-1]
    assert any(block.get("type") == "tool_result" for block in result_turn["content"]), result_turn


def test_hosted_tools_are_left_out_and_named_or_refused_where_configured(gateway, workdir, emulator_url):
    request = json.dumps({"model": LLAMA, "input": "hi", "tools": [
        {"type": "web_search"}, {"type": "function", "name": "f", "parameters": {"type": "object"}}]}).encode()
    reply = raw_post(f"{gateway.url}/v1/responses", request)
    assert reply.status == 200, reply.body
    assert reply.headers["x-ai-gateway-dropped-tools"] == "web_search"
    assert [t["toolSpec"]["name"] for t in last_bedrock_request(gateway)["body"]["toolConfig"]["tools"]] == ["f"]

    def refuse(text: str) -> str:
        anchor = '"bedrock-us-east-1": {\n'
        assert anchor in text
        return text.replace(anchor, anchor + " " * 26 + '"hosted_tools": "refuse",\n', 1)
    process, refusing = launch_gateway(workdir, emulator_url, "envoy-agents-refuse", KEYS, edit=refuse)
    try:
        reply = raw_post(f"{refusing.url}/v1/responses", request)
        assert reply.status == 400
        assert "the hosted tool `web_search`" in reply.json()["error"]["message"]
    finally:
        stop_process(process)


def test_an_agents_second_turn_reads_its_prompt_from_the_cache(gateway, tmp_path):
    """Agents resend the whole conversation every turn; with the backend's `prompt_caching: auto`,
    the gateway places the cache points Codex does not, and the turn after the tool call reads the
    prefix the first wrote (the emulator caches prompts as Bedrock does, looking back from each
    breakpoint), in Bedrock's usage, the caller's usage and the metrics."""
    before = tokens(prometheus(gateway), SONNET, "bedrock-us-east-1", "cached_input")
    result = codex(gateway, tmp_path, "Please run exec_command", model=SONNET)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sent = last_bedrock_request(gateway)["body"]
    # The second turn happened (it carries the tool's result): only it can read the first's prefix.
    assert any("toolResult" in block for block in sent["messages"][-1]["content"]), \
        json.dumps(sent["messages"][-2:])[:2000] + result.stdout[-2000:]
    assert sent["system"][-1] == {"cachePoint": {"type": "default"}}
    assert sent["toolConfig"]["tools"][-1] == {"cachePoint": {"type": "default"}}
    assert sent["messages"][-1]["content"][-1] == {"cachePoint": {"type": "default"}}
    # Codex hangs up at `response.completed`, which can be before the gateway sees the body's end:
    # the turn is counted at that event (test_metrics.py holds the end back to show it).
    wait_until(lambda: tokens(prometheus(gateway), SONNET, "bedrock-us-east-1", "cached_input") > before,
               "the second turn's cache read to be counted", timeout=15)

    # The same through the OpenAI SDK, turn by turn: the caller sees the cached tokens.
    import openai
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    history = [{"role": "developer", "content": "You are a careful agent. " * 30},
               {"role": "user", "content": "Please use lookup for the weather in Lisbon."}]
    first = client.responses.create(model=SONNET, input=history, tools=tools)
    call = next(item for item in first.output if item.type == "function_call")
    history += [call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    second = client.responses.create(model=SONNET, input=history, tools=tools)
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert second.usage.input_tokens_details.cached_tokens > 0, second.usage
    assert second.usage.input_tokens > second.usage.input_tokens_details.cached_tokens
