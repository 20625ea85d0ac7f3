WITH items AS (SELECT 1 AS x) SELECT i.nric, items.x FROM "__tm_golden_0" AS i, items
