SELECT nric FROM "__tm_golden_0" AS i WHERE EXISTS(SELECT 1 FROM "__tm_golden_2" AS d WHERE d.sold_on = i.sold_on) UNION ALL SELECT 'x' FROM "__tm_golden_1" AS "daily_sales"
