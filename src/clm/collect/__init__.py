"""Getting data in: files of transactions or events (and, elsewhere, HTTP collectors).

import_transactions(wh, path, …)  purchase lines → order events (`transactions`)
import_events(wh, path, …)        Segment JSON lines or events-shaped files
detect_format(path)               what a file is and how to read it (`readers`)
"""

from clm.collect.events_file import import_events
from clm.collect.readers import FileFormat, detect_format
from clm.collect.transactions import import_transactions

__all__ = ["FileFormat", "detect_format", "import_events", "import_transactions"]
