"""The one exception type for mistakes a user can fix (bad input files, bad config).

Internal bugs stay ordinary exceptions; a `DataError` always says where (file, line or record)
and what is wrong, so the CLI can print it without a traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 record: str | None = None):
        self.file, self.line, self.record, self.reason = file, line, record, message
        where = ""
        if file:
            where = f"{file}:{line}" if line is not None else str(file)
        if record:
            where = f"{where} (record {record})" if where else f"record {record}"
        super().__init__(f"{where}: {message}" if where else message)
