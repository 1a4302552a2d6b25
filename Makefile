# The two commands: `make book` builds the HTML book, `make test` runs every test.
# Both create .venv from requirements.txt (and ibtools, editable) when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PLOTLY_JS := _static/plotly.min.js
# Not in _static, where Jupyter Book would add each of MathJax's hundred .js files to every page as a
# <script>: in a folder of html_extra_path (_config.yml), which the build copies to the site's root.
MATHJAX := _build/extra/mathjax/tex-mml-chtml.js

.PHONY: book test unit notebooks browser outputs clean

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

book: $(STAMP) $(PLOTLY_JS) $(MATHJAX)
	IBTOOLS_BOOK=1 $(VENV)/bin/jupyter-book build --all . --warningiserror --keep-going

unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser"

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax book

browser: book
	$(PY) -m pytest tests -m browser

# A fresh results cache, so the chapters really compute what they show.
test: $(STAMP)
	IBTOOLS_CACHE=$$(mktemp -d -t ibtools-cache-XXXX) $(MAKE) unit notebooks browser

# After editing a chapter: execute it and store only the outputs nbval checks.
outputs: $(STAMP)
	$(PY) -m ibtools.notebooks book/*.ipynb

clean:
	rm -rf _build _static
