"""The offline documentation site, opened page by page in headless Chromium.

Builds the site with `tools/build_site.py` (nbdev's notebook processing + nbconvert, no Quarto), serves it
on localhost and checks every page: no page is blank, every image decodes, every internal link resolves, every
notebook is in the sidebar, and every exported function and class (from `_modidx.py`) has its API entry.
Screenshots of the home page and the training page go to `test-results/`.
"""
import re, subprocess, sys, time, urllib.request
from pathlib import Path
from urllib.parse import urldefrag
import pytest
from browser import ROOT, RESULTS, chromium_page, serve_folder

# one worker runs this file: its module fixtures are built once (pytest-xdist, `--dist loadgroup`)
pytestmark = pytest.mark.xdist_group("test_browser_docs")

SITE = ROOT/'_site'

@pytest.fixture(scope='module')
def build():
    "Build the site once for this module; the pages are written even when a notebook fails nbdev's processing."
    t0 = time.time()
    r = subprocess.run([sys.executable, 'tools/build_site.py', '--out', str(SITE)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)  # a guard against hangs; a loaded machine needs minutes
    print(f'site built in {time.time()-t0:.0f}s')
    return r

@pytest.fixture(scope='module')
def site(build):
    assert (SITE/'index.html').exists(), f'no site was built:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}'
    return SITE

def test_every_notebook_processes(build):
    "nbdev's docs processing (the step before Quarto in `nbdev-docs`) succeeds on every notebook."
    errors = re.findall(r'^ERROR: .*?(?=^ERROR: |^  processed )', build.stderr + build.stdout, re.M | re.S)
    assert build.returncode == 0, '\n'.join(errors) or build.stderr[-5000:]

def _pages(site): return sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html'))

def _sidebar_entries(items):
    "Notebook paths of `sidebar.yml`'s contents, sections flattened, in order."
    for o in items or []:
        if isinstance(o, str): yield o
        elif isinstance(o, dict): yield from ([o['href']] if 'href' in o else []) + list(_sidebar_entries(o.get('contents')))

def test_sidebar_lists_every_notebook(site):
    "Every notebook in `nbs/` and its subfolders (e.g. `nbs/explanations/`) is in the sidebar, in `sidebar.yml`'s order."
    import yaml
    nbs_dir = ROOT/'nbs'
    nbs = sorted(p.relative_to(nbs_dir).as_posix() for p in [*nbs_dir.glob('*.ipynb'), *nbs_dir.glob('*/*.ipynb')]
                 if not any(o.startswith(('_', '.')) for o in p.relative_to(nbs_dir).parts))
    assert 'explanations/offline_recipe.ipynb' in nbs
    from nbdev.config import nbpath2html
    home = (site/'index.html').read_text()
    nav = re.search(r'<nav class="sidebar">(.*?)</nav>', home, re.S).group(1)
    hrefs = re.findall(r'<a href="([^"]+)"', nav)
    for nb in nbs: assert nbpath2html(nb).as_posix() in hrefs, f'{nb} missing from the sidebar: {hrefs}'
    order = yaml.safe_load((nbs_dir/'sidebar.yml').read_text())['website']['sidebar']['contents']
    expected = [nbpath2html(o).as_posix() for o in _sidebar_entries(order) if (nbs_dir/o).exists()]
    assert [h for h in hrefs[1:] if h in expected] == expected, 'sidebar order differs from sidebar.yml'

def test_api_entry_for_every_exported_symbol(site):
    "Every exported public function and class listed in `_modidx.py` has its `show_doc` entry on its page."
    from text2imagegen._modidx import d
    missing = []
    for mod, syms in d['syms'].items():
        for name, (url, _) in syms.items():
            short = name[len(mod)+1:]
            if '.' in short or short.startswith('_'): continue  # methods are documented with their class; private: none
            page, anchor = url.split('#')
            text = (site/page).read_text() if (site/page).exists() else ''
            if f'id="{anchor}"' not in text: missing.append(f'{name} -> {url}')
    assert not missing, 'API entries missing from the site:\n' + '\n'.join(missing)

def test_every_page_in_chromium(site):
    "Open every page: not blank, images decode, internal links answer 200; screenshot home and training pages."
    RESULTS.mkdir(exist_ok=True)
    pages, checked, problems = _pages(site), {}, []
    assert 'index.html' in pages and 'train.html' in pages, f'home or training page missing: {pages}'
    with serve_folder(site) as base, chromium_page() as page:
        for name in pages:
            url = base + name
            resp = page.goto(url, wait_until='load')
            assert resp and resp.status == 200, f'{url}: HTTP {resp and resp.status}'
            text = page.inner_text('main .cells')  # the notebook's own content: no title, sidebar or footer
            if len(text.strip()) < 40: problems.append(f'{name}: blank page ({text!r})')
            imgs = page.eval_on_selector_all('img', 'els => els.map(e => [e.getAttribute("src").slice(0, 80), e.complete && e.naturalWidth > 0])')
            problems += [f'{name}: image does not decode: {src}' for src, ok in imgs if not ok]
            hrefs = page.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)')
            for href in hrefs:
                target = urldefrag(href)[0]
                if not target.startswith(base): continue  # external (GitHub, hosted docs) links are not ours to check
                if target not in checked:
                    try: checked[target] = urllib.request.urlopen(target, timeout=10).status
                    except Exception as e: checked[target] = repr(e)
                if checked[target] != 200: problems.append(f'{name}: broken internal link {href} ({checked[target]})')
            if name in ('index.html', 'train.html'):
                page.screenshot(path=str(RESULTS/f'docs-{Path(name).stem}.png'), full_page=True)
    assert not problems, '\n'.join(problems)
    assert (RESULTS/'docs-index.png').stat().st_size > 0 and (RESULTS/'docs-train.png').stat().st_size > 0

def test_readme_images_work_on_github_and_site(site):
    """The README shows the sample grid and loss curve of the offline default run (committed under `nbs/images/`):
    its relative image paths exist from the repository root (GitHub), and index.ipynb's paths exist on the site."""
    readme = (ROOT/'README.md').read_text()
    found = re.findall(r'!\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src="([^"]+)"', readme)  # markdown or HTML images
    rel = [p for pair in found for p in pair if p and not re.match(r'^[a-z]+:', p)]
    for p in rel: assert (ROOT/p).is_file(), f'README image {p} does not exist in the repository (broken on GitHub)'
    for name in ('sample_grid.png', 'loss_curve.png'):
        assert f'nbs/images/{name}' in rel, f'README does not show nbs/images/{name} (from ![...](images/{name}) in index.ipynb)'
        assert f'src="images/{name}"' in (site/'index.html').read_text(), f'the home page does not show images/{name}'
        assert (site/'images'/name).is_file()
