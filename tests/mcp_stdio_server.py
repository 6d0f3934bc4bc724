"""An operator's MCP server for the tests: stdio transport, the official MCP Python SDK's
MCPServer. `add` computes, `probe` reports what the sandbox lets it see and do (its uid, whether it
can read the node's secrets or /etc/shadow, write outside its work directory, or reach the node's
ports), `fail` answers a tool error, `flood` answers too much, `hang` too late. The node runs it in its sandbox; see crates/testkit/tests/it/mcp.rs."""
import os
import socket
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("stacknet-test-tools", version="1.0")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


def readable(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def writable(path: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False


@server.tool()
def probe(secret: str, port: int) -> dict:
    """Reports what the server can see of its host: its uid, whether it reads `secret` or
    /etc/shadow, writes outside its work directory, or connects to 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        network = True
    except OSError:
        network = False
    return {
        "uid": os.getuid(),
        "secret": readable(secret),
        "shadow": readable("/etc/shadow"),
        "write_outside": writable(os.path.join(os.path.dirname(os.path.abspath(__file__)), "planted")),
        "write_work": writable("/work/ok"),
        "network": network,
    }


@server.tool()
def fail(message: str) -> str:
    """Always fails with `message` (a failure the tool saw coming: its message reaches the caller)."""
    raise ToolError(message)


@server.tool()
def flood(n: int) -> str:
    """Answers `n` bytes."""
    return "x" * n


@server.tool()
def hang(seconds: float) -> str:
    """Answers after `seconds`."""
    time.sleep(seconds)
    return "done"


if __name__ == "__main__":
    server.run()
