"""Stored notebook outputs stay lean: every notebook under `nbs/` (explanations and tutorials included) is checked
without running it.

- each picture is stored once: one `image/*` type per output, and no HTML copy (`<img` or base64) beside it;
- one cell's outputs take at most 100 KB (the length of their JSON);
- one notebook's outputs take at most 600 KB in all: a lesson needs a handful of small figures, and a larger
  figure belongs in `nbs/images/`, shown through a markdown link;
- no widget state in the notebook's metadata (`metadata.widgets`): it is large, and the docs do not need it.

A figure that is too large is re-rendered smaller (fewer or smaller images, a lower dpi) or saved under `nbs/images/`.
"""
import json
import pytest
from nbdev.config import get_config

CELL_BUDGET = 100_000      # bytes of output JSON per cell
NOTEBOOK_BUDGET = 600_000  # bytes of output JSON per notebook

cfg = get_config()
notebooks = sorted(p for p in cfg.nbs_path.glob('**/*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(cfg.nbs_path).parts))

def output_size(outputs:list) -> int:
    "Bytes of the JSON of a cell's `outputs`."
    return len(json.dumps(outputs))

def picture_twins(output:dict) -> list:
    "The mime types of `output` that hold the same picture more than once ([] when it is stored once)."
    data = output.get('data') or {}
    images = [m for m in data if m.startswith('image/')]
    html = ''.join(data.get('text/html') or '')
    html_copy = ['text/html'] if images and ('<img' in html or 'base64' in html) else []
    return images + html_copy if len(images) > 1 or html_copy else []

def output_problems(nb:dict, name:str) -> list:
    "One line per problem with the stored outputs of notebook `nb` (named `name`)."
    problems, total = [], 0
    if 'widgets' in nb.get('metadata', {}):
        problems.append(f'{name}: widget state in metadata.widgets ({len(json.dumps(nb["metadata"]["widgets"])):,} bytes)')
    for i, cell in enumerate(nb['cells']):
        outputs = cell.get('outputs') or []
        where, size = f'{name} cell {cell.get("id", i)}', output_size(outputs)
        total += size
        for k, o in enumerate(outputs):
            if twins := picture_twins(o):
                problems.append(f'{where} output {k}: one picture stored as {", ".join(twins)} ({output_size([o]):,} bytes)')
        if size > CELL_BUDGET: problems.append(f'{where}: outputs take {size:,} bytes (limit {CELL_BUDGET:,})')
    if total > NOTEBOOK_BUDGET: problems.append(f'{name}: outputs take {total:,} bytes in all (limit {NOTEBOOK_BUDGET:,})')
    return problems

def test_output_problems_are_found():
    png, jpeg = {'image/png': 'iVBOR', 'text/plain': '<Figure>'}, {'image/jpeg': '/9j/'}
    nb = lambda *outputs, **metadata: dict(metadata=metadata, cells=[dict(id='c1', outputs=list(outputs))])
    assert output_problems(nb(dict(data=png)), 'a.ipynb') == []
    assert output_problems(nb(dict(data={**png, **jpeg})), 'a.ipynb')[0].startswith('a.ipynb cell c1 output 0: one picture stored as image/png, image/jpeg')
    assert 'text/html' in output_problems(nb(dict(data={**png, 'text/html': '<img src="data:image/png;base64,iVBOR">'})), 'a.ipynb')[0]
    assert output_problems(nb(dict(data={'text/html': '<b>a table</b>', **png})), 'a.ipynb') == []
    big = dict(data={'image/png': 'A' * (CELL_BUDGET + 1)})
    assert 'outputs take' in output_problems(nb(big), 'a.ipynb')[0]
    assert 'in all' in output_problems(nb(*[dict(data={'image/png': 'A' * 90_000})] * 7), 'a.ipynb')[-1]
    assert 'metadata.widgets' in output_problems(nb(widgets={'state': {}}), 'a.ipynb')[0]

@pytest.mark.parametrize('nb', notebooks, ids=[p.relative_to(cfg.nbs_path).with_suffix('').as_posix() for p in notebooks])
def test_stored_outputs_are_lean(nb):
    problems = output_problems(json.loads(nb.read_text(encoding='utf-8')), nb.relative_to(cfg.nbs_path).as_posix())
    if problems: pytest.fail('\n'.join(problems), pytrace=False)
