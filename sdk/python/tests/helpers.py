"""What the live tests share: the daemon they run against (EMBERD_URL, set by
test/sdk-python.test.ts) and the README's example with the output it promises."""
import os
import re
from pathlib import Path

SDK_ROOT = Path(__file__).resolve().parent.parent


def daemon_url() -> str:
    url = os.environ.get("EMBERD_URL")
    if not url:
        raise RuntimeError("set EMBERD_URL to a running emberd (test/sdk-python.test.ts starts one and sets it)")
    return url


def readme_example():
    """(code, expected stdout) of README.md's example: its python block and the text block after it."""
    text = (SDK_ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"## Example\n.*?```python\n(.*?)```\n.*?```text\n(.*?)```", text, re.S)
    if not m:
        raise AssertionError("README.md has no ## Example with a python block followed by a text block")
    return m.group(1), m.group(2)


def coalesce(events):
    """Adjacent text events of one stream joined: the daemon may split output anywhere."""
    out = []
    for kind, data in events:
        if out and kind in ("stdout", "stderr") and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + data)
        else:
            out.append((kind, data))
    return out
