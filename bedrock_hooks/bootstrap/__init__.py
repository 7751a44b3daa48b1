"""The directory ``bedrock-hooks run`` puts at the front of ``PYTHONPATH``.

It holds only ``sitecustomize.py``, which the interpreter imports as a *top-level* module at
startup. This ``__init__`` exists so the file ships as package data and can be located with
``importlib.util.find_spec("bedrock_hooks")`` without importing the (heavier) package itself.
"""
