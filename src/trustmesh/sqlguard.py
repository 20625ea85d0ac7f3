"""What untrusted SQL may do, decided twice: by sqlglot's reading and by DuckDB's own parser.

Every piece of SQL trustmesh runs on someone else's behalf goes through here: a consumer's query (the
gateway), a domain's product SQL and its `type: sql` quality rules (builds and validation). sqlglot finds
the tables a statement reads, honouring the lexical scope of CTEs, so a name is a CTE only where that CTE
is visible; DuckDB's `json_serialize_sql` then reads the exact text that will run and checks the statement
kind, every table reference and every function name again. Whatever one parser misreads, the other refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from trustmesh.errors import TrustmeshError

INTERNAL_PREFIX = "__tm"

# Functions a consumer may call: scalar, aggregate and window functions without side effects, by the
# name DuckDB's parser gives them (operators included). Everything else is refused by name.
AGGREGATES = """count count_star sum avg mean min max median mode quantile quantile_cont quantile_disc stddev
stddev_pop stddev_samp variance var_pop var_samp first last any_value arg_max arg_min argmax argmin max_by min_by
bool_and bool_or string_agg group_concat listagg list array_agg approx_count_distinct approx_quantile corr covar_pop
covar_samp regr_slope regr_intercept regr_r2 regr_count regr_avgx regr_avgy histogram product fsum sumkahan kahan_sum
kurtosis kurtosis_pop skewness entropy bit_and bit_or bit_xor sem mad count_if countif favg geomean geometric_mean"""
WINDOWS = "row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value"
SCALARS = """abs ceil ceiling floor round round_even trunc sqrt cbrt exp ln log log2 log10 pow power sign signbit
greatest least mod pi degrees radians sin cos tan asin acos atan atan2 cot isnan isinf isfinite even factorial gcd
lcm random lower upper lcase ucase length len strlen char_length character_length length_grapheme concat concat_ws
substr substring substring_grapheme left right left_grapheme right_grapheme trim ltrim rtrim replace reverse
repeat lpad rpad split_part string_split str_split string_split_regex starts_with ends_with prefix suffix contains
position strpos instr regexp_matches regexp_replace regexp_extract regexp_extract_all regexp_full_match
regexp_split_to_array regexp_escape like_escape ilike_escape not_like_escape not_ilike_escape format printf ascii
unicode ord chr translate levenshtein editdist3 damerau_levenshtein jaro_similarity jaro_winkler_similarity hamming
mismatches jaccard strip_accents nfc_normalize lower upper md5 sha1 sha256 hash bit_count bit_length octet_length
to_base64 base64 from_base64 encode decode to_hex hex from_hex unhex bin to_binary from_binary date_part datepart
date_trunc datetrunc date_diff datediff date_sub datesub date_add extract year month day dayofweek dayofmonth
dayofyear week weekofyear weekday quarter hour minute second millisecond microsecond nanosecond epoch epoch_ms
epoch_us epoch_ns era decade century millennium julian isodow isoyear yearweek make_date make_time make_timestamp
make_timestamptz strftime strptime try_strptime to_timestamp age last_day monthname dayname time_bucket to_days
to_hours to_minutes to_seconds to_months to_years to_weeks to_decades to_centuries to_millennia to_milliseconds
to_microseconds to_quarters today now get_current_timestamp current_timestamp current_date get_current_time
current_time transaction_timestamp timezone nullif ifnull if iff coalesce typeof list_value list_pack struct_pack
struct_insert row list_extract list_element array_extract list_transform array_transform apply list_apply
list_filter array_filter filter list_reduce array_reduce reduce list_aggregate array_aggregate list_aggr
aggregate list_sort array_sort list_reverse_sort list_distinct array_distinct list_unique array_unique
list_contains array_contains list_has array_has list_has_any list_has_all list_position list_indexof
array_length list_concat array_concat list_cat array_cat list_slice array_slice list_zip list_sum list_min
list_max list_avg list_count list_first list_last list_any_value list_string_agg array_to_string list_resize
flatten unnest generate_series range struct_extract struct_extract_at map map_extract map_keys map_values
map_entries map_from_entries cardinality element_at json_extract json_extract_string json_extract_path
json_extract_path_text json_type json_valid json_array_length json_keys json_object json_array to_json
array_to_json json_structure json_contains json_exists json_value isodate try_cast cast union_value union_tag
union_extract enum_code enum_first enum_last enum_range enum_range_boundary ceil floor xor bitstring gamma
lgamma nextafter least_common_multiple greatest_common_divisor formatreadablesize format_bytes
formatreadabledecimalsize rtrim ltrim split array_position array_indexof list_select array_select list_where
array_where list_grade_up array_grade_up list_inner_product list_dot_product list_cosine_similarity
list_distance array_inner_product array_cosine_similarity array_distance array_value array_cross_product
current_localtime current_localtimestamp"""
OPERATORS = """+ - * / // % ** ^ & | << >> ~ || ~~ !~~ ~~* !~~* ~~~ !~~~ ^@ @> <@ && -> ->> !__postfix"""
ALLOWED_FUNCTIONS = frozenset((AGGREGATES + " " + WINDOWS + " " + SCALARS + " " + OPERATORS).split())
ALLOWED_TABLE_FUNCTIONS = frozenset({"unnest", "range", "generate_series"})
# The kinds of node DuckDB's parser may produce in an allowed query; anything else (a prepared
# statement parameter, say) is refused rather than assumed harmless.
ALLOWED_CLASSES = frozenset({
    "BETWEEN", "CASE", "CAST", "COLLATE", "COLUMN_REF", "COMPARISON", "CONJUNCTION", "CONSTANT", "FUNCTION",
    "LAMBDA", "OPERATOR", "POSITIONAL_REFERENCE", "STAR", "SUBQUERY", "WINDOW", "TYPE", "LAMBDA_REF",
})
DENIED_TABLE_REFS = frozenset({"SHOW_REF", "COLUMN_DATA", "DELIM_GET", "BOUND_REF", "CTE_REF"})


