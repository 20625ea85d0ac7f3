-- one scan: 8 metrics for 8 rules
SELECT
  count(*) AS row_count,
  count(*) - count("value") AS m1,
  count(*) FILTER (WHERE "value" IS NULL OR CAST("value" AS VARCHAR) IN ('')) AS m2,
  count(*) FILTER (WHERE "value" IS NULL OR CAST("value" AS VARCHAR) IN ('', 'N/A')) AS m3,
  count(*) FILTER (WHERE "code" IS NOT NULL AND "code" NOT IN ('a', 'b', 'c')) AS m4,
  count(*) FILTER (WHERE "nric" IS NOT NULL AND NOT regexp_full_match(CAST("nric" AS VARCHAR), '^[STFGM][0-9]{7}[A-Z]$')) AS m5,
  count("dup") - count(DISTINCT "dup") AS m6,
  count(*) - count(DISTINCT ("code", "dup")) AS m7
FROM "cand__t";
-- business rule contract/late-dups
SELECT COUNT(*) FROM "cand__t" WHERE dup > 4;
