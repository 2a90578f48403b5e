"""`rag report`: the project's deck (report.pptx + report.pdf) built from recorded experiments.

facts.py   read the experiments log, adapter manifests, index manifest, data files, benchmarks
slides.py  Facts -> list[Slide] (+ PNG figures); a number the sources lack prints "not measured"
render.py  list[Slide] -> .pptx (python-pptx) and .pdf (matplotlib), from one layout
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eval.report.facts import Facts, gather
from eval.report.render import Slide, Table, render_pdf, render_pptx
from eval.report.slides import build_slides
from rag.config import REPO_ROOT, runs_dir
from rag.errors import BadInput

log = logging.getLogger(__name__)

__all__ = ["Facts", "Report", "Slide", "Table", "build_slides", "gather", "write_report"]


@dataclass
class Report:
    pptx: Path
    pdf: Path
    slides: list[Slide]
    facts: Facts


def write_report(
    runs: Path | None = None, out: Path = Path("."), run_id: str | None = None, repo: Path = REPO_ROOT
) -> Report:
    """Write out/report.pptx and out/report.pdf from the experiments log in `runs` (default runs_dir()).

    BadInput when the log is missing or empty ("run `rag eval` first") or `out` cannot be a folder."""
    facts = gather(Path(runs) if runs else runs_dir(), run_id=run_id, repo=repo)
    out = Path(out)
    _report_dir(out)
    with tempfile.TemporaryDirectory(prefix="rag-report-") as tmp:
        slides = build_slides(facts, Path(tmp))
        pptx = render_pptx(slides, out / "report.pptx")
        pdf = render_pdf(slides, out / "report.pdf")
    log.info("wrote %s and %s (%d slides)", pptx, pdf, len(slides))
    return Report(pptx=pptx, pdf=pdf, slides=slides, facts=facts)


def _report_dir(out: Path) -> None:
    """Create the report folder, or one line saying why not (an existing file there gave a traceback)."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file: pass a folder for report.pptx and report.pdf")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(
            f"cannot create the report folder {out} ({e.strerror or type(e).__name__}): "
            "pass --out FOLDER somewhere writable"
        ) from e
