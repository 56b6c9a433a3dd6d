"""Build the documentation site offline, without Quarto.

`nbdev-docs` renders the docs with Quarto. Quarto cannot be installed everywhere, so this script builds
the same pages with what pip gives us: nbdev processes the notebooks exactly as it does for Quarto
(`nbdev.processors.FilterDefaults`, as `nbdev-proc-nbs` does: front matter, `show_doc` API entries for every exported symbol, cross-reference
links, hidden cells removed), and nbconvert renders each processed notebook to static HTML. Every page
gets a sidebar listing the notebooks in the order of `nbs/sidebar.yml`; notebooks in subfolders (e.g.
`nbs/explanations/`) become pages in the same subfolders of the site; stored outputs (sample grids,
loss curves, tables) are embedded in the pages, and other files under `nbs/` (e.g. `nbs/images/`) are
copied next to them.

Usage (from the repository root):

    python tools/build_site.py            # writes _site/, prints where
    python tools/build_site.py --out /tmp/site
"""
from __future__ import annotations
import argparse, html, os, posixpath, re, shutil, sys, time
from pathlib import Path

import yaml, nbformat
from nbconvert import HTMLExporter
from nbdev.config import get_config, nbpath2html

_re_fence = re.compile(r'^:::+\s*(\{([^}]*)\})?\s*$', re.MULTILINE)
_re_directive = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$')
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
ACTIVE = ' class="active"'
_CELL_KEYS = {'cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments'}

def sidebar_notebooks(
    nbs_path:Path, # The notebooks folder (holds `sidebar.yml`)
) -> list[str]: # Notebook paths relative to `nbs_path` ('02_train.ipynb', 'explanations/x.ipynb'), in sidebar order
    "Notebooks listed in `sidebar.yml` (sections flattened), then any other notebook in `nbs_path` or one folder below it."
    def _flat(items):
        for o in items or []:
            if isinstance(o, str): yield o
            elif isinstance(o, dict):
                if 'href' in o: yield o['href']
                yield from _flat(o.get('contents'))
    sb = nbs_path/'sidebar.yml'
    listed = list(_flat(yaml.safe_load(sb.read_text())['website']['sidebar']['contents'])) if sb.exists() else []
    existing = sorted(p.relative_to(nbs_path).as_posix() for p in [*nbs_path.glob('*.ipynb'), *nbs_path.glob('*/*.ipynb')]
                      if not any(o.startswith(('_', '.')) for o in p.relative_to(nbs_path).parts))
    return [o for o in listed if o in existing] + [o for o in existing if o not in listed]

def process_notebook(
    path:Path, # A notebook in `nbs/`
) -> nbformat.NotebookNode: # The notebook as nbdev prepares it for Quarto
    """nbdev's docs processing of one notebook (what `nbdev-proc-nbs` does before Quarto renders it): front matter,
    `show_doc` API entries for exported symbols, cross-reference links, hidden cells and directives handled."""
    from fastcore.nbio import read_nb, nb2str
    from nbdev.processors import FilterDefaults
    nb = read_nb(path)
    os.environ['IN_TEST'] = '1'  # as nbdev's processing workers do
    try: FilterDefaults()(nb)
    finally: os.environ.pop('IN_TEST', None)
    return nbformat.reads(nb2str(nb), as_version=4)

def _directives(src:str) -> tuple[dict, str]:
    "Split the leading `#| key: value` lines of a cell from the rest of its source."
    lines, d = src.splitlines(), {}
    while lines and (m := _re_directive.match(lines[0])):
        d[m.group(1)] = m.group(2).strip().strip('"\'')
        lines.pop(0)
    return d, '\n'.join(lines).strip('\n')

_re_link_attrs = re.compile(r'(\[[^\]]*\]\([^)\s]*\))\{[^}\n]*\}')

def _quarto_md(md:str) -> str:
    "Plain markdown from Quarto markdown: fenced divs become HTML divs, link attributes (`[source](url){target=...}`) go."
    return _re_link_attrs.sub(r'\1', _fences_to_divs(md))

def _fences_to_divs(md:str) -> str:
    "Turn Quarto fenced divs (`::: {.callout-note}` ... `:::`) into HTML divs."
    def _sub(m):
        if not m.group(1): return '\n</div>\n'
        classes = ' '.join(o[1:] for o in m.group(2).split() if o.startswith('.'))
        return f'\n<div class="{html.escape(classes)}">\n'
    return _re_fence.sub(_sub, md)

def _frontmatter(nb) -> dict:
    "Front matter nbdev put in the first raw cell (title, description, output-file)."
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.strip().startswith('---'):
            return yaml.safe_load(c.source.strip().strip('-')) or {}
    return {}

