"""Words of the dashboard that the report never shows, in English and German.

The shared catalogue is `clm.report.i18n` (owned with the report); the texts here
belong to dashboard features alone (the model preview's estimate, a capped search)
and are looked up first by `Page.t`. Parameters are filled in by
`i18n.translate`'s rules, so numbers and dates follow the language.
"""

from __future__ import annotations

from typing import Any

from clm.report import i18n

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "dash.found_capped": (
            "More than {count} customers match; the first {count} are listed. "
            "Type more of the id or trait to narrow the search."
        ),
        "dash.search_prefix": (
            "Finds a customer by a whole customer id, user id, anonymous id, email "
            "or phone, and by the start of an id or of a trait value (any case)."
        ),
        "dash.margin": "± (95%)",
        "dash.preview_stored": (
            "The saved model as of {as_of}: the populations of the last `clm run`, "
            "exact."
        ),
        "dash.preview_sample": (
            "Estimate as of {as_of}: the draft evaluated on {sample} of {total} "
            "customers (a fixed sample chosen by a hash of the customer id), "
            "scaled up. ± is the 95% margin. For the exact figures (slow: as long "
            "as the stage step of clm run) ask the API with ?exact=1."
        ),
        "dash.preview_exact": (
            "Exact, as of {as_of}: the draft evaluated on all {total} customers."
        ),
        "dash.previewing": "Evaluating the draft…",
    },
    "de": {
        "dash.found_capped": (
            "Mehr als {count} Kunden passen; die ersten {count} sind aufgeführt. "
            "Geben Sie mehr von der ID oder dem Merkmal ein, um die Suche "
            "einzugrenzen."
        ),
        "dash.search_prefix": (
            "Findet Kunden über eine vollständige Kunden-ID, User-ID, anonyme ID, "
            "E-Mail oder Telefonnummer und über den Anfang einer ID oder eines "
            "Merkmalswerts (Groß-/Kleinschreibung egal)."
        ),
        "dash.margin": "± (95 %)",
        "dash.preview_stored": (
            "Das gespeicherte Modell am {as_of}: die Populationen des letzten "
            "`clm run`, exakt."
        ),
        "dash.preview_sample": (
            "Schätzung am {as_of}: der Entwurf auf {sample} von {total} Kunden "
            "nachgerechnet (eine feste Stichprobe, gewählt über einen Hash der "
            "Kunden-ID) und hochgerechnet. ± ist die 95-%-Fehlermarge. Die exakten "
            "Zahlen (langsam: so lange wie der Phasenschritt von clm run) liefert "
            "die API mit ?exact=1."
        ),
        "dash.preview_exact": (
            "Exakt am {as_of}: der Entwurf auf allen {total} Kunden nachgerechnet."
        ),
        "dash.previewing": "Der Entwurf wird nachgerechnet …",
    },
}


def translate(key: str, lang: str, **params: Any) -> str:
    """The dashboard's own text for `key`, else the shared catalogue's."""
    texts = WORDS.get(i18n.resolve_lang(lang), WORDS["en"])
    if key not in texts:
        return i18n.translate(key, lang, **params)
    values = {name: i18n.format_param(value, lang) for name, value in params.items()}
    return texts[key].format(**values)
