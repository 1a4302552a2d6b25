"""The built chapters in headless Chromium, as a reader sees them with no network: math typeset
by the book's own MathJax, figures drawn by its own plotly.js, a kernel-free slider redrawing its
figure when dragged with the mouse, citations linked to the bibliography, and a console free of
errors. Chapter 1 and the chapters whose figures are built differently (two sliders, committed
results) are checked.

``make browser`` builds the book and runs these. They need Debian's ``chromium`` and
``chromium-driver`` and download nothing: the driver is named, so Selenium Manager never runs.
A full-page screenshot of each is left in ``_build/browser/`` for humans.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
from chromium import chromium, save_full_page_screenshot
from chromium import wait_for as wait_until
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "_build" / "html"
# chapter -> (plotly figures it draws at least, the first author of the paper it cites)
CHAPTERS = {"01_isgd_vs_esgd": (3, "Fagan"), "04_sibp": (2, "Liu"), "05_taylor_regret": (1, "Balduzzi"),
            "06_shattered_gradients": (1, "Balduzzi"), "07_large_learning_rates": (2, "Anonymous"),
            "08_alternative_losses": (3, "Anonymous")}
RENDER_TIMEOUT = 30  # seconds for MathJax and plotly to finish on a slow machine

# Errors on our pages that come from the book tooling, not from the book, and that no setting fixes:
# sphinx-thebe registers its inline config script during reading, Sphinx 7.4 then emits it twice
# (once registered as filename None, once as ''), and the second `const` declaration throws.
UPSTREAM_CONSOLE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

# The first figure with a slider: its slider, the traces the slider's steps redraw (their y data,
# the drawn line of the first shown one, the step data the active step says they show) and the
# current-value label.
READ_SLIDER_FIGURE = """
const gd = [...document.querySelectorAll('.js-plotly-plot')]
    .find(el => el.layout && el.layout.sliders && el.layout.sliders.length);
if (!gd) return null;
const slider = gd.layout.sliders[0];
const active = slider.active || 0;
const args = slider.steps[active].args;  // restyle: [data, traces]; update: [data, layout, traces]
const [data, traces] = [args[0], args[args.length - 1]];
const numbers = v => JSON.stringify(Array.from(v));
// the drawn path of the first shown trace the slider redraws (fixed series are drawn once, and
// hidden traces are not drawn at all, so count the shown traces before it)
const shown = gd._fullData.map(t => t.visible === true);
const first = traces.find(i => shown[i]);
const drawn = gd.querySelectorAll('.scatterlayer .trace')[shown.slice(0, first).filter(Boolean).length];
const line = drawn && drawn.querySelector('path.js-line');
return {
  figure: gd,
  active: active,
  labels: slider.steps.map(step => step.label),
  y: traces.map(i => numbers(gd.data[i].y)),
  stepY: data.y.map(numbers),
  prefix: slider.currentvalue.prefix,
  currentValue: gd.querySelector('.slider-group > text.slider-label').textContent,
  line: line && line.getAttribute('d'),
};
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the test reports failures itself
        pass


