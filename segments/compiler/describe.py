"""Plain-English descriptions of measures, windows and sequences, for the models' column
documentation and ``segments explain``.
"""

from __future__ import annotations

from segments.spec import model as m


def describe_measure(measure: m.Measure) -> str:
    what = measure.kind + (f" of {measure.property}" if measure.property else "")
    text = f"{what} over events {', '.join(measure.filter.events)}"
    window = measure.filter.window
    if window is not None:
        text += f", {describe_window(window)}"
    if measure.filter.where is not None:
        text += ", filtered by properties"
    return text


def describe_window(window: m.Window) -> str:
    if isinstance(window, m.WithinWindow):
        return f"within {window.duration}"
    if isinstance(window, m.BetweenWindow):
        return f"between {window.start} and {window.end}"
    if isinstance(window, m.BeforeWindow):
        return f"before {window.at}"
    return f"after {window.at}"


def describe_sequence(sequence: m.Sequence) -> str:
    text = f"{', '.join(sequence.events)}"
    if sequence.within is not None:
        text += f" within {sequence.within}"
    return text
