"""The live chapters in JupyterLab, driven in headless Chromium as a reader drives them: ``make
lab`` serves the chapters on 127.0.0.1 (a free port, a random token), the browser opens one, runs
all its cells with the kernel, finds a live panel, moves its sliders with the mouse and the
keyboard, presses Run and checks that the panel's figure is redrawn and that no cell and no widget
shows an error. Chapter 1's panel is driven past the learning rate where ESGD diverges, chapter
4's has a step η and a proximal λ, chapter 6's draws the chapter's own figure.

The server serves copies of the chapters in a temporary folder (a notebook JupyterLab opens is
never saved over the committed one) with its own settings, workspaces and runtime folders, and is
always shut down, kernels included, whatever the test's outcome. The kernels use the results cache
``make test`` made for this run (the notebooks step filled it, so the cells read back what nbval
computed); run alone, a fresh one. A screenshot of each panel after its last Run is left in
``_build/browser/`` for humans.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from chromium import chromium, wait_for
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CACHE = os.environ.get("IBTOOLS_CACHE")  # make test's, read before the tests' own fixtures replace it
START_TIMEOUT = 90  # seconds for the server to answer and a notebook's kernel to be ready
RUN_ALL_TIMEOUT = 600  # a chapter's cells, on a cold cache
RUN_TIMEOUT = 240  # one press of a panel's Run
CHAPTERS = ["01_isgd_vs_esgd", "04_sibp", "06_shattered_gradients"]

# JupyterLab's user settings for the test server: every cell in the page (no windowing, so the
# outputs of cells out of view can be read), no autosave, no news fetched from the network.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}

NOTEBOOK_READY = """
const app = window.jupyterapp;
const panel = app && app.shell.currentWidget;
const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
return !!(kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle'
          && panel.content.widgets.length && panel.context.path === arguments[0]);
"""

ALL_CELLS_RAN = """
const panel = window.jupyterapp.shell.currentWidget;
const code = panel.content.widgets.filter(cell => cell.model.type === 'code');
return panel.sessionContext.session.kernel.status === 'idle'
    && code.every(cell => cell.model.executionCount !== null && !cell.promptNode.textContent.includes('*'));
"""

# Errors anywhere in the notebook: error outputs of cells, and tracebacks or widget-rendering
# failures shown in any output area (the panels' Output widgets included).
ERRORS = """
const panel = window.jupyterapp.shell.currentWidget;
const cells = panel.content.widgets.flatMap((cell, i) => cell.model.type !== 'code' ? [] :
    cell.model.outputs.toJSON().filter(out => out.output_type === 'error')
        .map(out => `cell ${i}: ${out.ename}: ${out.evalue}`));
const shown = [...panel.node.querySelectorAll('.jp-OutputArea-output')].map(el => el.innerText)
    .filter(text => /Traceback \\(most recent call last\\)|Error displaying widget/.test(text))
    .map(text => text.slice(-1500));
