"""The official MCP Python SDK against `stacknet up`'s MCP endpoint: lists the network's tools and
calls run_code; prints what it got as JSON. Usage: mcp_sdk_check.py MCP_URL API_KEY."""
import asyncio, json, sys
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url, key):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool("run_code", {"language": "python", "code": "print(6 * 7)"})
                refused = await session.call_tool("web_fetch", {"url": "http://169.254.169.254/latest/meta-data/"})
                print(json.dumps({
                    "tools": sorted(t.name for t in tools.tools),
                    "is_error": result.is_error,
                    "structured": result.structured_content,
                    "refused_is_error": refused.is_error,
                    "refused": refused.structured_content,
                }))

asyncio.run(main(sys.argv[1], sys.argv[2]))
