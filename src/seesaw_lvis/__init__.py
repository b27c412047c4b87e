"""seesaw_lvis: the LVIS Challenge 2020 Seesaw Loss entry, re-created as a pipeline."""
__version__ = "0.1.0"
