"""Packaging follows the folders: every package under coop_hf/ (a method is a folder) goes into the wheel, and the
model-card templates in model_cards/ go in as coop_hf.model_cards (pyproject.toml maps that folder)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["coop_hf", "coop_hf.*"]), "coop_hf.model_cards"])
