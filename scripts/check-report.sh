#!/usr/bin/env bash
# check-report.sh REPORT.html [SCREENSHOT.png]
#
# Opens a report in headless Chromium and fails when the page does not load or when
# anything on it complains: exit 0 clean, 1 the page logged a console error or warning, threw,
# failed to load a resource or did not load, 2 the check itself could not run.
#
# Console messages are read over the DevTools protocol (Chromium's --remote-debugging-pipe:
# JSON messages on file descriptors 3 and 4, driven by the Python below), not from
# Chromium's log: its log prints console.error and console.log alike and never shows a
# resource that failed to load. Counted as problems: console.error / console.warn /
# console.assert calls (Runtime.consoleAPICalled), uncaught exceptions
# (Runtime.exceptionThrown), browser log entries of level error or warning (Log.entryAdded:
# failed resource loads, CSP and parser reports), failed requests (Network.loadingFailed), a
# navigation error, no load event within 60 s, and an inline <svg> drawn with no size.
#
# The layout is checked from the page itself (scripts/report-layout.js) at each width in
# WIDTHS (default "1200 640" CSS px): the page does not scroll sideways, every mark of a
# chart lies inside its SVG, nothing overflows a table cell or is clipped by a box, short
# cells stay on one line, no word breaks inside itself, and every table column holds at
# least one value. LAYOUT=0 skips these checks.
#
# With SCREENSHOT, also writes a PNG of the page at 1200 px wide, 3000 px tall (FULL=1: the
# whole page; HEIGHT=N: N px tall). Needs Chromium (CHROMIUM, default /usr/bin/chromium) and python3.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 REPORT.html [SCREENSHOT.png]" >&2
    exit 2
fi
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    echo "check-report: no Chromium at $chromium (set CHROMIUM)" >&2
    exit 2
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "check-report: python3 is missing" >&2
    exit 2
fi
if [ ! -f "$1" ]; then
    echo "check-report: $1: no such file" >&2
    exit 1
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

export CHECK_REPORT_PAGE="$1" CHECK_REPORT_SHOT="${2:-}" CHECK_REPORT_FULL="${FULL:-}"
export CHECK_REPORT_CHROMIUM="$chromium" CHECK_REPORT_PROFILE="$profile"
export CHECK_REPORT_WIDTHS="${WIDTHS:-1200 640}" CHECK_REPORT_LAYOUT="${LAYOUT:-1}" CHECK_REPORT_HEIGHT="${HEIGHT:-}"
export CHECK_REPORT_JS="$(dirname "$0")/report-layout.js"
exec python3 - <<'PY'
import base64, fcntl, json, os, pathlib, select, subprocess, sys, time

page = pathlib.Path(os.environ["CHECK_REPORT_PAGE"]).resolve()
shot = os.environ["CHECK_REPORT_SHOT"]
full = os.environ["CHECK_REPORT_FULL"] not in ("", "0")
WIDTH, HEIGHT = 1200, int(os.environ.get("CHECK_REPORT_HEIGHT") or 3000)

# Chromium reads commands from fd 3 and writes replies and events to fd 4. The child's
# ends are first moved above 100 so that placing them on 3 and 4 clobbers neither.
def high(fd):
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return moved


to_browser_r, to_browser_w = os.pipe()
from_browser_r, from_browser_w = os.pipe()
to_browser_r, from_browser_w = high(to_browser_r), high(from_browser_w)


def child_fds():
    os.dup2(to_browser_r, 3, inheritable=True)
    os.dup2(from_browser_w, 4, inheritable=True)


flags = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--mute-audio",
    "--user-data-dir=" + os.environ["CHECK_REPORT_PROFILE"],
    "--remote-debugging-pipe", "about:blank",
]
# close_fds=False: the copies on 3 and 4 must survive into Chromium; every other descriptor
# of ours is close-on-exec.
browser = subprocess.Popen(
    [os.environ["CHECK_REPORT_CHROMIUM"], *flags],
    close_fds=False,
    preexec_fn=child_fds,
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    stderr=open(os.path.join(os.environ["CHECK_REPORT_PROFILE"], "chromium.log"), "wb"),
)
os.close(to_browser_r)
os.close(from_browser_w)

buffer = b""
events = []
next_id = 0


def fail(message, code=2):
    print(f"check-report: {message}", file=sys.stderr)
    browser.kill()
    sys.exit(code)