def _heading(nb) -> str|None:
    "The first level-1 markdown heading of an unprocessed notebook (its title when nbdev could not process it)."
    for c in nb.cells:
        if c.cell_type == 'markdown' and (m := re.match(r'#\s+(.+)', c.source.strip())): return m.group(1).strip()

def _widget_note(output):
    "Replace a live widget output (needs a kernel) by a short note; keep its plain-text fallback out."
    return nbformat.v4.new_output('display_data', data={'text/html':
        '<p class="widget-note">Interactive widget: run this notebook in Jupyter (or Voilà) to use it.</p>'})

def clean_for_html(nb) -> None:
    "Apply the Quarto cell options nbdev leaves in processed notebooks, in place (echo, include, output)."
    cells = []
    for c in nb.cells:
        if c.cell_type == 'raw': continue  # front matter, rendered as the page header
        if c.cell_type == 'markdown':
            if not c.source.strip() or _re_fence.fullmatch(c.source.strip()): continue
            c.source = _quarto_md(c.source)
        if c.cell_type == 'code':
            d, c.source = _directives(c.source)
            if d.get('include') == 'false' or d.get('eval') == 'false' and not c.get('outputs'): continue
            if d.get('output') == 'false': c.outputs = []
            if d.get('echo') == 'false': c.source = ''
            c.outputs = [_widget_note(o) if WIDGET_VIEW in o.get('data', {}) else o for o in c.get('outputs', [])]
            for o in c.outputs:  # show_doc entries are markdown outputs
                if 'text/markdown' in o.get('data', {}): o.data['text/markdown'] = _quarto_md(o.data['text/markdown'])
            if not c.source and not c.outputs: continue
            if not c.source: c.metadata.setdefault('tags', []).append('hide_input')
        for k in set(c) - _CELL_KEYS: del c[k]  # nbdev's bookkeeping (e.g. `has_sd`) is not valid nbformat
        c.metadata = nbformat.NotebookNode({k: v for k, v in c.metadata.items() if k == 'tags'})
        cells.append(c)
    nb.cells = cells
    nb.metadata.pop('widgets', None)

def _exporter() -> HTMLExporter:
    "nbconvert's body-only ('basic') HTML exporter, without prompts and with empty code inputs hidden."
    from traitlets.config import Config
    c = Config()
    c.HTMLExporter.exclude_input_prompt = True
    c.HTMLExporter.exclude_output_prompt = True
    c.HTMLExporter.anchor_link_text = '#'
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'hide_input'}
    exporter = HTMLExporter(config=c, template_name='basic')
    # the template passes highlighted code through bleach (`clean_html`), by far the slowest step; these are our own notebooks
    exporter.register_filter('clean_html', lambda html_text: html_text)
    return exporter

def _css() -> str:
    "Page style: a fixed sidebar, readable text width, boxed API entries, code highlighting."
    from pygments.formatters import HtmlFormatter
    return HtmlFormatter(style='default').get_style_defs('.highlight') + '''
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;color:#212529}
nav.sidebar{position:fixed;top:0;left:0;bottom:0;width:230px;overflow-y:auto;background:#f6f7f9;border-right:1px solid #dde;padding:1rem}
nav.sidebar a{display:block;padding:.25rem .5rem;color:#2c3e50;text-decoration:none;border-radius:4px}
nav.sidebar a.active{background:#2780e3;color:#fff} nav.sidebar .site-title{font-weight:700;font-size:1.2rem;margin-bottom:1rem}
main{margin-left:262px;max-width:960px;padding:1rem 2rem 4rem}
.description p{font-size:1.15rem;color:#555} .jp-RenderedHTMLCommon img, img{max-width:100%}
.input_area, pre{background:#f8f9fa;border-radius:4px;padding:.4rem .6rem;overflow-x:auto}
.output_area pre{background:none} table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2rem .5rem}
blockquote{margin:0;padding:.3rem 1rem;background:#f8f9fa;border-left:3px solid #2780e3}
.widget-note{color:#666;font-style:italic} .anchor-link{visibility:hidden;margin-left:.3rem} :hover>.anchor-link{visibility:visible}
footer{margin-top:3rem;color:#888;font-size:.85rem} hr + p:has(> a:only-child){float:right;font-size:smaller;margin:0}
'''

def _page(title, description, body, nav, site_title, root='') -> str:
    "Wrap a rendered notebook body into a standalone HTML page with the sidebar; `root` leads from the page to the site's root."
    import mistune  # nbconvert's markdown renderer; descriptions may hold `code` and links
    desc = f'<div class="description">{mistune.html(description)}</div>' if description else ''
    return f'''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} – {html.escape(site_title)}</title><link rel="stylesheet" href="{root}site.css"></head>
<body><nav class="sidebar"><div class="site-title"><a href="{root}index.html">{html.escape(site_title)}</a></div>{nav}</nav>
<main><h1 class="title">{html.escape(title)}</h1>{desc}
<div class="cells">
{body}
</div>
<footer>Built offline from the notebooks by <code>tools/build_site.py</code> (nbdev processing + nbconvert).</footer></main>
</body></html>
'''

