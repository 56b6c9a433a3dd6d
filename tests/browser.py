"Shared helpers for the browser tests: Debian's Chromium driven by Playwright, free ports, a static file server, Voilà."
from __future__ import annotations
import contextlib, functools, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request
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

@contextlib.contextmanager
def voila_app(notebook:Path, # The notebook Voilà serves as an app
              cwd:Path,      # Folder Voilà runs in; its log goes to `voila.log` there
              env:dict|None=None, # Extra environment variables for Voilà and its kernel
             ):
    "Serve `notebook` with Voilà on a free localhost port; yield its URL; stop Voilà and its kernel afterwards."
    port, log_path = free_port(), Path(cwd)/'voila.log'
    cmd = [sys.executable, '-m', 'voila', str(notebook), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
           '--show_tracebacks=True', '--VoilaConfiguration.http_keep_alive_timeout=120']
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
        url = f'http://127.0.0.1:{port}/'
        try:
            for _ in range(300):  # the server itself starts in seconds; the notebook runs once a page asks for it
                if proc.poll() is not None: raise RuntimeError(f'Voilà exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}')
                try: urllib.request.urlopen(url + 'voila/static/', timeout=2)
                except urllib.error.HTTPError: break  # any HTTP answer means the server is up
                except OSError: time.sleep(0.2)
                else: break
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # Voilà and the kernel it started
            try: proc.wait(timeout=20)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