@pytest.fixture(scope="module")
def site_url():
    """``_build/html`` served on a free loopback port for the module's tests."""
    missing = [name for name in CHAPTERS if not (SITE / "book" / f"{name}.html").is_file()]
    if missing:
        pytest.fail(f"{SITE}/book/{missing[0]}.html is missing: run `make book` first (or `make browser`, which does).")
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with a fresh profile, keeping the console log."""
    with chromium(RENDER_TIMEOUT) as driver:
        yield driver


@pytest.fixture(scope="module", params=list(CHAPTERS))
def chapter(request, browser, site_url):
    """A chapter, loaded, given time to typeset and draw, and photographed for humans."""
    browser.get(f"{site_url}/book/{request.param}.html")
    browser.chapter_name = request.param
    try:
        wait_for(browser, "return window.MathJax && MathJax.startup && MathJax.startup.promise"
                          " && document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        browser.execute_async_script("MathJax.startup.promise.then(() => arguments[0]())")
    except TimeoutException:
        pass  # the tests below say what did not render; the screenshot shows it
    save_full_page_screenshot(browser, REPO / "_build" / "browser" / f"{request.param}.png")
    return browser


def wait_for(driver, script: str, timeout: float = RENDER_TIMEOUT):
    """Wait until ``script`` returns something truthy, and return it."""
    return wait_until(driver, script, timeout)


def test_math_is_typeset(chapter):
    try:
        wait_for(chapter, "return document.querySelectorAll('mjx-container').length")
    except TimeoutException:
        pytest.fail(f"MathJax typeset nothing in {RENDER_TIMEOUT} s: is mathjax/tex-mml-chtml.js served at the "
                    "site's root (make book copies it to _build/extra, the html_extra_path) and loaded once?")
    chapter.execute_async_script("MathJax.startup.promise.then(() => arguments[0]())")
    math = chapter.execute_script("""
        const untypeset = [...document.querySelectorAll('.math')]
            .filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.trim());
        const errors = [...document.querySelectorAll('mjx-merror')]
            .map(el => el.getAttribute('data-mjx-error') || el.textContent);
        // Text a reader sees, outside code, outputs and typeset math: no TeX may be left in it.
        const skip = 'pre, code, script, style, mjx-container, .cell_output';
        const walker = document.createTreeWalker(document.querySelector('main') || document.body,
                                                 NodeFilter.SHOW_TEXT);
        const tex = [];
        for (let node; (node = walker.nextNode());) {
            const found = node.textContent.match(/\\\\[A-Za-z]+|\\$\\$|\\^\\{/);
            if (found && !node.parentElement.closest(skip)) tex.push(node.textContent.trim().slice(0, 120));
        }
        return {typeset: document.querySelectorAll('mjx-container').length, untypeset, errors, tex};
    """)
    assert math["typeset"] >= 10, f"only {math['typeset']} formulas typeset"
    assert not math["untypeset"], f"math left as TeX: {math['untypeset'][:5]}"
    assert not math["errors"], f"MathJax could not typeset: {math['errors'][:5]}"
    assert not math["tex"], f"raw TeX visible on the page: {math['tex'][:5]}"


def test_figures_are_drawn(chapter):
    expected = CHAPTERS[chapter.chapter_name][0]
    try:
        wait_for(chapter, f"return document.querySelectorAll('.js-plotly-plot').length >= {expected}")
    except TimeoutException:
        count = chapter.execute_script("return document.querySelectorAll('.js-plotly-plot').length")
        pytest.fail(f"{count} plotly figures drawn, expected at least {expected}: is _static/plotly.min.js "
                    f"served? (window.Plotly is {chapter.execute_script('return typeof window.Plotly')})")
    figures = chapter.execute_script("""
        return [...document.querySelectorAll('.js-plotly-plot')].map(el => ({
            title: (el.layout && el.layout.title && el.layout.title.text) || el.id,
            svg: !!el.querySelector('svg.main-svg'),
            lines: [...el.querySelectorAll('.scatterlayer .trace path.js-line')]
                .filter(path => (path.getAttribute('d') || '').length > 10).length,
        }));
    """)
    blank = [f["title"] for f in figures if not (f["svg"] and f["lines"])]
    assert not blank, f"figures without a drawn trace: {blank}"


def test_slider_redraws_the_figure_when_dragged(chapter):
    before = chapter.execute_script(READ_SLIDER_FIGURE)
    assert before is not None, "no figure on the page has a slider"
    figure = before["figure"]
    chapter.execute_script("arguments[0].scrollIntoView({block: 'center'})", figure)
    first = figure.find_elements(By.CSS_SELECTOR, "g.slider-group")[0]  # a figure may have a second slider
    grip = first.find_element(By.CSS_SELECTOR, "rect.slider-grip-rect")
    ticks = first.find_elements(By.CSS_SELECTOR, "rect.slider-tick-rect")
    assert len(ticks) == len(before["labels"]) > 1, "the slider shows no step to move to"
    target = len(ticks) - 1 if before["active"] != len(ticks) - 1 else 0

    ActionChains(chapter).click_and_hold(grip).move_to_element(ticks[target]).pause(0.2).release().perform()
    try:
        WebDriverWait(chapter, 10, poll_frequency=0.1).until(
            lambda d: d.execute_script(READ_SLIDER_FIGURE)["y"] != before["y"])
    except TimeoutException:
        pytest.fail(f"dragging the slider's grip to step {target} did not change the curves' data")
    after = chapter.execute_script(READ_SLIDER_FIGURE)

    assert after["active"] == target, f"the slider went to step {after['active']}, not {target}"
    assert after["y"] == after["stepY"], "the curves do not show the data of the step the slider is on"
    assert after["line"] != before["line"], "the curves' data changed but the drawn line did not"
    assert after["currentValue"] != before["currentValue"]
    assert after["currentValue"] == after["prefix"] + after["labels"][target]


def test_citations_link_to_the_bibliography(chapter):
    citations = chapter.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const pages = {};
        const page = url => pages[url] = pages[url] || fetch(url).then(r => r.text())
            .then(html => new DOMParser().parseFromString(html, 'text/html'));
        Promise.all([...document.querySelectorAll('.bibtex-citation a[href]')].map(async a => {
            const url = new URL(a.href);
            const entry = (await page(url.href.split('#')[0])).getElementById(decodeURIComponent(url.hash.slice(1)));
            const found = entry && entry.getAttribute('role') === 'doc-biblioentry';
            return {text: a.textContent, href: a.getAttribute('href'), entry: found ? entry.textContent : null};
        })).then(done, error => done(String(error)));
    """)
    assert isinstance(citations, list), f"could not follow the citation links: {citations}"
    assert citations, "the chapter has no citation links"
    unresolved = [c["href"] for c in citations if c["entry"] is None]
    assert not unresolved, f"citation links that lead to no bibliography entry: {unresolved}"
    author = CHAPTERS[chapter.chapter_name][1]
    cited = [c for c in citations if author in c["text"]]
    assert cited, f"the chapter's paper ({author} et al.) is not cited: {[c['text'] for c in citations]}"
    assert all(author in c["entry"] for c in cited), cited


