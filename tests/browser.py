"Shared helpers for the browser tests: Debian's Chromium driven by Playwright, free ports, a static file server."
from __future__ import annotations
import contextlib, functools, os, shutil, socket, tempfile, threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'test-results'
CHROMIUM = os.environ.get('CHROMIUM_PATH') or shutil.which('chromium') or '/usr/bin/chromium'
# Flags for a closed network: no background requests to Google, no sandbox when running as root.
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage']

def free_port() -> int:
    "A free TCP port on localhost."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

@contextlib.contextmanager
def chromium_page(viewport=(1280, 900)):
    "Yield a Playwright page in headless Debian Chromium (never a downloaded browser); FAIL clearly if it is missing."
    if not Path(CHROMIUM).exists():
        pytest.fail(f'Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` '
                    '(Debian package; .ci/run does this) or set CHROMIUM_PATH.', pytrace=False)
    try: from playwright.sync_api import sync_playwright
    except ImportError: pytest.fail('playwright is not installed: `pip install playwright` (do not run `playwright install`).', pytrace=False)
    with tempfile.TemporaryDirectory(prefix='chromium-profile-') as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={'width': viewport[0], 'height': viewport[1]})
        try: yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally: ctx.close()

class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

@contextlib.contextmanager
def serve_folder(folder:Path):
    "Serve `folder` over HTTP on a free localhost port in a background thread; yield the base URL."
    server = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try: yield f'http://127.0.0.1:{server.server_address[1]}/'
    finally:
        server.shutdown()
        server.server_close()
