SELECT nric, COUNT(*) AS n FROM "__tm_golden_0" AS "items" GROUP BY nric ORDER BY n DESC
