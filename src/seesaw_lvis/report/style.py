"""Plot styling shared by every figure: one colour per LVIS group, colour-blind safe.

Okabe-Ito palette (Okabe & Ito 2008), distinguishable under the common colour-vision
deficiencies. Every colour a figure uses comes from this module; where two things must also
be told apart in greyscale, a marker, a fill (filled vs hollow/hatched) or a line style is
used as well, never colour alone.
"""
from __future__ import annotations

# The eight Okabe-Ito colours.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

GROUP_COLOURS = {"r": "#D55E00", "c": "#0072B2", "f": "#009E73"}  # vermillion, blue, green
GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}

# Paper vs ours (step chart): black dashed vs orange solid.
SOURCE_COLOURS = {"paper": OKABE_ITO["black"], "ours": OKABE_ITO["orange"]}
SOURCE_LINESTYLES = {"paper": "--", "ours": "-"}
SOURCE_MARKERS = {"paper": "s", "ours": "o"}

# The two models of the per-class plot: told apart by marker and fill (colour = r/c/f group).
MODEL_MARKERS = {"ce": "o", "seesaw": "^"}
MODEL_FILLED = {"ce": False, "seesaw": True}

# Training curves: one colour per paper table.
TABLE_COLOURS = {1: OKABE_ITO["blue"], 2: OKABE_ITO["reddish_purple"]}

# Sequential, perceptually uniform and colour-blind safe colour map for heat maps.
HEATMAP_CMAP = "viridis"

# Not-run / missing data marks.
MISSING_COLOUR = "0.45"

DPI = 150

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "seesaw_lvis",   # deterministic SVG ids: an unchanged figure is byte-identical
    "svg.fonttype": "none",          # text stays text in the SVG (searchable, smaller)
}
