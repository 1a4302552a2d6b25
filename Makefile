# The two commands: `make book` builds the HTML book, `make test` runs every test.
# Both create .venv from requirements.txt (and ibtools, editable) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLOTLY_JS := _static/plotly.min.js
# Under html_extra_path (see _config.yml), not _static: Jupyter Book adds every .js file in _static
# to every page as a <script>, and MathJax's hundred component files must not all load at once.
MATHJAX := _build/extra/_static/mathjax/tex-mml-chtml.js

.PHONY: book test unit notebooks browser clean

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
# It is served at _static/mathjax/; a copy left in _static by an older checkout is removed.
$(MATHJAX): $(STAMP)
	rm -rf _static/mathjax $(dir $(MATHJAX))
	$(PY) -c "import mathjax, pathlib, shutil; shutil.copytree(pathlib.Path(mathjax.__path__[0]) / 'static' / 'mathjax' / 'es5', '$(dir $(MATHJAX))')"

book: $(STAMP) $(PLOTLY_JS) $(MATHJAX)
	IBTOOLS_BOOK=1 $(VENV)/bin/jupyter-book build --all . --warningiserror --keep-going

unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser"

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax book -p no:randomly

browser: book
	$(PY) -m pytest tests -m browser

# A fresh results cache, so the chapters really compute what they show.
test: $(STAMP)
	IBTOOLS_CACHE=$$(mktemp -d -t ibtools-cache-XXXX) $(MAKE) unit notebooks browser

clean:
	rm -rf _build _static