class QueryRefused(TrustmeshError, PermissionError):
    """The query was not run: it is not a read query, names what it may not, or calls what is not allowed."""

    http_status = 403


@dataclass
class DatasetRef:
    """One dataset a query reads: its address, the version asked for (None: the served one), the node."""

    address: str
    version: int | None
    node: exp.Table = field(repr=False)


@dataclass
class Parsed:
    tree: exp.Expr
    refs: list[DatasetRef]
    ctes: set[str]


def ctes_in_scope(node: exp.Expr) -> set[str]:
    """CTE names visible where `node` is (lexical scope): an enclosing query's CTEs from its body; inside a CTE,
    only the CTEs before it (and itself, when RECURSIVE). A name out of scope would reach DuckDB's catalog."""
    names: set[str] = set()
    child: exp.Expr = node
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            at = next((i for i, cte in enumerate(ctes) if cte is child), len(ctes))
            names |= {cte.alias_or_name.lower() for cte in ctes[:at]}
            if parent.args.get("recursive") and at < len(ctes):
                names.add(ctes[at].alias_or_name.lower())
        elif isinstance(parent, exp.Query):
            with_ = parent.args.get("with_") or parent.args.get("with")
            if isinstance(with_, exp.With) and child is not with_:
                names |= {cte.alias_or_name.lower() for cte in with_.expressions}
        child, parent = parent, parent.parent
    return names



# What a domain's own SQL (product transformations, quality rules) may not call: anything that reads the
# outside world, the engine's state or settings, or another catalog. Builds also run in a session that can
# open only the product's own files, so this list is the second of two locks, not the only one.
DENIED_PREFIXES = ("duckdb_", "pragma_", "pg_", "has_", "read_", "parquet_", "iceberg_", "delta_", "sqlite_",
                   "postgres_", "mysql_", "icu_", "test_", "json_execute", "json_deserialize", "json_serialize",
                   "input_file_", INTERNAL_PREFIX)
