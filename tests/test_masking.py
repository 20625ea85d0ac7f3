"""Masking strategies as the SQL a consumer's relation is built from, run on tiny DuckDB tables; the key store.

Every strategy is checked through `expression(...)` exactly as the gateway uses it, on the values and
types a column can hold — NULLs included.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from trustmesh.privacy.identifiers import canonical_nric, is_valid_nric
from trustmesh.privacy.keys import KEYS_FILE_ENV, KeyStore, KeyStoreError, env_name
from trustmesh.privacy.masking import DEFAULT_BY_PII_TYPE, STRATEGIES, Masking, choose, expression

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))


def keys(mapping: dict[str, bytes] | None = None) -> Callable[[str], bytes]:
    """A key lookup like KeyStore.key that records which ids were asked for."""
    table = mapping or {"default": KEY, "other": OTHER_KEY}

    def key(key_id: str) -> bytes:
        key.asked.append(key_id)  # type: ignore[attr-defined]
        return table[key_id.split(":", 1)[-1]]  # the store's ids are scoped: pseudonym:<name>, perturb:<seed>

    key.asked = []  # type: ignore[attr-defined]
    return key


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    yield c
    c.close()


def masked(con: duckdb.DuckDBPyConnection, values: list[Any], masking: Masking, column_type: str = "VARCHAR",
           key: Callable[[str], bytes] | None = None) -> list[Any]:
    """The masked values of `values` held in a column of `column_type`, in order."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE t (i INTEGER, v {column_type})")
    for i, value in enumerate(values):
        con.execute("INSERT INTO t VALUES (?, ?)", [i, value])
    sql = expression('"v"', masking, column_type, key or keys())
    return [row[0] for row in con.execute(f"SELECT {sql} FROM t ORDER BY i").fetchall()]


def masked_type(con: duckdb.DuckDBPyConnection, masking: Masking, column_type: str) -> str:
    con.execute(f"CREATE OR REPLACE TEMP TABLE t (v {column_type})")
    con.execute("INSERT INTO t VALUES (NULL)")
    return con.execute(f"SELECT typeof({expression('v', masking, column_type, keys())}) FROM t").fetchall()[0][0]


def py_hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


# -- character masking -------------------------------------------------------------------------------------


def test_nric_keeps_the_last_three_digits_and_the_check_letter(con: Any) -> None:
    out = masked(con, ["S1234567D", "T1234567J", "F0000004M"], choose("nric"))
    assert out == ["*****567D", "*****567J", "*****004M"]


def test_email_keeps_only_the_domain(con: Any) -> None:
    out = masked(con, ["alice.tan@example.com", "bob@gov.sg", "no-at-sign", ""], choose("email"))
    assert out == ["***@example.com", "***@gov.sg", "***", "***"]


def test_phone_keeps_the_last_four_digits(con: Any) -> None:
    assert masked(con, ["91234567", "+65 9123 4567"], choose("phone")) == ["****4567", "*********4567"]
    assert masked(con, [6591234567], choose("phone"), "BIGINT") == ["******4567"]  # a number column too


def test_name_keeps_the_first_letter(con: Any) -> None:
    assert masked(con, ["Tan Ah Kow", "Ng"], choose("name")) == ["T***", "N***"]


def test_other_personal_data_under_mask_shows_nothing(con: Any) -> None:
    assert masked(con, ["1 Raffles Place", "x"], Masking("mask", "address")) == ["***", "***"]


@pytest.mark.parametrize("masking, column_type", [
    (choose("nric"), "VARCHAR"), (choose("email"), "VARCHAR"), (choose("phone"), "VARCHAR"),
    (choose("name"), "VARCHAR"), (Masking("mask", "address"), "VARCHAR"), (choose("address"), "VARCHAR"),
    (choose("nric", "pseudonymise"), "VARCHAR"), (choose("email", "pseudonymise"), "VARCHAR"),
    (choose("postal-code"), "VARCHAR"), (choose("date-of-birth"), "DATE"),
    (choose(None, "generalise"), "INTEGER"), (choose(None, {"strategy": "perturb", "bound": 3}), "DOUBLE"),
])
def test_null_stays_null(con: Any, masking: Masking, column_type: str) -> None:
    assert masked(con, [None], masking, column_type) == [None]


