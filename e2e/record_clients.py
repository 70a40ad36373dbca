"""`make record-clients`: records the requests real clients send, as the corpus the tests check every
translation against (filter/core/tests/fixtures/corpus/<client>/NNN.json).

It serves `make run`'s configuration (the emulator, the gateway with the .wasm), puts a recording
proxy in front of the gateway, and drives each pinned client through it: Codex and Claude Code (the
CLIs of e2e/agents), the OpenAI Agents SDK, the `openai` and `anthropic` SDKs, boto3, LangChain and
the Vercel AI SDK (e2e/recorders). Every request is forwarded and answered as usual, so the clients go
through their tool loops; what is kept is the request as the client sent it: method, path, the
headers that shape a translation, and the body. Callers' credentials are never kept.

Rerun it when a client's version changes, then review the diff of the corpus and of its snapshots
(`UPDATE_GOLDEN=1 cargo test -p bedrock-gateway-core --test corpus`)."""

import http.client
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e/tests"))
import conftest  # noqa: E402  (the suite's helpers start the emulator and the gateway)

CORPUS = ROOT / "filter/core/tests/fixtures/corpus"
AGENTS = ROOT / "e2e/agents/node_modules/.bin"
LLAMA = "us.meta.llama3-2-1b-instruct-v1:0"
SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
CLAUDE_35 = "anthropic.claude-3-5-sonnet-20241022-v2:0"
KEPT_HEADERS = {"content-type", "accept", "anthropic-beta", "anthropic-version", "openai-beta", "user-agent"}
KEYS = {"AWS_ACCESS_KEY_ID": conftest.DEMO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": conftest.DEMO_SECRET_KEY}


class Recorder:
    """What the proxy has seen, under the client being driven."""

    def __init__(self):
        self.client = "unknown"
        self.requests: dict[str, list] = {}
        self.lock = threading.Lock()

    def keep(self, method: str, path: str, headers: dict, body: bytes, status: int):
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode(errors="replace")
        entry = {"client": self.client, "method": method, "path": path, "status": status,
                 "headers": {k: v for k, v in headers.items() if k in KEPT_HEADERS}, "body": parsed}
        with self.lock:
            self.requests.setdefault(self.client, []).append(entry)


def proxy(recorder: Recorder, upstream: str) -> http.server.ThreadingHTTPServer:
    host, port = upstream.removeprefix("http://").split(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                data = b""
                while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    data += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return data
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def relay(self):
            body = self.body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            forwarded = {k: v for k, v in headers.items() if k not in ("host", "transfer-encoding", "connection")}
            forwarded["content-length"] = str(len(body))
            upstream_connection = http.client.HTTPConnection(host, int(port), timeout=120)
            upstream_connection.request(self.command, self.path, body=body, headers=forwarded)
            response = upstream_connection.getresponse()
            if self.command == "POST":
                recorder.keep(self.command, self.path, headers, body, response.status)
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            while chunk := response.read1(65536):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            upstream_connection.close()

        def relay_quietly(self):
            try:
                self.relay()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (Claude Code ends its side requests early)

        do_GET = do_POST = do_DELETE = relay_quietly

    server = http.server.ThreadingHTTPServer(("127.0.0.1", conftest.free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(command: list, env: dict | None = None, cwd=None):
    result = subprocess.run([str(c) for c in command], env={**os.environ, **(env or {})}, cwd=cwd,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")


def drive_codex(base: str, scratch: Path):
    for n, (model, prompt) in enumerate([(SONNET, "Please run exec_command"), (LLAMA, "Please run multi_agent_v1__close_agent"),
                                         (SONNET, "Say hello"), (LLAMA, "Please run update_goal"),
                                         (SONNET, "Please run view_image"), (SONNET, "Please run write_stdin")]):
        home, work = scratch / f"codex-home-{n}", scratch / f"codex-work-{n}"
        home.mkdir()
        work.mkdir()
        (home / "config.toml").write_text(
            f'model = "{model}"\nmodel_provider = "gw"\n\n[model_providers.gw]\nname = "gw"\n'
            f'base_url = "{base}/v1"\nwire_api = "responses"\n')
        run([AGENTS / "codex", "exec", "--skip-git-repo-check", prompt], {"CODEX_HOME": str(home)}, work)


def drive_claude_code(base: str, scratch: Path):
    mcp = scratch / "mcp.json"
    mcp.write_text(json.dumps({"mcpServers": {"catalogue": {"command": sys.executable,
                                                            "args": [str(ROOT / "e2e/agents/mcp_server.py")]}}}))
    for n, (model, prompt) in enumerate([(HAIKU, "Please use the tool Bash"), (HAIKU, "Say hello"),
                                         (SONNET, "Please use the tool Read"), (CLAUDE_35, "Say hello"),
                                         (SONNET, "Please use the tool Bash"), (HAIKU, "Please use the tool Write")]):
        work = scratch / f"claude-work-{n}"
        work.mkdir()
        env = {"HOME": str(scratch), "ANTHROPIC_BASE_URL": f"{base}/anthropic", "ANTHROPIC_API_KEY": "unused",
               "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "ENABLE_TOOL_SEARCH": "true"}
        run([AGENTS / "claude", "-p", prompt, "--model", model, "--mcp-config", mcp, "--allowedTools", "Bash,Read"], env, work)


def drive_agents_sdk(base: str, _scratch: Path):
    import asyncio

    from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI
    set_tracing_disabled(True)

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    async def main():
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key="unused")
        for model in (OpenAIResponsesModel(model=SONNET, openai_client=client),
                      OpenAIResponsesModel(model=LLAMA, openai_client=client),
                      OpenAIChatCompletionsModel(model=LLAMA, openai_client=client)):
            agent = Agent(name="forecaster", instructions="Use the tool.", tools=[get_weather], model=model)
            await Runner.run(agent, "Please use get_weather for Paris")
            streamed = Runner.run_streamed(agent, "Please use get_weather for Rome")
            async for _ in streamed.stream_events():
                pass
    asyncio.run(main())


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def drive_openai_sdk(base: str, _scratch: Path):
    import openai
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    hello = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    for model in (LLAMA, SONNET):
        client.chat.completions.create(model=model, messages=hello)
        for _ in client.chat.completions.create(model=model, messages=hello, stream=True, stream_options={"include_usage": True}):
            pass
        first = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Please use get_weather"}], tools=tools)
        call = first.choices[0].message.tool_calls[0]
        client.chat.completions.create(model=model, tools=tools, messages=[
            {"role": "user", "content": "Please use get_weather"}, first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    client.chat.completions.create(model=SONNET, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    client.chat.completions.create(model=SONNET, messages=hello, reasoning_effort="low", max_completion_tokens=5000)
    client.chat.completions.create(model=LLAMA, messages=hello, response_format={"type": "json_schema", "json_schema": {
        "name": "greeting", "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}})
    client.chat.completions.create(model=LLAMA, messages=hello, temperature=0.2, top_p=0.9, max_tokens=50, stop=["\n\n"], user="u1")
    client.responses.create(model=LLAMA, instructions="Be brief.", input="Hi.", store=False)
    for _ in client.responses.create(model=SONNET, input="Hi.", stream=True):
        pass
    rtools = [{"type": "function", "name": "get_weather", "parameters": tools[0]["function"]["parameters"]}]
    first = client.responses.create(model=SONNET, input="Please use get_weather", tools=rtools,
                                    reasoning={"effort": "low"}, include=["reasoning.encrypted_content"], store=False)
    history = [{"role": "user", "content": "Please use get_weather"}] + [item.model_dump(exclude_none=True) for item in first.output]
    call = next(item for item in first.output if item.type == "function_call")
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    client.responses.create(model=SONNET, input=history, tools=rtools, reasoning={"effort": "low"},
                            include=["reasoning.encrypted_content"], store=False)
    client.responses.create(model=LLAMA, input="Give a greeting.", text={"format": {"type": "json_schema", "name": "g",
        "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"], "additionalProperties": False}}})
    client.embeddings.create(model="amazon.titan-embed-text-v2:0", input="hello")
    client.embeddings.create(model="amazon.titan-embed-text-v2:0", input=["one", "two", "three"], dimensions=256)
    client.embeddings.create(model="cohere.embed-english-v3", input=["one", "two"], encoding_format="base64")


def drive_anthropic_sdk(base: str, _scratch: Path):
    import anthropic
    client = anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="unused")
    tools = [{"name": "get_weather", "description": "Weather in a city.",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    for model in (HAIKU, SONNET):
        client.messages.create(model=model, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hi."}])
        with client.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "Hi."}]) as stream:
            stream.get_final_message()
        first = client.messages.create(model=model, max_tokens=200, tools=tools,
                                       messages=[{"role": "user", "content": "Please use get_weather"}])
        use = next(block for block in first.content if block.type == "tool_use")
        client.messages.create(model=model, max_tokens=200, tools=tools, messages=[
            {"role": "user", "content": "Please use get_weather"}, {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}])
        client.messages.create(model=model, max_tokens=3000, thinking={"type": "enabled", "budget_tokens": 1024},
                               messages=[{"role": "user", "content": "Think, then answer."}])
        client.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": [
            {"type": "text", "text": "A long document. " * 50, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Summarise it."}]}])
        client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "Count me."}])
    client.messages.create(model=HAIKU, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"}]}])
    client.beta.messages.create(model=HAIKU, max_tokens=100, betas=["interleaved-thinking-2025-05-14"],
                                messages=[{"role": "user", "content": "Hi."}])


def drive_boto3(base: str, _scratch: Path):
    import boto3
    import botocore.config
    bedrock = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=base, aws_access_key_id="caller",
                           aws_secret_access_key="caller-secret", config=botocore.config.Config(retries={"max_attempts": 1}))
    messages = [{"role": "user", "content": [{"text": "Hi."}]}]
    bedrock.converse(modelId=LLAMA, messages=messages, system=[{"text": "Be brief."}], inferenceConfig={"maxTokens": 50})
    for _ in bedrock.converse_stream(modelId=SONNET, messages=messages)["stream"]:
        pass
    bedrock.converse(modelId=SONNET, messages=[{"role": "user", "content": [{"text": "Please use get_weather"}]}],
                     toolConfig={"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {
                         "type": "object", "properties": {"city": {"type": "string"}}}}}}]})
    bedrock.invoke_model(modelId=HAIKU, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                                                         "messages": [{"role": "user", "content": "Hi."}]}))
    for _ in bedrock.invoke_model_with_response_stream(modelId=HAIKU, body=json.dumps({
            "anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi."}]}))["body"]:
        pass
    bedrock.count_tokens(modelId=SONNET, input={"converse": {"messages": messages}})


