SELECT a.item_id, b.nric FROM "__tm_golden_0" AS a JOIN "__tm_golden_1" AS b ON a.item_id = b.item_id
