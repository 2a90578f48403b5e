"""`rag report`: the project's deck (report.pptx + report.pdf) built from recorded experiments.

facts.py   read the experiments log, adapter manifests, index manifest, data files, benchmarks
slides.py  Facts -> list[Slide] (+ PNG figures); a number the sources lack prints "not measured"
bench.py   benchmark JSONs -> the engineering table's rows (labels, units, CPUs) and the abstention curve
i18n.py    the editions (en, ru; ru.py holds the Russian strings): same numbers, translated prose
render.py  list[Slide] -> .pptx (python-pptx) and .pdf (matplotlib), from one layout
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from eval.report.facts import Facts, gather
from eval.report.i18n import LANGS, Lang
from eval.report.render import Slide, Table, check_glyphs, render_pdf, render_pptx
from eval.report.slides import build_slides
from rag.config import REPO_ROOT, runs_dir
from rag.errors import BadInput

log = logging.getLogger(__name__)

__all__ = [
    "LANGS",
    "Facts",
    "Report",
    "Slide",
    "Table",
    "build_slides",
    "deck_names",
    "gather",
    "write_report",
]
GLYPHS = {"ru": "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдеёжзийклмнопрстуфхцчшщъыьэюя"}  # an edition's letters


@dataclass
class Report:
    pptx: Path
    pdf: Path
    slides: list[Slide]
    facts: Facts
    untranslated: list[str]  # English templates the edition's table lacks (printed in English)


def deck_names(lang: str = "en") -> tuple[str, str]:
    """The deck's file names: report.pptx / report.pdf, report.ru.pptx / report.ru.pdf for another edition.

    >>> deck_names("ru")
    ('report.ru.pptx', 'report.ru.pdf')
    """
    stem = "report" if lang == "en" else f"report.{lang}"
    return f"{stem}.pptx", f"{stem}.pdf"


def write_report(
    runs: Path | None = None,
    out: Path = Path("."),
    run_id: str | None = None,
    repo: Path = REPO_ROOT,
    lang: str = "en",
) -> Report:
    """Write out/report.pptx and out/report.pdf (the `lang` edition: deck_names(lang)) from the experiments
    log in `runs` (default runs_dir()).

    BadInput when `lang` is not one of LANGS, the log is missing or empty ("run `rag eval` first"), `out`
    cannot be a folder, or the PDF font lacks the edition's letters."""
    t = Lang(lang)
    if lang in GLYPHS:
        check_glyphs(GLYPHS[lang])
    facts = gather(Path(runs) if runs else runs_dir(), run_id=run_id, repo=repo)
    out = Path(out)
    _report_dir(out)
    pptx_name, pdf_name = deck_names(lang)
    with tempfile.TemporaryDirectory(prefix="rag-report-") as tmp:
        slides = build_slides(facts, Path(tmp), t)
        pptx = render_pptx(slides, out / pptx_name)
        pdf = render_pdf(slides, out / pdf_name)
    if t.missing:
        log.warning("%d strings have no %s translation and print in English", len(t.missing), lang)
    log.info("wrote %s and %s (%d slides)", pptx, pdf, len(slides))
    return Report(pptx=pptx, pdf=pdf, slides=slides, facts=facts, untranslated=sorted(t.missing))


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
