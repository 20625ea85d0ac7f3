WITH recent AS (SELECT * FROM "__tm_golden_0" AS "items" WHERE sold_on >= CAST('2024-01-02' AS DATE)) SELECT nric, ROW_NUMBER() OVER (ORDER BY price DESC) AS rn FROM recent
