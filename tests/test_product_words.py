"""The product speaks only of itself: no tracked text file mentions issue numbers, sessions, reviews or which default
came before which. Such phrases belong in commit messages and trackers; a reader of the code needs statements about
the product ("the default with self-attention", not "the previous default")."""
import re, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r'''\bissues?\b\s*(?:[-#]\s*)?\d     # "issue 7", "issue-7", "issues #3"
                          |\bissues?\s*\#                   # "issue #..."
                          |\bsessions?\b                    # "ninth session"
                          |\breview(?:s|ed|er|ers)?\b       # "reviewer", "review mend"
                          |\b(?:new|previous|old)\s+default\b''', re.I | re.X)
SKIP_SUFFIXES = {'.png', '.jpg', '.jpeg', '.gif', '.webp', '.ico', '.pdf', '.safetensors', '.pt', '.bin', '.zip', '.gz'}
ALLOWED = {  # path -> pattern of lines that may match: configuration, not prose
    'nbs/_quarto.yml': re.compile(r'^\s*repo-actions:\s*\[issue\]\s*$'),
}

def tracked_text_files() -> list[Path]:
    "Every file `git ls-files` lists (tracked, or new and not ignored), except images and other binaries and this test (which must hold the patterns)."
    names = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT, capture_output=True, check=True).stdout.decode().split('\0')
    files = []
    for name in filter(None, names):
        p = ROOT/name
        if p.suffix.lower() in SKIP_SUFFIXES or p.resolve() == Path(__file__).resolve() or not p.is_file(): continue
        data = p.read_bytes()
        if b'\0' in data[:8192]: continue  # binary
        files.append(p)
    return files

def hits(path:Path) -> list[str]:
    "file:line: text for every line of `path` with a forbidden phrase (allowed configuration lines excepted)."
    rel = path.relative_to(ROOT).as_posix()
    allowed = ALLOWED.get(rel)
    text = path.read_text(encoding='utf-8', errors='replace')
    return [f'{rel}:{i}: {line.strip()[:160]}' for i, line in enumerate(text.splitlines(), 1)
            if FORBIDDEN.search(line) and not (allowed and allowed.search(line))]

def test_patterns():
    "The patterns catch the phrases they are meant for and leave ordinary words alone."
    for bad in ['(issue 7)', 'the issue-7 targets', 'issue #12', 'the ninth session', 'a session', 'Review mend',
                'numbers a reviewer would accept', 'reviewed by', 'the new default', 'the previous default', 'the old default']:
        assert FORBIDDEN.search(bad), bad
    for ok in ['a known issue with fonts', 'start_new_session=True', 'the default with self-attention', 'default: 4',
               'sessionStorage', 'previewer']:
        assert not FORBIDDEN.search(ok), ok

def test_tracked_files_speak_of_the_product():
    files = tracked_text_files()
    assert any(p.name == 'README.md' for p in files) and any(p.suffix == '.ipynb' for p in files)
    found = [h for p in files for h in hits(p)]
    assert not found, 'Mentions of issues, sessions, reviews or default history:\n' + '\n'.join(found)
