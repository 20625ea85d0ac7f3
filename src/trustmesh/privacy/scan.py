"""Find personal data in a dataset's columns from a reproducible sample, and compare with its contract.

Pure functions over a DuckDB relation (or a list of Parquet files): the caller finds the files and the
contract's declarations. Each column gets the detector that fits it best; a detection counts when its
match rate over the sampled non-null values reaches the detector's threshold. A detected column whose
contract declares no `piiType` is `undeclared`: it is served unmasked to every reader of the dataset.

Detectors: NRIC/FIN (check letter validated), e-mail, Singapore phone (+65 optional, 8 digits starting 3,
6, 8 or 9), postal code (6 digits, a real 2-digit sector 01-82; an integer column or a column without a
postal/zip name needs more evidence), date of birth (a column named like birth/dob whose dates imply an
age of 0 to 120), and person names (a column named like *name* whose values are 2 to 4 capitalised words).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import duckdb
from sqlalchemy import delete
from sqlalchemy.orm import Session

from trustmesh.engines.duckdb import literal, quote
from trustmesh.errors import UsageError
from trustmesh.metastore.schema import FindingRow, utcnow
from trustmesh.privacy.identifiers import is_valid_nric, is_valid_sg_phone

DEFAULT_SAMPLE = 10_000
DEFAULT_SEED = 42
FINDING_KIND = "undeclared-pii"
SCAN_BUILD_ID = "scan"

# Match rates a detection needs: validated identifiers and formats 0.8; a bare 6-digit column without a
# postal name 0.95 (numeric codes look alike); names are a heuristic, 0.7.
THRESHOLD = 0.8
BARE_POSTAL_THRESHOLD = 0.95
NAME_THRESHOLD = 0.7
MAX_AGE = 120
POSTAL_SECTORS = range(1, 83)

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_SIX_DIGITS = re.compile(r"[0-9]{6}")
_INTEGER = re.compile(r"U?(?:TINY|SMALL|BIG|HUGE)?INT(?:EGER)?|UHUGEINT|INT[1248]|LONG|SHORT")
_POSTAL_HINT = re.compile(r"postal|postcode|post_code|zip")
_BIRTH_HINT = re.compile(r"birth|bday|(?:^|_)dob(?:$|_)|(?:^|_)born(?:$|_)")
_PHONE_HINT = re.compile(r"phone|mobile|(?:^|_)tel(?:ephone)?(?:$|_)|(?:^|_)hp(?:$|_)|msisdn|contact_?(?:no|number)")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Names of things, not people: `carrier_name`, `file_name`, ...
_THING_NAMES = _words(
    "file user host domain table column schema product company org organisation organization carrier airline "
    "airport station street road place city country state brand dataset event field key type category item app "
    "service device team school agency dept department bank shop store vendor merchant business entity project "
    "course class group site building estate town")
_PERSON_NAME_TOKENS = _words(
    "fullname firstname lastname surname givenname familyname middlename forename maidenname nickname")
# Words that join the parts of a name without being capitalised: Nur Aisyah binte Rahman, Ravi s/o Kumar.
_NAME_LINKS = _words("bin binte binti bte bt s/o d/o a/l a/p van von der den de da dos das del la le al el")
# Words that make a capitalised phrase an organisation or a place rather than a person.
_NOT_PERSON = _words(
    "inc ltd llc corp co company corporation pte plc limited group holdings airport airlines airways air lines "
    "international intl regional municipal muni county field station school hospital clinic centre center "
    "university college park road street avenue bank services service the of and ministry agency council "
    "board authority")


@dataclass(frozen=True)
class ColumnScan:
    """What the scan found in one column: the best-fitting detector, its match rate, and the contract's word."""

    column: str
    data_type: str
    non_null: int
    pii_type: str | None = None  # the detector that fitted best (None: no value matched any detector)
    matches: int = 0
    threshold: float | None = None
    method: str = ""
    declared: str | None = None  # the contract's piiType

    @property
    def rate(self) -> float | None:
        return self.matches / self.non_null if self.non_null and self.pii_type else None

    @property
    def detected(self) -> bool:
        return self.rate is not None and self.threshold is not None and self.rate >= self.threshold

    @property
    def status(self) -> str:
        """undeclared, declared, declared-differently, not-detected (declared, but the sample does not show
        it) or clean."""
        if self.detected:
            if self.declared is None:
                return "undeclared"
            return "declared" if self.declared == self.pii_type else "declared-differently"
        return "not-detected" if self.declared else "clean"

    def to_dict(self) -> dict[str, Any]:
        rate = self.rate
        return {"column": self.column, "type": self.data_type, "non_null": self.non_null,
                "candidate": self.pii_type, "detected": self.pii_type if self.detected else None,
                "matches": self.matches, "rate": round(rate, 4) if rate is not None else None,
                "threshold": self.threshold, "method": self.method, "declared": self.declared,
                "status": self.status}