DENIED_NAMES = frozenset(str.split("""getenv current_setting current_query current_database current_catalog current_schema
current_schemas current_role current_user session_user user getvariable version nextval currval setseed glob
sniff_csv query query_table which_secret load_extension checkpoint force_checkpoint enable_profiling
disable_profiling enable_logging disable_logging truncate_duckdb_logs import_database export_database
reflect java_method try_reflect input_file_name spark_partition_id get_block_size"""))


def product_may_call(name: str) -> bool:
    """Whether a domain's own SQL may call the function `name` (lower case)."""
    return name not in DENIED_NAMES and not name.startswith(DENIED_PREFIXES)


def consumer_may_call(name: str) -> bool:
    return name in ALLOWED_FUNCTIONS


def denied_functions(tree: exp.Expr, may_call: Callable[[str], bool] = product_may_call) -> list[str]:
    """Functions sqlglot sees `tree` call that `may_call` refuses (sqlglot's half of the check)."""
    found = []
    for node in tree.find_all(exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if not may_call(name):
            found.append(name)
    if tree.find(exp.CurrentUser):
        found.append("current_user")
    return sorted(set(found))


def table_references(tree: exp.Expr) -> Iterator[exp.Table]:
    """Every table `tree` reads by name that is not a CTE visible where it is read (table functions excluded)."""
    for table in list(tree.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            continue
        if not table.db and not table.catalog and table.name.lower() in ctes_in_scope(table):
            continue
        yield table


@dataclass(frozen=True)
class ReadRules:
    """What DuckDB's reading of a statement may contain: which functions, which table functions."""

    may_call: Callable[[str], bool]
    table_functions: frozenset[str]
    what: str  # "a query", "product SQL", "a quality rule": for messages
    read_by: str  # how this SQL names what it reads, for the fix of a refused table function


CONSUMER = ReadRules(consumer_may_call, ALLOWED_TABLE_FUNCTIONS, "a query", "read datasets by address")
PRODUCT = ReadRules(product_may_call, ALLOWED_TABLE_FUNCTIONS, "product SQL",
                    "read inputs by their port names or dataset addresses")
QUALITY_RULE = ReadRules(product_may_call, ALLOWED_TABLE_FUNCTIONS, "a quality rule", "read the dataset as ${table}")


PERSON_COLUMN = f"{INTERNAL_PREFIX}_person"  # who a row is about, in an aggregate-only relation
# Aggregates that summarise a group; not those that hand back members' values (list, string_agg, first, ...).
SUMMARY_AGGREGATES = frozenset({"count", "sum", "avg", "mean", "min", "max", "median", "stddev", "stddev_pop",
                                "stddev_samp", "variance", "var_pop", "var_samp", "approx_count_distinct"})
# What an aggregate's argument may be built from: columns, numbers and arithmetic — no conditions that could
# single one person out of the group.
ARGUMENT_NODES = (exp.Column, exp.Identifier, exp.Literal, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Paren, exp.Neg,
                  exp.Cast, exp.DataType, exp.Star, exp.Distinct)


def restrict_to_aggregates(parsed: Parsed, ref: DatasetRef, k: int, person: str | None = None) -> None:
    """Aggregate-only access: the query must be `SELECT <groups>, <aggregates> FROM dataset [WHERE ...]
    GROUP BY <groups>` (no joins, subqueries, CTEs or windows), and only groups of at least `k` people are
    released (a HAVING on the distinct people behind each group is added)."""
    tree = parsed.tree
    address = ref.address
    shape = (f"{address} is aggregate-only for you: write SELECT <columns>, <aggregates> FROM {address} "
             f"[WHERE ...] GROUP BY <columns>; groups of fewer than {k} people are not released")
    if not isinstance(tree, exp.Select) or len(parsed.refs) != 1 or tree.args.get("with_") or tree.args.get("joins"):
        raise QueryRefused(shape)
    source = tree.args.get("from_")
    if source is None or source.this is not ref.node:
        raise QueryRefused(shape)
    nested = [n for n in tree.walk() if isinstance(n, exp.Select | exp.Subquery | exp.Window | exp.Union) and n is not tree]
    if nested or tree.args.get("qualify") or tree.args.get("distinct"):
        raise QueryRefused(shape + " (no subqueries, window functions or DISTINCT rows)")
    group = tree.args.get("group")
    if group is not None and group.args.get("all"):
        raise QueryRefused(shape + " (name the GROUP BY columns)")
    grouping: set[str] = set()
    aliases = {p.alias: p.this for p in tree.expressions if isinstance(p, exp.Alias)}
    for g in group.expressions if group else []:
        if isinstance(g, exp.Literal) and not g.is_string and g.this.isdigit():  # GROUP BY 1
            index = int(g.this) - 1
            if not 0 <= index < len(tree.expressions):
                raise QueryRefused(shape)
            target = tree.expressions[index]
            grouping.add((target.this if isinstance(target, exp.Alias) else target).sql("duckdb"))
        elif isinstance(g, exp.Column) and not g.table and g.name in aliases:  # GROUP BY an output alias
            grouping.add(aliases[g.name].sql("duckdb"))
        else:
            grouping.add(g.sql("duckdb"))
    for projection in tree.expressions:
        value = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(value, exp.Star):
            raise QueryRefused(shape + " (no SELECT *)")
        if value.sql("duckdb") in grouping or isinstance(value, exp.Literal):
            continue
        loose = [c for c in value.find_all(exp.Column) if not any(isinstance(a, exp.AggFunc) for a in _up_to(c, value))]
        if loose or not value.find(exp.AggFunc):
            raise QueryRefused(shape + f" ({projection.sql('duckdb')} is neither grouped nor aggregated)")
    for agg in tree.find_all(exp.AggFunc):
        name = (agg.name if isinstance(agg, exp.Anonymous) else agg.sql_name()).lower()
        if name not in SUMMARY_AGGREGATES:
            raise QueryRefused(shape + f" ({name}() hands back members' values; use "
                               f"{', '.join(sorted(SUMMARY_AGGREGATES))})")
        for node in agg.walk():
            if node is not agg and not isinstance(node, ARGUMENT_NODES):
                raise QueryRefused(shape + f" (an aggregate's argument may hold only columns, numbers and "
                                   f"arithmetic, not {type(node).__name__.upper()})")
    if person:
        for column in tree.find_all(exp.Column):
            if column.name == person:
                raise QueryRefused(shape + f" ({person} identifies a person: it cannot be selected, grouped, "
                                   "filtered or aggregated on)")
    enough = exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[exp.column(PERSON_COLUMN, quoted=True)])),
                     expression=exp.Literal.number(k))
    having = tree.args.get("having")
    tree.set("having", exp.Having(this=exp.and_(having.this, enough) if having else enough))


