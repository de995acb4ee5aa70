"""``flordb ui``: a local web application over the store (runs, curves, SQL, compare, hindsight).

A thin layer over the same Python API as the CLI (every call goes through
:mod:`flordb.ui.flor`); needs the ``ui`` extra: ``pip install 'flordb[ui]'``.
"""
