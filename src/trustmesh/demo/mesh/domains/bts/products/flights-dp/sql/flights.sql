SELECT
    CAST(row_number() OVER (
        ORDER BY year, month, day, sched_dep_time, carrier, flight, origin
    ) AS BIGINT) AS flight_id,
    year,
    month,
    day,
    dep_time,
    sched_dep_time,
    dep_delay,
    arr_time,
    sched_arr_time,
    arr_delay,
    carrier,
    flight,
    tailnum,
    origin,
    dest,
    air_time,
    distance,
    hour,
    minute,
    CAST(time_hour AS TIMESTAMP WITH TIME ZONE) AS time_hour
FROM raw_flights