def _up_to(node: exp.Expr, root: exp.Expr) -> list[exp.Expr]:
    """The ancestors of `node` up to and including `root`."""
    out = []
    parent = node.parent
    while parent is not None:
        out.append(parent)
        if parent is root:
            break
        parent = parent.parent
    return out


def verify(con: Any, sql: str, relations: set[str], ctes: set[str] | None = None, rules: ReadRules | None = None) -> None:
    """DuckDB's own reading of the SQL that will run: one SELECT over `relations` and the CTEs in scope.

    `rules` default to a consumer's: allow-listed functions only."""
    rules = rules or CONSUMER
    tables = frozenset(r.lower() for r in relations)
    key = (sql, tables, rules)
    if key in _VERIFIED:  # DuckDB's parser reads the same text the same way: validation checked it already
        return
    raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    tree = json.loads(raw)
    if tree.get("error"):
        message = tree.get("error_message", "")
        raise QueryRefused("only read queries are allowed" if "Only SELECT" in message
                           else f"the query does not parse: {message[:300]}")
    if len(tree.get("statements", [])) != 1:
        raise QueryRefused("one statement per query")
    _check(tree["statements"], tables, rules)
    if rules is not CONSUMER:  # a consumer's relations are named per query: nothing to remember
        if len(_VERIFIED) > 4096:
            _VERIFIED.clear()
        _VERIFIED.add(key)


