"""The official MCP Python SDK against a hub's MCP endpoint: lists the tools and makes the calls
given, printing what it got as JSON: {"tools": [names], "calls": [{"is_error", "structured",
"content"}]}. Usage: mcp_sdk_check.py MCP_URL API_KEY CALLS, CALLS a JSON array of
[tool name, arguments] pairs."""
import asyncio, json, sys
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url, key, calls):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                results = []
                for name, arguments in calls:
                    result = await session.call_tool(name, arguments)
                    results.append({
                        "is_error": result.is_error,
                        "structured": result.structured_content,
                        "content": [c.model_dump(mode="json", exclude_none=True) for c in result.content],
                    })
                print(json.dumps({
                    "tools": sorted(t.name for t in tools.tools),
                    "schemas": {t.name: t.input_schema for t in tools.tools},
                    "calls": results,
                }))

asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
