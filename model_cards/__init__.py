"""Model card templates, installed as the package data `coop_hf.model_cards`."""
