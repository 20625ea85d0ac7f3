WITH flight_weather AS (
    SELECT
        f.origin,
        f.dest,
        f.dep_time IS NULL AS cancelled,
        f.dep_delay,
        f.arr_delay,
        coalesce(w.condition, 'unknown') AS weather_condition
    FROM bts."flights-dp".flights AS f
    LEFT JOIN noaa."weather-dp".weather AS w
        ON w.origin = f.origin AND w.time_hour = f.time_hour
)
SELECT
    fw.origin || '-' || fw.dest AS route,
    fw.origin,
    o.name AS origin_name,
    fw.dest,
    d.name AS dest_name,
    fw.weather_condition,
    count(*) AS flights,
    count(*) FILTER (WHERE fw.cancelled) AS cancelled_flights,
    avg(fw.dep_delay) AS mean_dep_delay,
    avg(fw.arr_delay) AS mean_arr_delay,
    avg(CASE WHEN fw.dep_delay >= 15 THEN 1.0 ELSE 0.0 END) FILTER (WHERE NOT fw.cancelled)
        AS delayed_departure_share
FROM flight_weather AS fw
LEFT JOIN faa."airports-dp".airports AS o ON o.faa = fw.origin
LEFT JOIN faa."airports-dp".airports AS d ON d.faa = fw.dest
GROUP BY fw.origin, o.name, fw.dest, d.name, fw.weather_condition