def test_console_has_no_errors(chapter, site_url):
    def ours(message: str) -> bool:
        """From our pages: not another site's script, not the favicon the book does not have."""
        source = message.split(" ", 1)[0]  # a URL, or "javascript" for inline code
        return not (source.startswith("http") and not source.startswith(site_url)
                    or source.endswith("/favicon.ico"))

    errors = [entry["message"] for entry in chapter.get_log("browser")
              if entry["level"] == "SEVERE" and ours(entry["message"])
              and not any(known in entry["message"] for known in UPSTREAM_CONSOLE_ERRORS)]
    assert not errors, "errors in the browser console:\n" + "\n".join(errors)


def test_launch_and_download_buttons(chapter, site_url):
    """The rocket menu opens the chapter on Binder and Colab, from the repository named in
    _config.yml, and the download menu offers the chapter's notebook."""
    import yaml

    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    repository, launch = config["repository"], config["launch_buttons"]
    org_repo = repository["url"].removeprefix("https://github.com/").strip("/")
    notebook = f"book/{chapter.chapter_name}.ipynb"
    expected = {
        "Binder": f"{launch['binderhub_url']}/v2/gh/{org_repo}/{repository['branch']}?urlpath=lab/tree/{notebook}",
        "Colab": f"{launch['colab_url']}/github/{org_repo}/blob/{repository['branch']}/{notebook}",
    }
    chapter.execute_script("window.scrollTo(0, 0)")
    chapter.find_element(By.CSS_SELECTOR, ".dropdown-launch-buttons > button.dropdown-toggle").click()
    try:
        items = WebDriverWait(chapter, 5, poll_frequency=0.1).until(lambda d: [
            a for a in d.find_elements(By.CSS_SELECTOR, ".dropdown-launch-buttons a.dropdown-item")
            if a.is_displayed()])
    except TimeoutException:
        pytest.fail("the rocket button opens no menu of launch links")
    links = {a.text.strip(): a.get_attribute("href") for a in items}
    assert links == expected, f"launch links {links}, expected {expected}"
    chapter.find_element(By.CSS_SELECTOR, ".dropdown-launch-buttons > button.dropdown-toggle").click()  # closed

    download = chapter.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const a = [...document.querySelectorAll('.dropdown-download-buttons a.dropdown-item')]
            .find(a => a.textContent.trim() === '.ipynb');
        if (!a) return done(null);
        fetch(a.href).then(r => r.json())
            .then(nb => done({href: a.href, nbformat: nb.nbformat, cells: nb.cells.length}),
                  error => done({href: a.href, error: String(error)}));
    """)
    assert download is not None, "the download menu offers no .ipynb"
    assert download["href"] == f"{site_url}/_sources/{notebook}", download
    assert download.get("nbformat") == 4 and download["cells"] > 1, f"the .ipynb offered is no notebook: {download}"
