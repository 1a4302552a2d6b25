"""ibtools: the experiments behind *Implicit and Robust Backpropagation*, an interactive textbook.

Each chapter of the book is an experiment module in :mod:`ibtools.experiments`; the math of
each method is a small function on tensors in its own module (:mod:`ibtools.isgd`, ...);
:mod:`ibtools.train` and :mod:`ibtools.sweep` run any of them and return tidy tables.
"""

__version__ = "0.1.0"
