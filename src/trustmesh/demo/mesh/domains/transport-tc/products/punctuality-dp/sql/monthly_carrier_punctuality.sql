SELECT
    make_date(f.year, f.month, 1) AS month,
    f.carrier,
    a.name AS carrier_name,
    count(*) AS flights,
    count(*) FILTER (WHERE f.dep_time IS NULL) AS cancelled_flights,
    avg(CASE WHEN f.arr_delay < 15 THEN 1.0 ELSE 0.0 END) FILTER (WHERE f.arr_delay IS NOT NULL)
        AS on_time_share,
    avg(f.dep_delay) AS mean_dep_delay,
    avg(f.arr_delay) AS mean_arr_delay
FROM bts."flights-dp".flights AS f
LEFT JOIN carriers."airlines-dp".airlines AS a ON a.carrier = f.carrier
GROUP BY make_date(f.year, f.month, 1), f.carrier, a.name