@dataclass(frozen=True)
class ScanReport:
    """Every column of one sample."""

    sampled: int
    sample: int
    seed: int
    columns: list[ColumnScan]

    @property
    def undeclared(self) -> list[ColumnScan]:
        return [c for c in self.columns if c.status == "undeclared"]

    @property
    def detected(self) -> list[ColumnScan]:
        return [c for c in self.columns if c.detected]

    def to_dict(self) -> dict[str, Any]:
        return {"sampled": self.sampled, "sample": self.sample, "seed": self.seed,
                "columns": [c.to_dict() for c in self.columns],
                "detected": {c.column: c.pii_type for c in self.detected},
                "undeclared": [c.column for c in self.undeclared]}


# -- value tests ---------------------------------------------------------------------------------------


def is_email(value: str) -> bool:
    return bool(_EMAIL.fullmatch(value.strip()))


def is_sg_phone_text(value: str) -> bool:
    """A Singapore number as text: +65 optional, 8 digits starting 3, 6, 8 or 9; spaces and dashes ignored."""
    return is_valid_sg_phone(value.replace("-", ""))


def is_sg_phone_number(value: int) -> bool:
    """A Singapore number stored as an integer: 91234567, or 6591234567 with the country code."""
    text = str(value)
    if len(text) == 10 and text.startswith("65"):
        text = text[2:]
    return len(text) == 8 and text[0] in "3689"


def is_postal_code(value: str) -> bool:
    """Six digits whose first two are a real postal sector (01 to 82)."""
    value = value.strip()
    return bool(_SIX_DIGITS.fullmatch(value)) and int(value[:2]) in POSTAL_SECTORS


def is_postal_number(value: int) -> bool:
    """A postal code stored as an integer, which drops leading zeros: 18956 is 018956."""
    return 0 <= value <= 999_999 and is_postal_code(f"{value:06d}")


def plausible_birth_date(value: date, today: date) -> bool:
    """A date implying an age of 0 to 120 on `today`."""
    if isinstance(value, datetime):
        value = value.date()
    if value > today:
        return False
    age = today.year - value.year - ((today.month, today.day) < (value.month, value.day))
    return age <= MAX_AGE


def is_person_name(value: str) -> bool:
    """2 to 4 capitalised words (linking words like bin or d/o aside), none naming an organisation or place.

    >>> is_person_name("Nur Aisyah binte Rahman"), is_person_name("Delta Air Lines Inc."), is_person_name("apple")
    (True, False, False)
    """
    words = value.split()
    parts = [w for w in words if w.lower() not in _NAME_LINKS]
    if not 2 <= len(parts) <= 4:
        return False
    for word in parts:
        if word.lower().strip(".,") in _NOT_PERSON:
            return False
        if not (word[0].isupper() and all(ch.isalpha() or ch in "'\u2019.-" for ch in word)):
            return False
        if len(word) > 2 and not any(ch.islower() for ch in word):  # ALL CAPS words are codes more often than names
            return False
    return True


# -- column hints ---------------------------------------------------------------------------------------


