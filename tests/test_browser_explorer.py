"""The prompt explorer in a real browser: Voilà serves `tests/explorer_app.ipynb` (a `PromptExplorer` on a tiny
random-weight model) on localhost, headless Chromium types a prompt, clicks Generate and waits for the images,
then restores the settings from the history.
A screenshot goes to `test-results/explorer.png`; the server is shut down afterwards.
"""
import pytest
from browser import ROOT, RESULTS, chromium_page, voila_app

APP = ROOT/'tests'/'explorer_app.ipynb'

@pytest.fixture
def voila_url(tmp_path):
    "Voilà serving the explorer app on localhost (its log is printed afterwards)."
    try:
        with voila_app(APP, tmp_path, env={'IN_TEST': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}) as url: yield url
    finally: print((tmp_path/'voila.log').read_text()[-2000:])

def test_explorer_generates_in_chromium(voila_url):
    RESULTS.mkdir(exist_ok=True)
    with chromium_page(viewport=(1100, 900)) as page:
        page.goto(voila_url, timeout=150_000)
        prompt = page.locator('textarea')
        prompt.wait_for(state='visible', timeout=150_000)  # Voilà has run the notebook: the explorer is on screen
        generate = page.locator('button', has_text='Generate')
        prompt.fill('a large red circle on the left')
        generate.click()
        page.wait_for_selector('text=/2 images in/', timeout=60_000)
        sizes = page.eval_on_selector_all('img', 'els => els.filter(e => e.complete).map(e => [e.naturalWidth, e.width])')
        result_images = [s for s in sizes if s[0] == 32 and s[1] == 128]  # 32 px images shown at 128 px
        assert len(result_images) == 2, f'expected 2 generated images, got {sizes}'
        assert page.locator('.t2i-error').count() == 0, page.locator('.t2i-error').first.inner_text()
        history = page.locator('button', has_text='a large red circle on the left')
        assert history.count() == 1 and 'seed 0' in history.first.inner_text()
        assert generate.is_enabled()
        page.screenshot(path=str(RESULTS/'explorer.png'), full_page=True)
        prompt.fill('a small blue square')  # clicking the history entry brings the settings back
        history.first.click()
        page.wait_for_function('() => document.querySelector("textarea").value === "a large red circle on the left"', timeout=20_000)