return cells.concat(shown);
"""

FIND_CELL = """
const panel = window.jupyterapp.shell.currentWidget;
const cell = panel.content.widgets.find(cell => cell.model.sharedModel.getSource().includes(arguments[0]));
if (!cell) return null;
cell.node.scrollIntoView({block: 'start'});
return cell.node;
"""

# The live panel in a cell's output: its sliders' readouts by label, its Run button's state, and its
# plot (the image in the last Output widget of the panel's box).
READ_PANEL = """
const readPanel = cell => {
  const box = cell.querySelector('.jp-OutputArea-output .widget-vbox');
  if (!box) return null;
  const outputs = [...box.querySelectorAll(':scope > .widget-output')];
  const image = outputs.length && outputs[outputs.length - 1].querySelector('img');
  const button = box.querySelector(':scope > .widget-button');
  return {
    sliders: Object.fromEntries([...box.querySelectorAll('.widget-slider')].map(slider => [
        slider.querySelector('.widget-label').textContent, slider.querySelector('.widget-readout').textContent])),
    image: image ? image.src : null,
    running: !button || button.disabled,
    progress: outputs.length ? outputs[0].innerText : '',
  };
};
"""
READ = READ_PANEL + "return readPanel(arguments[0]);"
# Run has finished and the plot shows an image other than arguments[1].
REDRAWN = READ_PANEL + """
const panel = readPanel(arguments[0]);
return panel && !panel.running && panel.image && panel.image !== arguments[1];
"""


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``make lab`` on copies of the chapters, on 127.0.0.1 with a free port and a random token;
    shut down (its whole process group: make, JupyterLab and its kernels) after the module."""
    root = tmp_path_factory.mktemp("lab")
    home = tmp_path_factory.mktemp("lab-home")
    for name in CHAPTERS:
        shutil.copy(REPO / "book" / f"{name}.ipynb", root)
    for name, values in LAB_SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "IBTOOLS_BOOK")}
    env["IBTOOLS_DEVICE"] = "cpu"  # the chapters' reduced runs are defined on the CPU, as under nbval
    env.update(JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_DATA_DIR=str(home / "data"), IPYTHONDIR=str(home / "ipython"),
               IBTOOLS_CACHE=CACHE or str(home / "cache"))
    args = [f"--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", "--no-browser", "--LabApp.expose_app_in_browser=True",
            f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = home / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(["make", "-s", "-C", str(REPO), "lab", f"LAB_DIR={root}", f"LAB_ARGS={' '.join(args)}"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    lab = Lab(url, token, root, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server_answers(f"{url}/api/status?token={token}"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make lab` did not serve {url} within {START_TIMEOUT} s:\n{lab.log_tail()}")
            time.sleep(0.25)
        yield lab
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (JupyterLab then shuts its kernels down), SIGKILL if
    it is still there after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def browser():
    with chromium(RUN_TIMEOUT) as driver:
        driver.set_window_size(1400, 1000)
        yield driver


def open_and_run_all(browser, lab: Lab, name: str) -> None:
    """Open chapter ``name`` in JupyterLab, wait for its kernel, run all its cells and check that
    none of them failed."""
    notebook = f"{name}.ipynb"
    browser.get(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    try:
        wait_for(browser, NOTEBOOK_READY, START_TIMEOUT, notebook)
    except TimeoutException:
        pytest.fail(f"{notebook} did not open with an idle kernel in {START_TIMEOUT} s:\n{lab.log_tail()}")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        wait_for(browser, ALL_CELLS_RAN, RUN_ALL_TIMEOUT)
    except TimeoutException:
        pytest.fail(f"the cells of {notebook} did not all run in {RUN_ALL_TIMEOUT} s")
    errors = browser.execute_script(ERRORS)
    assert not errors, f"{notebook}: errors after Run All:\n" + "\n".join(errors)


class LivePanel:
    """A chapter's live panel, found by the call that makes it, driven through the page."""

    def __init__(self, browser, call: str):
        self.browser, self.call = browser, call
        self.cell = browser.execute_script(FIND_CELL, call)
        assert self.cell is not None, f"no cell calls {call}"
        assert self.read() is not None, f"the cell calling {call} shows no panel"

    def read(self) -> dict:
        return self.browser.execute_script(READ, self.cell)

    def slider(self, label: str):
        """The handle of the slider whose label starts with ``label``."""
        for slider in self.cell.find_elements(By.CSS_SELECTOR, ".widget-slider"):
            if slider.find_element(By.CSS_SELECTOR, ".widget-label").text.startswith(label):
                return slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        raise AssertionError(f"the panel has no slider labelled {label!r}: {list(self.read()['sliders'])}")

    def drag(self, label: str, value: float) -> float:
        """Drag a log-scale slider's handle with the mouse to about ``value``; the value it shows."""
        handle = self.slider(label)
        low, high, now = (float(handle.get_attribute(a)) for a in ("aria-valuemin", "aria-valuemax", "aria-valuetext"))
        track = self.browser.execute_script("return arguments[0].closest('.noUi-base').getBoundingClientRect().width",
                                            handle)
        offset = round((math.log10(value) - now) / (high - low) * track)
        ActionChains(self.browser).click_and_hold(handle).move_by_offset(offset, 0).pause(0.3).release().perform()
        return self.shown(label)

    def press_keys(self, label: str, key: str, times: int) -> float:
        """Move a slider with the keyboard: focus its handle and press ``key`` ``times`` times."""
        handle = self.slider(label)
        ActionChains(self.browser).click(handle).perform()
        for _ in range(times):
            handle.send_keys(key)
        return self.shown(label)

    def shown(self, label: str) -> float:
        time.sleep(0.5)  # the value reaches the kernel when the handle is let go
        readouts = self.read()["sliders"]
        return float(next(v for k, v in readouts.items() if k.startswith(label)))

    def run(self) -> dict:
        """Press Run and wait until the panel has finished and shows a new figure."""
        before = self.read()["image"]
        self.cell.find_element(By.CSS_SELECTOR, ".widget-vbox > .widget-button").click()
        try:
            wait_for(self.browser, REDRAWN, RUN_TIMEOUT, self.cell, before)
        except TimeoutException:
            errors = self.browser.execute_script(ERRORS)
            pytest.fail(f"pressing Run on {self.call} did not redraw its figure in {RUN_TIMEOUT} s; errors: {errors}; "
                        f"progress: {self.read()['progress'][-500:]!r}")
        return self.read()


def check_no_errors(browser, where: str) -> None:
    errors = browser.execute_script(ERRORS)
    assert not errors, f"{where}:\n" + "\n".join(errors)


def screenshot(browser, panel: LivePanel, name: str) -> None:
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", panel.cell)
    path = REPO / "_build" / "browser" / f"lab-{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    panel.cell.screenshot(str(path))


def test_chapter_1_panel_redraws_for_rates_dragged_past_esgd_divergence(lab, browser):
    open_and_run_all(browser, lab, "01_isgd_vs_esgd")
    panel = LivePanel(browser, "widgets.panel(ch01.quadratic")
    first = panel.run()
    images = [first["image"]]
    # ESGD on θ²/2 multiplies θ by 1 - η each step: it diverges for every η > 2
    for target in (9.8, 60.0):
        lr = panel.drag("learning rate", target)
        assert lr > 2 and math.isclose(lr, target, rel_tol=0.15), f"dragged to {lr}, aiming at {target}"
        images.append(panel.run()["image"])
        check_no_errors(browser, f"after Run at lr = {lr}")
    assert len(set(images)) == 3, "the figure did not change with the learning rate"
    screenshot(browser, panel, "01_isgd_vs_esgd")


def test_chapter_4_panel_redraws_for_a_dragged_step_and_a_keyed_lambda(lab, browser):
    open_and_run_all(browser, lab, "04_sibp")
    panel = LivePanel(browser, "widgets.panel(ch04.vanishing")
    first = panel.run()
    eta = panel.drag("η", 0.1)
    assert math.isclose(eta, 0.1, rel_tol=0.15), f"η dragged to {eta}, aiming at 0.1"
    second = panel.run()
    lam_before = panel.shown("λ")
    lam = panel.press_keys("λ", Keys.ARROW_LEFT, 10)
    assert lam < lam_before, f"λ went from {lam_before} to {lam} on pressing ←"
    third = panel.run()
    check_no_errors(browser, "after the runs at the new η and λ")
    assert len({first["image"], second["image"], third["image"]}) == 3
    screenshot(browser, panel, "04_sibp")


def test_chapter_6_panel_redraws_the_chapter_s_own_figure(lab, browser):
    open_and_run_all(browser, lab, "06_shattered_gradients")
    panel = LivePanel(browser, "widgets.panel(ch06.exploration_autoencoder")
    first = panel.run()
    lr = panel.drag("learning rate", 0.01)
    assert math.isclose(lr, 0.01, rel_tol=0.15), f"dragged to {lr}, aiming at 0.01"
    second = panel.run()
    check_no_errors(browser, f"after Run at lr = {lr}")
    assert first["image"] != second["image"]
    screenshot(browser, panel, "06_shattered_gradients")