def _tokens(column: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _named(column: str, pattern: re.Pattern[str]) -> bool:
    return bool(pattern.search("_".join(_tokens(column))))


def names_a_person(column: str) -> bool:
    """`full_name`, `name`, `surname`, `firstName` — but not `carrier_name`, `username` or `file_name`."""
    tokens = _tokens(column)
    for i, token in enumerate(tokens):
        if token in _PERSON_NAME_TOKENS:
            return True
        if token == "name" and not (i > 0 and tokens[i - 1] in _THING_NAMES):
            return True
    return False


# -- detection ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Detector:
    pii_type: str
    test: Callable[[Any], bool]
    threshold: float
    method: str


def _kind(data_type: str) -> str:
    t = data_type.upper()
    if t in ("VARCHAR", "TEXT", "STRING") or t.startswith("VARCHAR"):
        return "string"
    if _INTEGER.fullmatch(t):
        return "integer"
    if t == "DATE":
        return "date"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    return "other"


def _birth_text(value: str, today: date) -> bool:
    """An ISO date as text (2001-02-03, or the date part of a timestamp) implying an age of 0 to 120."""
    try:
        return plausible_birth_date(date.fromisoformat(value.strip()[:10]), today)
    except ValueError:
        return False


def detectors(column: str, data_type: str, values: list[Any], *, key: bool = False,
              today: date | None = None) -> list[_Detector]:
    """The detectors that apply to a column, from its name, type and (for bare postal codes) its values."""
    today = today or date.today()
    kind = _kind(data_type)
    found: list[_Detector] = []
    postal_named = _named(column, _POSTAL_HINT)
    birth_named = _named(column, _BIRTH_HINT)
    if kind == "string":
        found += [
            _Detector("nric", is_valid_nric, THRESHOLD, "NRIC/FIN with a valid check letter"),
            _Detector("email", is_email, THRESHOLD, "e-mail address"),
            _Detector("phone", is_sg_phone_text, THRESHOLD, "Singapore phone number"),
        ]
        if postal_named:
            found.append(_Detector("postal-code", is_postal_code, THRESHOLD,
                                   "6-digit postal code in a column named like postal/zip"))
        elif not key and values and all(len(str(v).strip()) == 6 for v in values):
            found.append(_Detector("postal-code", is_postal_code, BARE_POSTAL_THRESHOLD,
                                   "6-digit postal code (no postal/zip in the name, so a higher threshold)"))
        if birth_named:
            found.append(_Detector("date-of-birth", lambda v: _birth_text(v, today), THRESHOLD,
                                   f"dates implying an age of 0-{MAX_AGE} in a column named like birth/dob"))
        if names_a_person(column):
            found.append(_Detector("name", is_person_name, NAME_THRESHOLD,
                                   "2-4 capitalised words in a column named like name"))
    elif kind == "integer":
        if postal_named:
            found.append(_Detector("postal-code", is_postal_number, THRESHOLD,
                                   "postal code as a number in a column named like postal/zip"))
        if _named(column, _PHONE_HINT):
            found.append(_Detector("phone", is_sg_phone_number, THRESHOLD,
                                   "Singapore phone number as a number in a column named like phone"))
    elif kind in ("date", "timestamp") and birth_named:
        found.append(_Detector("date-of-birth", lambda v: plausible_birth_date(v, today), THRESHOLD,
                               f"dates implying an age of 0-{MAX_AGE} in a column named like birth/dob"))
    return found


def _worth_reading(column: str, kind: str) -> bool:
    if kind == "string":
        return True
    if kind == "integer":
        return _named(column, _POSTAL_HINT) or _named(column, _PHONE_HINT)
    return kind in ("date", "timestamp") and _named(column, _BIRTH_HINT)


def scan_values(column: str, data_type: str, values: list[Any], *, declared: str | None = None,
                key: bool = False, today: date | None = None) -> ColumnScan:
    """Scan one column's sampled non-null values: the detector with the best match rate wins (none when no
    value matches any detector)."""
    best = ColumnScan(column, data_type, len(values), declared=declared)
    for detector in detectors(column, data_type, values, key=key, today=today):
        matches = sum(1 for v in values if _safe(detector.test, v))
        trial = ColumnScan(column, data_type, len(values), detector.pii_type, matches, detector.threshold,
                           detector.method, declared)
        if matches and (best.pii_type is None or _rank(trial) > _rank(best)):
            best = trial
    return best


def _safe(test: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(test(value))
    except (TypeError, ValueError, AttributeError, IndexError):
        return False


def _rank(scan: ColumnScan) -> tuple[bool, float]:
    return scan.detected, scan.rate or 0.0


def sample_sql(relation_sql: str, sample: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED) -> str:
    """A reproducible sample of `sample` rows (all of them when there are fewer)."""
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise UsageError(f"sample size {sample!r} — fix: a whole number of rows, at least 1")
    return (f"SELECT * FROM ({relation_sql}) AS __tm_scan USING SAMPLE reservoir({sample} ROWS) "
            f"REPEATABLE ({int(seed)})")


def parquet_relation(files: Iterable[str]) -> str:
    """A SELECT over Parquet files, the relation a scan or a k-anonymity check reads."""
    return f"SELECT * FROM read_parquet({literal(list(files))})"


def scan_relation(con: duckdb.DuckDBPyConnection, relation_sql: str, *,
                  declared: Mapping[str, str | None] | None = None, keys: Collection[str] = (),
                  sample: int = DEFAULT_SAMPLE, seed: int = DEFAULT_SEED, today: date | None = None) -> ScanReport:
    """Scan a sample of `relation_sql` (a SELECT) for personal data.

    `declared` maps columns to the contract's piiType; `keys` are the primary-key and unique columns, which
    are never taken for bare postal codes. Run on one thread for the same sample every time.
    """
    declared = declared or {}
    table = f"__tm_scan_sample_{uuid.uuid4().hex[:12]}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {sample_sql(relation_sql, sample, seed)}")
    try:
        described = con.execute(f"DESCRIBE {table}").fetchall()
        count = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        sampled = int(count[0]) if count else 0
        columns = []
        for row in described:
            name, data_type = str(row[0]), str(row[1])
            kind, column = _kind(data_type), quote(name)
            if not _worth_reading(name, kind):  # no detector applies: count, don't fetch
                counted = con.execute(f"SELECT count({column}) FROM {table}").fetchone()
                columns.append(ColumnScan(name, data_type, int(counted[0]) if counted else 0,
                                          declared=declared.get(name)))
                continue
            value = f"CAST({column} AS DATE)" if kind == "timestamp" else column
            values = [v[0] for v in con.execute(f"SELECT {value} FROM {table} WHERE {column} IS NOT NULL").fetchall()]
            columns.append(scan_values(name, data_type, values, declared=declared.get(name), key=name in keys,
                                       today=today))
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return ScanReport(sampled, sample, seed, columns)


def scan_files(files: list[str], **kwargs: Any) -> ScanReport:
    """Scan a version's Parquet files (see `scan_relation` for the options), on a connection of its own."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads = 1")  # the reservoir sample is reproducible on one thread
        return scan_relation(con, parquet_relation(files), **kwargs)
    finally:
        con.close()


def record_findings(session: Session, address: str, version: int, report: ScanReport, *,
                    contract_file: str | None = None, now: datetime | None = None) -> list[FindingRow]:
    """Store each undeclared detection as an `undeclared-pii` finding (severity error) on `version`.

    The findings of an earlier scan of the same version are replaced: they say what the latest scan found.
    """
    session.execute(delete(FindingRow).where(FindingRow.dataset == address, FindingRow.version == version,
                                              FindingRow.kind == FINDING_KIND, FindingRow.build_id == SCAN_BUILD_ID))
    now = now or utcnow()
    where = contract_file or "the contract"
    rows = [FindingRow(dataset=address, kind=FINDING_KIND, severity="error", column=c.column,
                       message=f"column {c.column} looks like {c.pii_type} ({c.method}): {c.matches} of "
                               f"{c.non_null} sampled values match ({c.rate or 0:.0%}, threshold "
                               f"{c.threshold or 0:.0%}), but the contract declares no piiType — fix: declare "
                               f"`piiType: {c.pii_type}` (and its classification and sensitivity) for {c.column} "
                               f"in {where}, then rebuild",
                       build_id=SCAN_BUILD_ID, version=version, created_at=now)
            for c in report.undeclared]
    session.add_all(rows)
    session.flush()
    return rows
