"""Drive ``wrk`` (a C load generator: its own cost per request is a few microseconds, so it never
limits a Python server on another core) from the benchmarks.

The Lua script it runs POSTs one fixed body, or a new body per request (a template with a
counter: every request a cache miss), optionally paced per connection (``delay_ms``: an open
rate below saturation), counts the ``X-LLMCache`` header values of the answers, and prints the
latency percentiles in microseconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field

from bench.loadgen import ensure_loopback

_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body = {body}
local template = {template}
local delay_ms = {delay_ms}
local counter = 0
request = function()
  if template == nil then return wrk.format(nil, nil, nil, body) end
  counter = counter + 1
  return wrk.format(nil, nil, nil, (template:gsub("@N@", tostring(counter))))
end
if delay_ms > 0 then
  delay = function() return delay_ms end
end
results = {{}}
response = function(status, headers, answer)
  local value = headers["X-LLMCache"] or "-"
  results[value] = (results[value] or 0) + 1
end
local threads = {{}}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK p50_us=%d p99_us=%d requests=%d duration_us=%d errors=%d\\n",
    latency:percentile(50), latency:percentile(99), summary.requests, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout))
  for _, thread in ipairs(threads) do
    for value, count in pairs(thread:get("results")) do io.write(string.format("WRK-HEADER %s %d\\n", value, count)) end
  end
end
"""

_SUMMARY = re.compile(r"^WRK p50_us=(\d+) p99_us=(\d+) requests=(\d+) duration_us=(\d+) errors=(\d+)$", re.MULTILINE)
_HEADER = re.compile(r"^WRK-HEADER (\S+) (\d+)$", re.MULTILINE)


def wrk_binary() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkResult:
    label: str
    connections: int
    p50: float  # seconds
    p99: float
    requests: int
    seconds: float
    errors: int
    #: answers per X-LLMCache value ("-": header absent)
    cache_results: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _lua_string(text: str | None) -> str:
    """A Lua long-bracket literal (no escapes to translate)."""
    if text is None:
        return "nil"
    if "]==]" in text:
        raise ValueError("a body holding ']==]' cannot be put in the wrk script")
    return f"[==[{text}]==]"


def run_wrk(label: str, url: str, body: bytes, *, connections: int, seconds: float, unique: bool = False,
            delay_ms: int = 0, cpu: int | None = None) -> WrkResult:
    """``connections`` keep-alive connections on one wrk thread for ``seconds``.  ``unique``: the
    body's first ``@N@`` is replaced by a per-run id and a counter (every request differs)."""
    ensure_loopback(url)
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError("wrk not found (apt-get install -y wrk)")
    text = body.decode()
    template = text.replace("@N@", f"{uuid.uuid4().hex}-@N@", 1) if unique else None
    script = _SCRIPT.format(body=_lua_string(text), template=_lua_string(template), delay_ms=int(delay_ms))
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        command = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                   "-s", file.name, url]
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    match = _SUMMARY.search(out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output: {out!r}")
    p50, p99, requests, duration, errors = (int(group) for group in match.groups())
    headers = {value: int(count) for value, count in _HEADER.findall(out)}
    return WrkResult(label, connections, p50 / 1e6, p99 / 1e6, requests, duration / 1e6, errors, headers)

