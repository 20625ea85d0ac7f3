SELECT MIN(nric), MD5(nric), LENGTH(nric) FROM "__tm_golden_0" AS "items" WHERE nric LIKE 'S123%' GROUP BY nric /* why */