def _fix_links(body:str, doc_url:str, pages:dict[str,str], page:str='index.html') -> str:
    "Make links to the hosted docs relative, links to notebooks point at their pages, heading ids Quarto-style."
    here = posixpath.dirname(page)  # the page's folder in the site ('' at the root)
    body = body.replace(f'href="{doc_url}', 'href="' + _root(page))
    # Quarto (and so nbdev's symbol index, `_modidx.py`) lower-cases heading ids: `data.html#render`
    body = re.sub(r'(<h[1-6] id="|<a class="anchor-link" href="#)([^"]+)"', lambda m: m.group(1)+m.group(2).lower()+'"', body)
    def _nb(m):
        name, frag = posixpath.normpath(posixpath.join(here, m.group(2))), m.group(3) or ''
        return f'{m.group(1)}{posixpath.relpath(pages.get(name, nbpath2html(name).as_posix()), here or ".")}{frag}"'
    return re.sub(r'(href=")(?![a-z]+:)([^":#]+\.ipynb)(#[^"]*)?"', _nb, body)

def _root(page:str) -> str:
    "The relative path from a page of the site to the site's root: '' for 'train.html', '../' for 'explanations/x.html'."
    return '../' * page.count('/')

def build_site(
    out:str|Path|None=None, # Output folder (default: `_site/` in the repository root)
) -> Path: # The output folder; open `index.html`
    "Process the notebooks with nbdev and render them, with a sidebar, to a static HTML site."
    cfg = get_config()
    nbs, out = cfg.nbs_path, Path(out or cfg.config_path/'_site')
    os.chdir(cfg.config_path)  # nbdev's processors expect to run from the project root
    nbs_read, failed = {}, {}
    for n in sidebar_notebooks(nbs):
        t0 = time.time()
        try: nbs_read[n] = process_notebook(nbs/n)
        except Exception as e:  # report, and still build the other pages
            failed[n] = f'{type(e).__name__}: {e}'
            print(f'ERROR: nbdev could not process {n} for the docs (the same error stops `nbdev-docs`):\n{failed[n]}\n', file=sys.stderr)
            nbs_read[n] = nbformat.read(nbs/n, as_version=4)
        print(f'  processed {n} in {time.time()-t0:.1f}s')
    fms = {n: _frontmatter(nb) for n, nb in nbs_read.items()}
    pages = {n: posixpath.join(posixpath.dirname(n), fms[n].get('output-file') or nbpath2html(n).name) for n in nbs_read}
    titles = {n: str(fms[n].get('title') or _heading(nbs_read[n]) or Path(n).stem) for n in nbs_read}
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in nbs.rglob('*'):  # images and other files the notebooks link to (nbdev copies them the same way)
        rel = f.relative_to(nbs)
        if f.is_file() and f.suffix not in ('.ipynb', '.yml', '.yaml') and not any(p.startswith(('.', '_')) for p in rel.parts):
            (out/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out/rel)
    (out/'site.css').write_text(_css())
    site_title = cfg.get('title') or cfg.lib_name
    doc_url = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/' if cfg.get('doc_host') else 'https://invalid.example/'
    exporter = _exporter()
    for n, nb in nbs_read.items():
        root = _root(pages[n])
        nav = ''.join(f'<a href="{root}{pages[m]}"{ACTIVE if m == n else ""}>{html.escape(titles[m])}</a>' for m in nbs_read)
        clean_for_html(nb)
        body, _ = exporter.from_notebook_node(nb, resources={'metadata': {'path': str((nbs/n).parent)}})
        page = _page(titles[n], str(fms[n].get('description') or ''), _fix_links(body, doc_url, pages, pages[n]), nav, site_title, root)
        (out/pages[n]).parent.mkdir(parents=True, exist_ok=True)
        (out/pages[n]).write_text(page, encoding='utf-8')
    print(f'Offline docs site: {len(nbs_read)} pages in {out} (open {out/"index.html"})')
    if failed: raise RuntimeError(f'nbdev failed to process {", ".join(failed)} (see above); their pages lack API entries')
    return out

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=None, help='Output folder (default: _site/ in the repository root)')
    a = ap.parse_args()
    t0 = time.time()
    try: build_site(a.out)
    except RuntimeError as e: sys.exit(f'{e}')
    print(f'Built in {time.time()-t0:.1f}s')
