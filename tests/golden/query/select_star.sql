SELECT * FROM "__tm_golden_0" AS "items"