# -- keyed pseudonyms --------------------------------------------------------------------------------------


def test_pseudonym_is_hmac_sha256_of_the_value(con: Any) -> None:
    values = ["alice.tan@example.com", "Bob@Example.com", "", "ünïcödé ✓"]
    out = masked(con, values, choose("email", "pseudonymise"))
    assert out == [py_hmac(KEY, v) for v in values]
    assert len(set(out)) == len(values)
    assert "Bob@Example.com".lower() != "Bob@Example.com" and out[1] != py_hmac(KEY, "bob@example.com")


def test_nric_pseudonym_is_taken_of_the_canonical_form(con: Any) -> None:
    variants = ["S1234567D", " s1234567d ", "s1234567D", "S 1234567 D", "\tS1234567D\n"]
    out = masked(con, variants, choose("nric", "pseudonymise"))
    assert set(out) == {py_hmac(KEY, canonical_nric(" s1234567d "))} == {py_hmac(KEY, "S1234567D")}
    assert masked(con, ["T1234567J"], choose("nric", "pseudonymise")) != out[:1]


def test_pseudonyms_differ_by_key_and_name_their_key(con: Any) -> None:
    lookup = keys({"default": KEY, "linkage": OTHER_KEY})
    default = masked(con, ["S1234567D"], choose("nric", "pseudonymise"), key=lookup)
    linkage = masked(con, ["S1234567D"], choose("nric", {"strategy": "pseudonymise", "key": "linkage"}), key=lookup)
    assert default == [py_hmac(KEY, "S1234567D")] and linkage == [py_hmac(OTHER_KEY, "S1234567D")]
    assert default != linkage
    assert lookup.asked == ["pseudonym:default", "pseudonym:linkage"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 65, os.urandom(200)])
def test_pseudonym_matches_python_hmac_for_any_key_length(con: Any, key: bytes) -> None:
    out = masked(con, ["S1234567D"], choose("email", "pseudonymise"), key=lambda _: key)
    assert out == [py_hmac(key, "S1234567D")]


def test_pseudonym_of_a_number_column_is_taken_of_its_text(con: Any) -> None:
    assert masked(con, [91234567], choose("phone", "pseudonymise"), "BIGINT") == [py_hmac(KEY, "91234567")]


def test_the_key_is_not_in_the_expression_in_the_clear_but_its_pads_are() -> None:
    sql = expression("v", choose("nric", "pseudonymise"), "VARCHAR", lambda _: KEY)
    assert KEY.hex() not in sql
    # HMAC's pads are the key XOR constants: whoever reads the expression holds the key. The gateway must
    # therefore never show a relation's definition to a consumer (see test_query_attacks).
    assert bytes(b ^ 0x36 for b in KEY.ljust(64, b"\0")).hex() in sql


# -- generalisation ----------------------------------------------------------------------------------------


def test_postal_code_is_generalised_to_its_two_digit_sector(con: Any) -> None:
    assert masked(con, ["238801", "018956", "519000"], choose("postal-code")) == ["23", "01", "51"]


@pytest.mark.parametrize("column_type, value, expected", [
    ("DATE", "1980-05-17", "1980-01-01"),
    ("DATE", "2001-12-31", "2001-01-01"),
    ("TIMESTAMP", "1992-11-30 13:45:00", "1992-01-01 00:00:00"),
])
def test_date_of_birth_is_generalised_to_the_start_of_its_year(con: Any, column_type: str, value: str,
                                                               expected: str) -> None:
    [out] = masked(con, [value], choose("date-of-birth"), column_type)
    assert str(out) == expected
    assert masked_type(con, choose("date-of-birth"), column_type) == column_type


def test_numbers_are_generalised_to_buckets(con: Any) -> None:
    assert masked(con, [37, 30, 39, 0, -3], choose(None, "generalise"), "INTEGER") == [30, 30, 30, 0, -10]
    assert masked(con, [37.5, 12.0], choose(None, {"strategy": "generalise", "bucket": 5}), "DOUBLE") == [35.0, 10.0]
    assert masked(con, [1234], choose(None, {"strategy": "generalise", "bucket": 1000}), "BIGINT") == [1000]
    assert masked_type(con, choose(None, "generalise"), "INTEGER") == "INTEGER"
    assert masked(con, ["2024-07-09"], choose(None, "generalise"), "DATE")[0].isoformat() == "2024-01-01"


