"""Make the prompt explorer's screenshot for the docs (`nbs/images/explorer.png`) from a trained model.

Voilà serves a two-cell app notebook (`PromptExplorer(RUN)`, as `nbs/05_explorer.ipynb` describes), headless
Chromium (Debian's, as in the browser tests) types the prompt, clicks Generate, waits for the images and takes the
screenshot, which is stored as a 256-colour PNG to stay small. The model's weights stay in the run folder; only the
picture is kept in git.

Usage (from the repository root, after `t2i-train`, the offline default run, has written `runs/default`):

    python tools/explorer_screenshot.py runs/default
    python tools/explorer_screenshot.py runs/default --prompt "three small green triangles" --out /tmp/explorer.png
"""
from __future__ import annotations
import argparse, sys, tempfile
from pathlib import Path

import nbformat
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from browser import chromium_page, voila_app  # noqa: E402

def app_notebook(run:Path, n_images:int) -> nbformat.NotebookNode:
    "The Voilà app: a `PromptExplorer` on `run`."
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('import diffusers, transformers\nfrom text2imagegen.explorer import PromptExplorer\n'
                                  'diffusers.utils.logging.disable_progress_bar(); transformers.utils.logging.disable_progress_bar()'),
        nbformat.v4.new_code_cell(f'PromptExplorer({str(run)!r}, n_images={n_images})')])

def screenshot(run:Path, prompt:str, out:Path, n_images:int=4, width:int=760):
    "Open the explorer on `run` in Chromium, generate `n_images` for `prompt` (seed 0) and save the page to `out`."
    with tempfile.TemporaryDirectory(prefix='t2i-explorer-') as tmp:
        app = Path(tmp)/'explorer.ipynb'
        nbformat.write(app_notebook(run.resolve(), n_images), app)
        with voila_app(app, Path(tmp), env={'TOKENIZERS_PARALLELISM': 'false'}) as url, chromium_page(viewport=(width, 600)) as page:
            page.goto(url, timeout=300_000)
            box = page.locator('textarea')
            box.wait_for(state='visible', timeout=300_000)  # Voilà has run the app: the explorer is on screen
            box.fill(prompt)
            page.locator('button', has_text='Generate').click()
            page.wait_for_selector(f'text=/{n_images} images in/', timeout=300_000)
            if page.locator('.t2i-error').count(): raise RuntimeError(page.locator('.t2i-error').first.inner_text())
            png = Path(tmp)/'page.png'
            page.screenshot(path=str(png), full_page=True)
        Image.open(png).convert('RGB').quantize(256).save(out, optimize=True)
    print(f'Wrote {out} ({out.stat().st_size:,} bytes)')

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('run', type=Path, help='run folder (or pipeline folder) of a trained model, e.g. runs/default')
    parser.add_argument('--prompt', default='a blue square above a yellow triangle', help='prompt typed into the explorer')
    parser.add_argument('--out', type=Path, default=ROOT/'nbs'/'images'/'explorer.png', help='where the PNG goes')
    args = parser.parse_args()
    screenshot(args.run, args.prompt, args.out)