def read_message(deadline):
    """The next message from the browser, or None at the deadline."""
    global buffer
    while b"\0" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([from_browser_r], [], [], left)
        if not ready:
            return None
        chunk = os.read(from_browser_r, 1 << 20)
        if not chunk:
            log = pathlib.Path(os.environ["CHECK_REPORT_PROFILE"], "chromium.log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            fail(f"Chromium closed the DevTools pipe; its log ends:\n{tail}")
        buffer += chunk
    raw, buffer = buffer.split(b"\0", 1)
    return json.loads(raw)


def call(method, params=None, session=None, timeout=30):
    """Sends a command and returns its result; events seen meanwhile are kept."""
    global next_id
    next_id += 1
    message = {"id": next_id, "method": method, "params": params or {}}
    if session:
        message["sessionId"] = session
    os.write(to_browser_w, json.dumps(message).encode() + b"\0")
    deadline = time.monotonic() + timeout
    while True:
        m = read_message(deadline)
        if m is None:
            fail(f"no answer to {method} within {timeout} s")
        if m.get("id") == next_id:
            if "error" in m:
                fail(f"{method}: {m['error']}")
            return m.get("result", {})
        events.append(m)


def wait_for(method, timeout):
    """Waits for an event; True when it came."""
    if any(e.get("method") == method for e in events):
        return True
    deadline = time.monotonic() + timeout
    while True:
        m = read_message(deadline)
        if m is None:
            return False
        events.append(m)
        if m.get("method") == method:
            return True


def drain(seconds):
    deadline = time.monotonic() + seconds
    while (m := read_message(deadline)) is not None:
        events.append(m)


target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
for domain in ("Runtime", "Log", "Page", "Network"):
    call(f"{domain}.enable", session=session)
call("Emulation.setDeviceMetricsOverride",
     {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
     session=session)

problems = []
nav = call("Page.navigate", {"url": page.as_uri()}, session=session)
if nav.get("errorText"):
    problems.append(f"navigation failed: {nav['errorText']}")
elif not wait_for("Page.loadEventFired", 60):
    problems.append("the page did not finish loading within 60 s")
drain(1.0)

# An inline SVG with no box did not render (outside closed <details>, which hide theirs).
sizes = call("Runtime.evaluate", {
    "expression": """(() => {
        const all = [...document.querySelectorAll('svg')]
            .filter(s => !s.closest('details:not([open])'));
        const empty = all.filter(s => { const r = s.getBoundingClientRect();
                                        return r.width < 1 || r.height < 1; });
        return JSON.stringify({svgs: all.length, empty: empty.length,
                               title: document.title, text: document.body.innerText.length});
    })()""",
    "returnByValue": True,
}, session=session)["result"]["value"]
dom = json.loads(sizes)
if dom["empty"]:
    problems.append(f"{dom['empty']} of {dom['svgs']} inline SVGs have no size")
if dom["text"] == 0:
    problems.append("the page has no text")

urls = {e["params"]["requestId"]: e["params"]["request"]["url"]
        for e in events if e.get("method") == "Network.requestWillBeSent"}
for e in events:
    if e.get("sessionId") != session:
        continue
    p, method = e.get("params", {}), e.get("method")
    if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
        problems.append(f"console.{p['type']}: {text}")
    elif method == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails", {})
        problems.append(f"uncaught exception: {d.get('exception', {}).get('description', d.get('text'))}")
    elif method == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
        entry = p["entry"]
        problems.append(f"{entry['level']} ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())
    elif method == "Network.loadingFailed" and not p.get("canceled"):
        url = urls.get(p.get("requestId"), f"request {p.get('requestId')}")
        problems.append(f"failed to load {url}: {p.get('errorText')}")

if os.environ["CHECK_REPORT_LAYOUT"] not in ("", "0"):
    script = pathlib.Path(os.environ["CHECK_REPORT_JS"]).read_text()
    for width in [int(w) for w in os.environ["CHECK_REPORT_WIDTHS"].split()]:
        call("Emulation.setDeviceMetricsOverride",
             {"width": width, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
             session=session)
        drain(0.3)
        found = call("Runtime.evaluate", {"expression": script, "returnByValue": True},
                     session=session, timeout=60)
        if "exceptionDetails" in found:
            fail(f"the layout check threw: {found['exceptionDetails']}")
        problems += [f"at {width} px: {p}" for p in json.loads(found["result"]["value"])]
    call("Emulation.setDeviceMetricsOverride",
         {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
         session=session)

if shot:
    clip = None
    if full:
        size = call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        height = int(size["height"]) + 1
        call("Emulation.setDeviceMetricsOverride",
             {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False},
             session=session)
    png = call("Page.captureScreenshot", {"format": "png"}, session=session, timeout=60)["data"]
    pathlib.Path(shot).write_bytes(base64.b64decode(png))

try:
    call("Browser.close", timeout=10)
except SystemExit:
    pass
try:
    browser.wait(timeout=10)
except subprocess.TimeoutExpired:
    browser.kill()

print(f"check-report: {page}: {dom['svgs']} inline SVGs, title {dom['title']!r}")
if problems:
    for p in problems:
        print(f"check-report: PROBLEM: {p}")
    print(f"check-report: {len(problems)} problem(s)")
    sys.exit(1)
print("check-report: no console errors or warnings, every resource loaded"
      + ("" if os.environ["CHECK_REPORT_LAYOUT"] in ("", "0")
         else f", layout clean at {os.environ['CHECK_REPORT_WIDTHS'].replace(' ', ' and ')} px")
      + (f"; screenshot {shot}" if shot else ""))
PY