# -- perturbation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound, column_type", [(1, "DOUBLE"), (5, "DOUBLE"), (3, "INTEGER"), (0.5, "DOUBLE")])
def test_perturbation_stays_within_its_bound(con: Any, bound: float, column_type: str) -> None:
    values = list(range(-50, 150))
    out = masked(con, values, choose(None, {"strategy": "perturb", "bound": bound}), column_type)
    slack = 0.5 if column_type == "INTEGER" else 1e-9  # an integer column rounds the noisy value
    assert all(abs(o - v) <= bound + slack for o, v in zip(out, values, strict=True))
    assert sum(o != v for o, v in zip(out, values, strict=True)) > len(values) // 2  # it does perturb
    assert masked_type(con, choose(None, {"strategy": "perturb", "bound": bound}), column_type) == column_type


def test_perturbation_is_deterministic_per_value(con: Any) -> None:
    masking = choose(None, {"strategy": "perturb", "bound": 5})
    values = [42.0, 17.0, 42.0, 99.5, 17.0]
    first = masked(con, values, masking, "DOUBLE")
    assert first[0] == first[2] and first[1] == first[4]  # the same value always gets the same noise
    with duckdb.connect() as other:
        assert masked(other, values, masking, "DOUBLE") == first  # in any session
    reseeded = masked(con, values, choose(None, {"strategy": "perturb", "bound": 5, "seed": "other"}), "DOUBLE")
    assert reseeded != first


def test_perturbation_cannot_be_undone_by_a_consumer(con: Any) -> None:
    """The noise is a keyed hash of the value: a consumer who recomputes it for every candidate value (with the
    gateway's own allow-listed functions) but without the platform's key cannot read the values back."""
    masking = choose(None, {"strategy": "perturb", "bound": 5})  # e.g. ages, perturbed by up to ±5
    ages = [float(a) for a in range(18, 90)]
    published = masked(con, ages, masking, "DOUBLE")
    candidates = expression("c", masking, "DOUBLE", keys({"default": b"a guessed key"}))
    lookup: dict[float, list[float]] = {}
    for c, noisy in con.execute(f"SELECT c, {candidates} FROM (SELECT CAST(r AS DOUBLE) AS c FROM range(0, 130) "
                                "t(r))").fetchall():
        lookup.setdefault(noisy, []).append(c)
    recovered = [lookup.get(p) == [a] for a, p in zip(ages, published, strict=True)]
    assert sum(recovered) < len(ages) // 2, (
        f"{sum(recovered)} of {len(ages)} perturbed values recovered exactly by recomputing the public noise")


# -- suppression and choice --------------------------------------------------------------------------------


@pytest.mark.parametrize("column_type", ["VARCHAR", "DATE", "INTEGER", "DOUBLE", "DECIMAL(10,2)", "TIMESTAMP"])
def test_suppression_is_null_of_the_same_type(con: Any, column_type: str) -> None:
    value = {"VARCHAR": "1 Raffles Place", "DATE": "2024-01-01", "TIMESTAMP": "2024-01-01 10:00:00"}.get(column_type, 7)
    assert masked(con, [value, None], choose("address"), column_type) == [None, None]
    assert masked_type(con, choose("address"), column_type) == column_type


def test_choose_by_pii_type_and_by_the_contract() -> None:
    assert {t: choose(t).strategy for t in DEFAULT_BY_PII_TYPE} == DEFAULT_BY_PII_TYPE
    assert choose(None).strategy == "suppress" and choose("unknown-type").strategy == "suppress"
    assert choose("nric", "pseudonymise") == Masking("pseudonymise", "nric")
    bucketed = choose("email", {"strategy": "generalise", "bucket": 100})
    assert bucketed.strategy == "generalise" and bucketed.params == {"bucket": 100}
    assert choose("nric", {"key": "linkage"}).strategy == "mask"  # parameters alone keep the default
    with pytest.raises(ValueError, match="unknown masking strategy 'hash'"):
        choose("nric", "hash")
    for strategy in STRATEGIES:
        masking = choose("nric", strategy)
        assert masking.to_dict()["strategy"] == strategy and masking.describe()
    with pytest.raises(ValueError, match="unknown masking strategy"):
        expression("v", Masking("shuffle"), "VARCHAR", keys())


