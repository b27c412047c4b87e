"""Plot styling shared by every figure: one colour per LVIS group, colour-blind safe.

Okabe-Ito palette (Okabe & Ito 2008), distinguishable under the common colour-vision
deficiencies.
"""

GROUP_COLOURS = {"r": "#D55E00", "c": "#0072B2", "f": "#009E73"}  # vermillion, blue, green
