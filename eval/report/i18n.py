"""The deck's editions: English text is the key, each other edition a table of templates.

A slide builder writes its prose in English with named fields; `t` looks the template up in the
edition's table and fills it, so every number is formatted once, identically in every edition:

    >>> t = Lang("ru")
    >>> t("{total} questions", total="12,665"), t("Fastest reader: {system}, p50 {p50} s, F1 {f1}.",
    ...     system="smollm2-135m+tuned", p50="0.90", f1="58.7")
    ('вопросов: 12,665', 'Самый быстрый ридер: smollm2-135m+tuned, p50 0.90 с, F1 58.7.')
    >>> Lang("en")("{total} questions", total="12,665")
    '12,665 questions'

A template the table lacks prints in English and is remembered in `missing` (the report logs it and a
test keeps the Russian table complete). Russian counts go after a colon ("вопросов: 40"), which reads
right for every number without plural forms. The few fixed tokens the pure number formatters emit
("not measured", "95% CI") are replaced in the finished slide by `Lang.finish`.
"""

from __future__ import annotations

import dataclasses

from eval.report.ru import RU
from rag.errors import BadInput

LANGS = ("en", "ru")
TABLES: dict[str, dict[str, str]] = {"en": {}, "ru": RU}
# tokens the number formatters write in English, and each edition's spelling of them
TOKENS: dict[str, dict[str, str]] = {
    "en": {},
    "ru": {"not measured": "не измерено", "95% CI": "95% ДИ"},
}
NOT_MEASURED = ("not measured", *(tok["not measured"] for tok in TOKENS.values() if tok))


class Lang:
    """One edition's strings; `Lang("xx")` with an unknown code is a BadInput naming the valid ones."""

    def __init__(self, code: str = "en") -> None:
        if code not in LANGS:
            raise BadInput(f"unknown --lang {code!r}: valid values are {', '.join(LANGS)}")
        self.code = code
        self.table = TABLES[code]
        self.missing: set[str] = set()

    def __call__(self, s: str, /, **fields: object) -> str:
        tpl = s
        if self.code != "en":
            tpl = self.table.get(s)
            if tpl is None:
                self.missing.add(s)
                tpl = s
        return tpl.format(**fields) if fields else tpl

    def word(self, s: str) -> str:
        """A data label (a role, a unit) that may be in the table; unknown ones stay as they are."""
        return self.table.get(s, s) if self.code != "en" else s

    def tokens(self, s: str) -> str:
        for en, local in TOKENS[self.code].items():
            s = s.replace(en, local)
        return s

    def finish(self, slide):
        """The slide with the formatters' English tokens in this edition's spelling."""
        if self.code == "en":
            return slide
        tk = self.tokens
        table = slide.table
        if table is not None:
            table = dataclasses.replace(
                table, header=[tk(h) for h in table.header], rows=[[tk(c) for c in r] for r in table.rows]
            )
        return dataclasses.replace(
            slide,
            title=tk(slide.title),
            subtitle=tk(slide.subtitle),
            bullets=[tk(b) for b in slide.bullets],
            footnote=tk(slide.footnote),
            table=table,
        )


EN = Lang("en")