_VERIFIED: set[tuple[str, frozenset[str], ReadRules]] = set()  # what domains' SQL passed, by text and relations


def _check(node: Any, tables: frozenset[str], rules: ReadRules) -> None:
    """Walk DuckDB's parse tree; `tables` are the names readable here (our relations + the CTEs in scope)."""
    if isinstance(node, list):
        for item in node:
            _check(item, tables, rules)
        return
    if not isinstance(node, dict):
        return
    cls, kind = node.get("class"), node.get("type")
    kind = kind if isinstance(kind, str) else None  # e.g. a sample size's value type is an object
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict) and cte_map.get("map"):
        # Each CTE body sees the CTEs before it (and itself when recursive); the query's body sees them all.
        seen = tables
        for item in cte_map["map"]:
            name = str(item.get("key", "")).lower()
            body = (item.get("value") or {}).get("query_node") or {}
            recursive = isinstance(body, dict) and body.get("type") == "RECURSIVE_CTE_NODE"
            _check(item.get("value"), seen | {name} if recursive else seen, rules)
            seen = seen | {name}
        tables = seen
        node = {k: v for k, v in node.items() if k != "cte_map"}
    if cls is not None and cls not in ALLOWED_CLASSES:
        raise QueryRefused(f"{str(cls).lower().replace('_', ' ')} expressions are not allowed in {rules.what}")
    if cls in ("FUNCTION", "WINDOW"):
        name = str(node.get("function_name", "")).lower()
        if node.get("schema") or node.get("catalog"):
            raise QueryRefused(f"function {node.get('catalog')}.{node.get('schema')}.{name} is not allowed")
        if not rules.may_call(name):
            raise QueryRefused(f"function {name}() is not allowed in {rules.what} — only side-effect-free scalar, "
                               "aggregate and window functions are")
    if cls is None and kind == "BASE_TABLE":
        if node.get("catalog_name") or node.get("schema_name"):
            raise QueryRefused(f"{node.get('catalog_name')}.{node.get('schema_name')}.{node.get('table_name')} "
                               "cannot be read here")
        if str(node.get("table_name", "")).lower() not in tables:
            raise QueryRefused(f"table {node.get('table_name')!r} cannot be read here")
        if node.get("at_clause"):
            raise QueryRefused("AT (...) is only for datasets named by address")
    elif cls is None and kind == "TABLE_FUNCTION":
        name = str((node.get("function") or {}).get("function_name", "")).lower()
        if name not in rules.table_functions:
            raise QueryRefused(f"table function {name}() is not allowed in {rules.what} — {rules.read_by}")
    elif cls is None and kind in DENIED_TABLE_REFS:
        raise QueryRefused(f"{str(kind).lower().replace('_', ' ')} is not allowed in {rules.what}")
    for value in node.values():
        _check(value, tables, rules)


def check_tree(sql: str, relations: set[str], rules: ReadRules) -> None:
    """sqlglot's reading of the text that will run (for engines without a parser of their own to ask): one
    read statement over `relations` and the CTEs in scope, calling nothing `rules` refuse."""
    import sqlglot

    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except Exception as exc:
        raise QueryRefused(f"{rules.what} does not parse: {str(exc).splitlines()[0][:300]}") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Select | exp.SetOperation | exp.Values):
        raise QueryRefused(f"{rules.what} must be one read query")
    tree = statements[0]
    readable = {r.lower() for r in relations}
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier):
            continue
        name = (table.this.name if isinstance(table.this, exp.Func) else table.this.sql()).lower()
        if name not in rules.table_functions:
            raise QueryRefused(f"table function {name}() is not allowed in {rules.what} — {rules.read_by}")
    for table in table_references(tree):
        if table.db or table.catalog or table.name.lower() not in readable:
            raise QueryRefused(f"table {table.sql('duckdb')!r} cannot be read here")
    denied = [name for name in denied_functions(tree, rules.may_call)]
    if denied:
        raise QueryRefused(f"function {denied[0]}() is not allowed in {rules.what}")
