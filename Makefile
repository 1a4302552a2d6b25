# The two commands: `make book` builds the HTML book, `make test` runs every test; `make lab` opens the
# chapters in JupyterLab to drive their live panels.
# Both create .venv from requirements.txt (and ibtools, editable) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLOTLY_JS := _static/plotly.min.js
# Not in _static, where Jupyter Book would add each of MathJax's hundred .js files to every page as a
# <script>: in a folder of html_extra_path (_config.yml), which the build copies to the site's root.
MATHJAX := _build/extra/mathjax/tex-mml-chtml.js

.PHONY: book test unit notebooks browser lab outputs clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# plotly.js from the installed package, so the book's figures work offline.
$(PLOTLY_JS): $(STAMP)
	mkdir -p _static
	$(PY) -c "import plotly, pathlib, shutil; shutil.copy(pathlib.Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js', '$(PLOTLY_JS)')"

# MathJax from the installed django-static-mathjax wheel (static files only), for the same reason.
# A copy left in _static by an older checkout is removed.
$(MATHJAX): $(STAMP)
	rm -rf _static/mathjax $(dir $(MATHJAX))
	$(PY) -c "import mathjax, pathlib, shutil; shutil.copytree(pathlib.Path(mathjax.__path__[0]) / 'static' / 'mathjax' / 'es5', '$(dir $(MATHJAX))')"

# The chapters execute on the CPU (IBTOOLS_DEVICE=cpu), also on a machine with a GPU: the reduced
# book, and the outputs nbval checks, are defined by what the CPU computes.
book: $(STAMP) $(PLOTLY_JS) $(MATHJAX)
	IBTOOLS_BOOK=1 IBTOOLS_DEVICE=cpu $(VENV)/bin/jupyter-book build --all . --warningiserror --keep-going

unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser"

notebooks: $(STAMP)
	IBTOOLS_DEVICE=cpu $(PY) -m pytest --nbval-lax book

browser: book
	$(PY) -m pytest tests -m browser

# JupyterLab on the chapters (LAB_DIR), with .venv's kernel, which has ibtools: its kernelspec is
# written into .venv and JUPYTER_PATH puts it before any user-wide "python3" kernel. --allow-root
# where everything runs as root (containers, CI). LAB_ARGS: more options (the tests pass a port and
# a token).
LAB_DIR ?= book
lab: $(STAMP)
	$(PY) -m ipykernel install --sys-prefix >/dev/null
	JUPYTER_PATH=$(abspath $(VENV))/share/jupyter $(VENV)/bin/jupyter-lab $(LAB_DIR) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# A fresh results cache, so the chapters really compute what they show.
test: $(STAMP)
	IBTOOLS_CACHE=$$(mktemp -d -t ibtools-cache-XXXX) $(MAKE) unit notebooks browser

# After editing a chapter: execute it and store only the outputs nbval checks.
outputs: $(STAMP)
	IBTOOLS_DEVICE=cpu $(PY) -m ibtools.notebooks book/*.ipynb

clean:
	rm -rf _build _static
