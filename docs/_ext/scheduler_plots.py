"""Sphinx extension: draw learning-rate schedules at docs build time.

The directive takes the arguments of ``python -m nbopt schedule``::

    .. scheduler-plot:: OneCycleLR --max_lr 0.1 --total_steps 100

and inserts a figure of that schedule (learning rate, plus the momentum or the
metric when there is one) with the command that reproduces it as the caption.
The schedule is computed by :mod:`nbopt.cli.schedule` -- the same code as the
command line -- and drawn with matplotlib's Agg canvas into the build's doctree
directory, from where Sphinx copies it into the HTML output's ``_images``.
Nothing is written into the source tree.

Without matplotlib the figure is replaced by a note (logged at info level, so
a ``-W`` build still passes); ``pip install -e '.[docs]'`` brings it.
"""
from __future__ import annotations

import hashlib
import os
import shlex

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

PLOT_DIR = "scheduler_plots"   # under the build's doctree directory


class SchedulerPlot(SphinxDirective):
    """``.. scheduler-plot:: NAME --ARG VALUE ...``"""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = False
    option_spec = {"alt": str}

    def run(self) -> list[nodes.Node]:
        from nbopt.cli import schedule as schedule_cli

        text = " ".join(self.arguments[0].split())
        argv = shlex.split(text)
        command = f"python -m nbopt schedule {text} --plot {argv[0]}.png"
        try:
            schedule = schedule_cli.compute(argv)
        except schedule_cli.UsageError as exc:
            raise self.error(f"scheduler-plot: {exc}") from None
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        out_dir = os.path.join(self.env.doctreedir, PLOT_DIR)
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{argv[0]}-{digest}.png")
        try:
            schedule_cli.plot_schedule(schedule, path)
        except RuntimeError as exc:
            if str(exc) != schedule_cli.MISSING_MATPLOTLIB:
                raise
            logger.info("scheduler-plot: %s; %s is not drawn", exc, argv[0])
            note = nodes.paragraph(
                "", "(The plot of this schedule is drawn at docs build time with matplotlib, "
                "which was not installed. Reproduce it with ",
                nodes.literal(text=command), nodes.Text(".)"))
            return [note]

        # a path relative to this document: Sphinx resolves it, records the
        # dependency and copies the file into the output's _images
        doc_dir = os.path.dirname(self.env.doc2path(self.env.docname))
        uri = os.path.relpath(path, doc_dir).replace(os.sep, "/")
        image = nodes.image(uri=uri, alt=self.options.get("alt", f"{argv[0]} schedule"))
        caption = nodes.caption("", "", nodes.literal(text=command))
        figure = nodes.figure("", image, caption)
        figure["align"] = "center"
        return [figure]


def setup(app):
    app.add_directive("scheduler-plot", SchedulerPlot)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
