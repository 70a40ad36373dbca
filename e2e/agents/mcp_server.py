"""A small MCP server over stdio (JSON-RPC 2.0, one message a line) with many tools, so that Claude
Code defers them behind tool search as it does with real MCP servers. Each tool echoes its input."""

import json
import sys

TOOLS = [{"name": f"lookup_{i:02d}", "description": f"Looks up record {i} in the test catalogue. " * 8,
          "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
         for i in range(40)]


def answer(request: dict):
    method, params = request.get("method"), request.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}},
                "serverInfo": {"name": "e2e-catalogue", "version": "1.0.0"}}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        text = f"{params.get('name')} found: {json.dumps(params.get('arguments'))}"
        return {"content": [{"type": "text", "text": text}], "isError": False}
    if method == "ping":
        return {}
    return None


for line in sys.stdin:
    try:
        request = json.loads(line)
    except ValueError:
        continue
    if "id" not in request:
        continue  # a notification
    result = answer(request)
    reply = {"jsonrpc": "2.0", "id": request["id"]}
    if result is None:
        reply["error"] = {"code": -32601, "message": f"no method {request.get('method')}"}
    else:
        reply["result"] = result
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
