"Run every notebook in `nbs/` and its subfolders as a test, exactly as `nbdev-test` does (same flags, same IN_TEST)."
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

cfg = get_config()
notebooks = sorted(p for p in cfg.nbs_path.glob('**/*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(cfg.nbs_path).parts))
skip_flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags)

@pytest.mark.parametrize('nb', notebooks, ids=[p.relative_to(cfg.nbs_path).with_suffix('').as_posix() for p in notebooks])
def test_notebook(nb, monkeypatch):
    monkeypatch.chdir(nb.parent)  # as nbdev-test does: relative paths in a notebook start at its own folder
    ok, secs = run_notebook(nb, skip_flags=skip_flags, basepath=cfg.config_path, cell_timeout=cfg.cell_timeout)
    print(f'{nb.name}: {secs:.0f}s')
    assert ok, f'{nb.name} failed (its traceback is printed above)'