def drive_langchain(base: str, _scratch: Path):
    from langchain_anthropic import ChatAnthropic
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    for chat in (ChatOpenAI(model=LLAMA, base_url=f"{base}/v1", api_key="unused"),
                 ChatOpenAI(model=SONNET, base_url=f"{base}/v1", api_key="unused", use_responses_api=True),
                 ChatAnthropic(model=HAIKU, base_url=f"{base}/anthropic", api_key="unused", max_tokens=200)):
        chat.invoke("Say hello.")
        for _ in chat.stream("Stream a greeting."):
            pass
        with_tools = chat.bind_tools([get_weather])
        reply = with_tools.invoke("Please use get_weather for Lima")
        if reply.tool_calls:
            from langchain_core.messages import HumanMessage, ToolMessage
            call = reply.tool_calls[0]
            with_tools.invoke([HumanMessage("Please use get_weather for Lima"), reply,
                               ToolMessage("sunny", tool_call_id=call["id"])])


def drive_vercel_ai(base: str, _scratch: Path):
    run(["node", ROOT / "e2e/recorders/vercel_ai.mjs"], {"BASE": base})


DRIVERS = [("codex", drive_codex), ("claude-code", drive_claude_code), ("openai-agents", drive_agents_sdk),
           ("openai-python", drive_openai_sdk), ("anthropic-python", drive_anthropic_sdk), ("boto3", drive_boto3),
           ("langchain", drive_langchain), ("vercel-ai", drive_vercel_ai)]


def main() -> int:
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix="record-clients-") as directory:
        workdir = Path(directory)
        emulator, emulator_url = conftest.launch_emulator(workdir, "emulator")
        process, gateway = conftest.launch_gateway(workdir, emulator_url, "gateway", KEYS)
        server = proxy(recorder, gateway.url)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            for name, drive in DRIVERS:
                recorder.client = name
                scratch = workdir / name
                scratch.mkdir()
                drive(base, scratch)
                print(f"{name}: {len(recorder.requests.get(name, []))} requests")
        finally:
            server.shutdown()
            conftest.stop_process(process)
            conftest.stop_process(emulator)
    for name, requests in recorder.requests.items():
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for index, entry in enumerate(requests):
            (folder / f"{index:03}.json").write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
    total = sum(len(r) for r in recorder.requests.values())
    print(f"{total} requests recorded under {CORPUS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
