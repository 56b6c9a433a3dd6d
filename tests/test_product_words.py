"""The product speaks only of itself: no tracked text file says how it came about (tracker numbers, work periods,
critiques, which default came before which). A reader of the code needs statements about the product ("the default
with self-attention"). The words are assembled below so that this file does not hold them itself."""
import re, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACKER_WORD, PERIOD_WORD, CRITIQUE_WORD = 'iss' + 'ue', 'sess' + 'ion', 're' + 'view'  # the words, assembled
FORBIDDEN = re.compile(rf'''\b{TRACKER_WORD}s?\b\s*(?:[-#]\s*)?\d    # a tracker number: word, optional - or #, digits
                           |\b{TRACKER_WORD}s?\s*\#                  # word then #
                           |\b{PERIOD_WORD}s?\b                    # a work period
                           |\b{CRITIQUE_WORD}(?:s|ed|er|ers)?\b       # a critique of the work
                           |\b(?:new|previous|old)\s+default\b''', re.I | re.X)
SKIP_SUFFIXES = {'.png', '.jpg', '.jpeg', '.gif', '.webp', '.ico', '.pdf', '.safetensors', '.pt', '.bin', '.zip', '.gz'}
ALLOWED = {  # path -> pattern of lines that may match: configuration, not prose
    'nbs/_quarto.yml': re.compile(r'^\s*repo-actions:\s*\[issue\]\s*$'),
}

def tracked_text_files() -> list[Path]:
    "Every file `git ls-files` lists (tracked, or new and not ignored), except images and other binaries and this test."
    names = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT, capture_output=True, check=True).stdout.decode().split('\0')
    files = []
    for name in filter(None, names):
        p = ROOT/name
        if p.suffix.lower() in SKIP_SUFFIXES or not p.is_file(): continue
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
    for bad in [f'({TRACKER_WORD} 7)', f'the {TRACKER_WORD}-7 targets', f'{TRACKER_WORD} #12', f'the ninth {PERIOD_WORD}', f'a {PERIOD_WORD}',
                f'{CRITIQUE_WORD.title()} mend', f'numbers a {CRITIQUE_WORD}er would accept', f'{CRITIQUE_WORD}ed by', *(f'the {age} ' + 'def' + 'ault' for age in ('new', 'previous', 'old'))]:
        assert FORBIDDEN.search(bad), bad
    for ok in [f'a known {TRACKER_WORD} with fonts', f'start_new_{PERIOD_WORD}=True', 'the default with self-attention', 'default: 4',
               f'{PERIOD_WORD}Storage', f'p{CRITIQUE_WORD}er']:
        assert not FORBIDDEN.search(ok), ok

def test_tracked_files_speak_of_the_product():
    files = tracked_text_files()
    assert any(p.name == 'README.md' for p in files) and any(p.suffix == '.ipynb' for p in files)
    found = [h for p in files for h in hits(p)]
    assert not found, 'Product text that says how it came about:\n' + '\n'.join(found)