# -- the key store -----------------------------------------------------------------------------------------


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(KEYS_FILE_ENV, raising=False)
    for name in list(os.environ):
        if name.startswith("TRUSTMESH_KEY_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_a_key_is_created_once_in_a_file_only_its_owner_reads(tmp_path: Path, no_key_env: Any) -> None:
    path = tmp_path / ".trustmesh" / "keys.json"
    store = KeyStore(path)
    key = store.key("default")
    assert len(key) == 32 and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyStore(path).key("default") == key  # kept, not regenerated
    assert store.key("linkage") != key and KeyStore(path).key("linkage") == store.key("linkage")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not path.with_name("keys.json.tmp").exists()
    assert key.hex() in path.read_text()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, no_key_env: Any, mode: int) -> None:
    path = tmp_path / "keys.json"
    KeyStore(path).key("default")
    path.chmod(mode)
    with pytest.raises(KeyStoreError, match=r"can be read by others .*chmod 600"):
        KeyStore(path).key("default")


def test_a_key_from_the_environment_overrides_the_file(tmp_path: Path, no_key_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    assert env_name("linkage:active-commuting") == "TRUSTMESH_KEY_LINKAGE_ACTIVE_COMMUTING"
    no_key_env.setenv("TRUSTMESH_KEY_LINKAGE_ACTIVE_COMMUTING", "ab" * 32)
    assert KeyStore(path).key("linkage:active-commuting") == bytes.fromhex("ab" * 32)
    assert not path.exists()  # nothing generated when the environment holds the key
    filed = KeyStore(path).key("default")
    no_key_env.setenv("TRUSTMESH_KEY_DEFAULT", "cd" * 32)
    assert KeyStore(path).key("default") == bytes.fromhex("cd" * 32) != filed
    no_key_env.setenv("TRUSTMESH_KEY_DEFAULT", "not hex")
    with pytest.raises(KeyStoreError, match="TRUSTMESH_KEY_DEFAULT is not hex"):
        KeyStore(path).key("default")


def test_a_mounted_key_file_is_read_only(tmp_path: Path, no_key_env: pytest.MonkeyPatch) -> None:
    mounted = tmp_path / "secret" / "keys.json"
    KeyStore(mounted).key("default")
    no_key_env.setenv(KEYS_FILE_ENV, str(mounted))
    store = KeyStore(tmp_path / "ignored.json")
    assert store.path == mounted and store.key("default") == KeyStore(mounted).key("default")
    with pytest.raises(KeyStoreError, match="no key 'linkage'"):
        store.key("linkage")
    assert not (tmp_path / "ignored.json").exists()


@pytest.mark.parametrize("key_id", ["", "Default", "../etc/passwd", "a b", "x" * 201, "-lead"])
def test_bad_key_ids_are_refused(tmp_path: Path, no_key_env: Any, key_id: str) -> None:
    with pytest.raises(KeyStoreError, match="is not valid"):
        KeyStore(tmp_path / "keys.json").key(key_id)
    assert not (tmp_path / "keys.json").exists()


def test_a_key_file_that_is_not_an_object_is_refused(tmp_path: Path, no_key_env: Any) -> None:
    path = tmp_path / "keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"[1, 2]")
    os.close(fd)
    with pytest.raises(KeyStoreError, match="not a JSON object"):
        KeyStore(path).key("default")


# -- NRIC/FIN vectors not already in test_identifiers.py ---------------------------------------------------


@pytest.mark.parametrize("value", ["M1234567L"])
def test_more_invalid_nric_vectors(value: str) -> None:
    assert not is_valid_nric(value)
    with pytest.raises(ValueError, match="check letter"):
        canonical_nric(value)
