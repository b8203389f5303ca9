"""Trainers (Hydra + accelerate). Each imports the library; the library never imports them.

Recipes land with their issues: the codec trainer (``train/codec.py``) and the LM trainer (``train/lm.py``).
"""
