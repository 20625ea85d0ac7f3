-- one scan: 21 metrics for 22 rules
SELECT
  count(*) AS row_count,
  count(*) - count("flight_id") AS m1,
  count(*) - count("year") AS m2,
  count(*) - count("month") AS m3,
  count(*) - count("day") AS m4,
  count(*) - count("sched_dep_time") AS m5,
  count(*) - count("sched_arr_time") AS m6,
  count(*) - count("carrier") AS m7,
  count(*) - count("flight") AS m8,
  count(*) - count("origin") AS m9,
  count(*) - count("dest") AS m10,
  count(*) - count("distance") AS m11,
  count(*) - count("hour") AS m12,
  count(*) - count("minute") AS m13,
  count(*) - count("time_hour") AS m14,
  count("flight_id") - count(DISTINCT "flight_id") AS m15,
  count(*) FILTER (WHERE "month" IS NOT NULL AND "month" NOT IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)) AS m16,
  count(*) - count("dep_delay") AS m17,
  count(*) FILTER (WHERE "carrier" IS NOT NULL AND NOT regexp_full_match(CAST("carrier" AS VARCHAR), '^[A-Z0-9]{2}$')) AS m18,
  count(*) FILTER (WHERE "origin" IS NOT NULL AND NOT regexp_full_match(CAST("origin" AS VARCHAR), '^[A-Z0-9]{3}$')) AS m19,
  count(*) FILTER (WHERE "dest" IS NOT NULL AND NOT regexp_full_match(CAST("dest" AS VARCHAR), '^[A-Z0-9]{3}$')) AS m20
FROM "cand__flights";
-- business rule contract/plausible-speed
SELECT COUNT(*) FROM "cand__flights" WHERE air_time > 0 AND distance / air_time * 60 > 700;
